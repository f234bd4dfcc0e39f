"""Interactions over both routes: the HTTP endpoint (Ed25519), deferral, CSAT, odd cases.

The tests make their own Ed25519 key pair: the daemon gets the public key as
DISCORD_PUBLIC_KEY, FakeDiscord signs with the private key (``post_interaction_http``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import nacl.signing
import trio
from test_commands import (
    USER,
    answer_text,
    assert_clean,
    final_responses,
    metric,
    private_notes,
    seed_ticket,
    world_with_user,
)

from diswoot.bridge import embeds
from diswoot.bridge.commands import FAILED
from diswoot.bridge.interactions import DM_ONLY, STALE_COMPONENT, TRY_AGAIN
from diswoot.context import Context
from diswoot.store import queries as q
from diswoot.testing.harness import World

CEILING = 20


def signed_world(tmp_path: Path, key: nacl.signing.SigningKey, **overrides: Any) -> Any:
    return world_with_user(
        tmp_path,
        discord_public_key=key.verify_key.encode().hex(),
        discord_options={"public_key_signer": key},
        **overrides,
    )


def endpoint(world: World) -> str:
    return f"{world.base_url}/interactions"


async def csat_prompt_message(world: World, conversation_id: int) -> dict[str, Any]:
    """The "Rate us" prompt in the user's DM, as the outbound bridge would have sent it."""
    ctx: Context = world.daemon.ctx
    channel_id = await ctx.discord.create_dm(USER)
    payload = embeds.csat_prompt(ctx.cfg, conversation_id)
    return await ctx.discord.send_message(
        channel_id, embeds=payload["embeds"], components=payload["components"]
    )


# ----------------------------------------------------------------------------- signatures
async def test_http_endpoint_checks_signatures(tmp_path: Path) -> None:
    key, stranger = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    with trio.fail_after(CEILING):
        async with signed_world(tmp_path, key) as world:
            cid = await seed_ticket(world)
            fake, url = world.discord, endpoint(world)

            # bad, foreign and missing signatures: 401, and the command never runs
            close = fake.slash_command(USER, "close", via_gateway=False)
            forged = await fake.post_interaction_http(url, close, bad_signature=True)
            assert forged.status_code == 401
            foreign = await fake.post_interaction_http(url, close, signer=stranger)
            assert foreign.status_code == 401
            body = json.dumps(close).encode()
            response = await world.http.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 401
            assert world.chatwoot.conversations[cid]["status"] == "open"
            assert private_notes(world, cid) == []
            value = world.daemon.ctx.metrics.registry.get_sample_value(
                "diswoot_interactions_total", {"kind": "bad_signature"}
            )
            assert value == 3

            # PING -> PONG
            ping = {"id": "1300000000000000099", "application_id": fake.application_id,
                    "type": 1, "token": "ping-token", "version": 1}
            response = await fake.post_interaction_http(url, ping)
            assert response.status_code == 200
            assert response.json() == {"type": 1}
            assert response.headers["content-type"].startswith("application/json")

            # a valid command: the answer is the HTTP 200 body, ephemeral
            response = await fake.post_interaction_http(url, close)
            assert response.status_code == 200
            answer = response.json()
            assert answer["type"] == 4 and answer["data"]["flags"] == 64
            assert "Ticket closed" in answer_text(answer["data"])
            assert world.chatwoot.conversations[cid]["status"] == "resolved"
            assert metric(world, "slash_close") == 1

            # signed an hour ago (a host clock that is off): authentic, so answered, as
            # Discord's reference library does; the same request again is answered with nothing
            reopen = fake.slash_command(USER, "reopen", via_gateway=False)
            body = json.dumps(reopen).encode()
            stale = str(int(time.time()) - 3600)
            signature = key.sign(stale.encode() + body).signature.hex()
            headers = {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": stale}
            response = await world.http.post(url, content=body, headers=headers)
            assert response.status_code == 200
            assert "Ticket reopened" in answer_text(response.json()["data"])
            replayed = await world.http.post(url, content=body, headers=headers)
            assert replayed.status_code == 409
            assert metric(world, "slash_reopen") == 1 and metric(world, "repeated") == 1
            assert_clean(world)


async def test_http_commands_each(tmp_path: Path) -> None:
    key = nacl.signing.SigningKey.generate()
    with trio.fail_after(CEILING):
        async with signed_world(tmp_path, key) as world:
            fake, url = world.discord, endpoint(world)

            async def run(name: str, **options: Any) -> dict[str, Any]:
                interaction = fake.slash_command(USER, name, options or None, via_gateway=False)
                response = await fake.post_interaction_http(url, interaction)
                assert response.status_code == 200
                answer = response.json()
                assert answer["type"] == 4 and answer["data"]["flags"] == 64
                data: dict[str, Any] = answer["data"]
                return data

            assert "No ticket yet" in answer_text(await run("status"))
            cid = await seed_ticket(world, "resolved")
            assert "Resolved" in answer_text(await run("status"))
            assert "Ticket reopened" in answer_text(await run("reopen"))
            assert "Already open" in answer_text(await run("reopen"))
            assert "Ticket closed" in answer_text(await run("close", reason="thanks"))
            assert "Reason: thanks" in private_notes(world, cid)[-1]
            assert "`/help`" in answer_text(await run("help"))
            assert_clean(world)


# ----------------------------------------------------------------------------- deferral
async def test_slow_chatwoot_defers_then_edits_over_the_gateway(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world, "snoozed")
            world.daemon.interactions.defer_after = 0.05
            world.chatwoot.latency = 0.4
            interaction = world.discord.slash_command(USER, "status")
            deferral, edit = await final_responses(world, interaction)
            assert deferral == {"type": 5, "data": {"flags": 64}}
            assert "flags" not in edit["edit_original"]
            shown = answer_text(edit["edit_original"])
            assert "Snoozed" in shown and f"#{cid}" in shown
            # the ephemeral "thinking..." message became the answer
            (message,) = [m for m in world.discord.dm_messages(USER) if "Snoozed" in answer_text(m)]
            assert message["flags"] & 64
            assert metric(world, "deferred") == 1
            assert_clean(world)


async def test_fast_answer_is_not_deferred(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            await seed_ticket(world)
            world.chatwoot.latency = 0.05  # well within DEFER_AFTER
            responses = await final_responses(world, world.discord.slash_command(USER, "status"))
            assert [r["type"] for r in responses] == [4]
            assert metric(world, "deferred") == 0


async def test_tokens_of_any_alphabet_are_answered_and_repeats_are_not(tmp_path: Path) -> None:
    """Discord's OpenAPI allows any string as a token: the padding of base64 ("=") is
    percent-encoded into the callback URL.  A RESUME's replay of the same interaction id is
    answered once."""
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            await seed_ticket(world)
            fake = world.discord
            interaction = fake.slash_command(USER, "status", via_gateway=False)
            interaction["token"] = "aW50ZXJhY3Rpb246MTIzOnNlY3JldA=="  # the fake keeps this dict
            fake.gateway.dispatch("INTERACTION_CREATE", interaction)
            responses = await final_responses(world, interaction)
            assert [r["type"] for r in responses] == [4]
            fake.gateway.dispatch("INTERACTION_CREATE", interaction)
            await world.wait_for(lambda: metric(world, "repeated") == 1)
            assert len(fake.interaction_responses[interaction["id"]]) == 1
            assert metric(world, "slash_status") == 1
            assert_clean(world)


async def test_slow_chatwoot_defers_over_http(tmp_path: Path) -> None:
    key = nacl.signing.SigningKey.generate()
    with trio.fail_after(CEILING):
        async with signed_world(tmp_path, key) as world:
            cid = await seed_ticket(world)
            world.daemon.interactions.defer_after = 0.05
            world.chatwoot.latency = 0.4
            fake = world.discord
            interaction = fake.slash_command(USER, "close", via_gateway=False)
            started = trio.current_time()
            response = await fake.post_interaction_http(endpoint(world), interaction)
            assert trio.current_time() - started < 0.4  # answered long before Chatwoot
            assert response.status_code == 202 and response.content == b""
            deferral, edit = await final_responses(world, interaction)
            assert deferral == {"type": 5, "data": {"flags": 64}}
            assert "Ticket closed" in answer_text(edit["edit_original"])
            assert world.chatwoot.conversations[cid]["status"] == "resolved"
            assert_clean(world)


# ----------------------------------------------------------------------------- CSAT + others
async def test_csat_button_and_modal_over_http(tmp_path: Path) -> None:
    key = nacl.signing.SigningKey.generate()
    with trio.fail_after(CEILING):
        async with signed_world(tmp_path, key) as world:
            cid = await seed_ticket(world, "resolved")
            prompt = await csat_prompt_message(world, cid)
            fake, url = world.discord, endpoint(world)

            click = fake.click_button(USER, prompt, f"csat:{cid}", via_gateway=False)
            response = await fake.post_interaction_http(url, click)
            assert response.status_code == 200
            modal = response.json()
            assert modal["type"] == 9
            assert modal["data"]["custom_id"] == f"csat_modal:{cid}"

            submit = fake.submit_modal(
                USER, f"csat_modal:{cid}", {"rating": "5", "comment": "quick and kind"},
                prompt, via_gateway=False,
            )
            response = await fake.post_interaction_http(url, submit)
            assert response.status_code == 200
            answer = response.json()
            assert answer["type"] == 4 and answer["data"]["flags"] == 64
            assert FAILED not in answer_text(answer["data"])
            saved = await world.daemon.ctx.store.call(q.get_csat, cid)
            assert saved is not None and saved.rating == 5 and saved.comment == "quick and kind"
            assert metric(world, "csat_button") == 1 and metric(world, "csat_modal") == 1
            assert_clean(world)


async def test_late_component_answers_follow_up(tmp_path: Path) -> None:
    """A component answer that misses the deadline: deferred update, then a follow-up."""
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world, "resolved")
            prompt = await csat_prompt_message(world, cid)
            world.daemon.interactions.defer_after = 0  # everything is "late"

            click = world.discord.click_button(USER, prompt, f"csat:{cid}")
            deferral, followup = await final_responses(world, click)
            assert deferral == {"type": 6}
            assert TRY_AGAIN in answer_text(followup["followup"])  # a modal cannot follow
            assert followup["followup"]["flags"] == 64

            submit = world.discord.submit_modal(USER, f"csat_modal:{cid}", {"rating": "4"}, prompt)
            deferral, followup = await final_responses(world, submit)
            assert deferral == {"type": 6}
            assert followup["followup"]["flags"] == 64
            assert (await world.daemon.ctx.store.call(q.get_csat, cid)).rating == 4
            assert_clean(world)


async def test_stale_components_and_guild_use(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            fake = world.discord
            message = {"id": "1300000000000000050", "channel_id": "1"}
            (response,) = await final_responses(
                world, fake.click_button(USER, message, "close_ticket:42")
            )
            assert response["data"]["flags"] == 64
            assert STALE_COMPONENT in answer_text(response["data"])

            interaction = fake.slash_command(USER, "status", via_gateway=False)
            interaction["context"] = 0  # run in a server (an old registration)
            interaction["member"] = {"user": interaction.pop("user")}
            fake.gateway.dispatch("INTERACTION_CREATE", interaction)
            (response,) = await final_responses(world, interaction)
            assert DM_ONLY in answer_text(response["data"])
            assert response["data"]["flags"] == 64
            assert metric(world, "unknown") == 1 and metric(world, "outside_dm") == 1

            # an answer Discord refuses (too late: 10062) is logged; the daemon carries on
            fake.fail_next("POST", r"/callback$", 404, code=10062)
            lost = fake.slash_command(USER, "help")
            await world.wait_for(
                lambda: any(r.status == 404 and lost["id"] in r.path for r in fake.requests)
            )
            (response,) = await final_responses(world, fake.slash_command(USER, "help"))
            assert "`/help`" in answer_text(response["data"])
            assert lost["id"] not in fake.interaction_responses
            assert_clean(world)
