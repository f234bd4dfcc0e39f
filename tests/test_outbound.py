"""Chatwoot -> Discord through the real daemon and the fakes (signed webhooks, real sockets)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from diswoot.bridge.delivery import deliver_parts, describe, nonce_for
from diswoot.bridge.reply_layout import discord_id_from_identifier, is_inbox_template, reply_parts
from diswoot.chatwoot.models import InboxConfig
from diswoot.rest.errors import DiscordHTTPError
from diswoot.store import queries as q
from diswoot.testing.fake_chatwoot import default_working_hours
from diswoot.testing.harness import World, bridge_world

USER = "80351110224678912"
CEILING = 30


async def agent_conversation(world: World, discord_id: str = USER, **user: Any) -> int:
    """An agent starts a conversation with the Discord user's contact (no DM involved)."""
    world.discord.add_user(discord_id, "alice", **user)
    chatwoot = world.daemon.ctx.chatwoot
    contact = await chatwoot.create_contact(name="alice", identifier=f"discord:{discord_id}")
    assert contact.source_id is not None
    conversation = await chatwoot.create_conversation(
        contact_id=contact.id, source_id=contact.source_id
    )
    await world.chatwoot.wait_webhooks_delivered()
    return int(conversation["id"])


def texts(world: World, discord_id: str = USER) -> list[str]:
    """What the user sees in the DM: content, or the embeds as JSON."""
    return [m["content"] or json.dumps(m["embeds"]) for m in world.discord.dm_messages(discord_id)]


def patches(world: World, message_id: int) -> list[Any]:
    pattern = re.compile(rf"/conversations/\d+/messages/{message_id}$")
    return [
        r.json for r in world.chatwoot.requests if r.method == "PATCH" and pattern.search(r.path)
    ]


async def jobs(world: World, queue: str) -> list[Any]:
    return await world.daemon.ctx.store.call(q.list_jobs, ("pending", "done", "dead"), queue)


def assert_no_violations(world: World) -> None:
    assert world.discord.violations == []
    assert world.chatwoot.violations == []


async def test_agent_reply_reaches_the_dm_once_and_is_marked_delivered(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            reply = await world.chatwoot.agent_reply(cid, "How can I help? @everyone")
            await world.wait_delivered(reply["id"])
            assert texts(world) == ["How can I help? @everyone"]
            sends = [
                r
                for r in world.discord.requests
                if r.method == "POST" and r.path.endswith("/messages")
            ]
            assert sends[0].json["allowed_mentions"] == {"parse": []}
            assert sends[0].json["enforce_nonce"] is True
            links = await world.daemon.ctx.store.call(q.links_for_chatwoot, reply["id"])
            assert [(link.direction, link.conversation_id) for link in links] == [("out", cid)]
            assert patches(world, reply["id"]) == [{"status": "delivered"}]
            metrics = world.daemon.ctx.metrics.render().decode()
            assert "diswoot_replies_delivered_total 1.0" in metrics
            assert_no_violations(world)


async def test_the_echo_of_a_delivered_reply_receipt_is_recognised_from_memory(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            reply = await world.chatwoot.agent_reply(cid, "hello")
            await world.wait_delivered(reply["id"])
            is_echo, mid = world.daemon.outbound.intake.is_receipt_echo, reply["id"]
            echo = {"event": "message_updated", "id": mid, "content_attributes": {}}
            assert is_echo(echo)
            assert is_echo({**echo, "content_attributes": None})
            # a deletion, a body Quart must judge, another message or event: not an echo
            assert not is_echo({**echo, "content_attributes": {"deleted": True}})
            assert not is_echo({**echo, "content_attributes": "x"})
            assert not is_echo({**echo, "id": mid + 1})
            assert not is_echo({**echo, "id": True})
            assert not is_echo({**echo, "event": "message_created"})
            # the agent deletes it: the deletion still reaches the bridge (the DM goes)
            await world.chatwoot.delete_message(cid, mid)
            await world.wait_for(lambda: not world.discord.dm_messages(USER))


async def test_reply_to_a_user_who_dmed_goes_to_their_dm(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            world.discord.add_user(USER, "alice")
            world.discord.user_sends(USER, "my order is late")
            conversations = await world.wait_for(
                lambda: world.chatwoot.conversation_for(f"discord:{USER}")
            )
            cid = conversations[0]["id"]
            await world.wait_for(lambda: world.chatwoot.messages_in(cid))
            await world.chatwoot.agent_reply(cid, "Looking into it")
            await world.wait_for(lambda: "Looking into it" in texts(world))
            assert texts(world).count("Looking into it") == 1
            assert_no_violations(world)


async def test_long_reply_arrives_as_ordered_chunks(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 160 for i in range(6)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 4500
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            await world.chatwoot.agent_reply(cid, text)
            await world.wait_for(lambda: len(texts(world)) >= 3)
            chunks = texts(world)
            assert all(len(c) <= 2000 for c in chunks)
            assert " ".join(chunks).split() == text.split()  # every word, in order, once
            assert all(c.startswith("Paragraph") for c in chunks)  # cut at paragraph breaks
            assert_no_violations(world)


CLOSED_ALL_WEEK = [
    {
        **day,
        "closed_all_day": True,
        "open_hour": None,
        "close_hour": None,
        "open_minutes": None,
        "close_minutes": None,
    }
    for day in default_working_hours()
]
GREETING_INBOX = {"greeting_enabled": True, "greeting_message": "Welcome to Acme support!\n"}
OOO_INBOX = {
    "working_hours_enabled": True,
    "out_of_office_message": "We are closed right now.",
    "working_hours": CLOSED_ALL_WEEK,
}


@pytest.mark.parametrize("inbox", [GREETING_INBOX, OOO_INBOX], ids=["greeting", "out-of-office"])
async def test_suppressed_messages_never_reach_discord(
    tmp_path: Path, inbox: dict[str, Any]
) -> None:
    inbox = {**inbox, "csat_survey_enabled": True}
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, chatwoot_options={"inbox": inbox}) as world:
            cid = await agent_conversation(world)
            chatwoot = world.daemon.ctx.chatwoot
            # the contact writes (an incoming echo), which fires Chatwoot's template message
            await chatwoot.create_message(cid, content="hello?", message_type="incoming")
            await world.chatwoot.agent_reply(cid, "internal: VIP customer", private=True)
            await world.chatwoot.wait_webhooks_delivered()
            kinds = [(m["message_type"], m["private"]) for m in world.chatwoot.messages_in(cid)]
            assert {(0, False), (1, True), (3, False)} <= set(kinds)
            await world.chatwoot.agent_reply(cid, "A real answer")
            await world.wait_for(lambda: texts(world))
            assert texts(world) == ["A real answer"]
            # resolving posts Chatwoot's input_csat survey: the bot sends its own button instead
            await world.chatwoot.set_status(cid, "resolved")
            await world.wait_for(lambda: len(texts(world)) == 3)
            await world.chatwoot.wait_webhooks_delivered()
            assert any(m["content_type"] == "input_csat" for m in world.chatwoot.messages.values())
            assert not any("/survey/responses/" in t for t in texts(world))
            assert {d.status for d in world.chatwoot.webhook_deliveries} == {200}
            assert_no_violations(world)


async def test_account_and_inbox_webhooks_deliver_once(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            world.chatwoot.webhook_urls = world.chatwoot.webhook_urls * 2
            await world.chatwoot.agent_reply(cid, "only once")
            await world.chatwoot.set_status(cid, "resolved")
            await world.wait_for(lambda: len(texts(world)) == 2)
            await world.chatwoot.agent_reply(cid, "a marker")
            await world.wait_for(lambda: "a marker" in texts(world))
            assert texts(world)[0] == "only once"
            assert len(texts(world)) == 3
            bodies = [json.loads(d.body) for d in world.chatwoot.webhook_deliveries]
            assert sum(b["event"] == "conversation_status_changed" for b in bodies) == 2
            assert_no_violations(world)


async def test_status_transitions_send_their_notices(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cfg = world.cfg
            cid = await agent_conversation(world)
            steps = [
                ("pending", cfg.pending_message),
                ("open", None),  # picked up
                ("snoozed", cfg.snoozed_message),
                ("open", None),  # unsnoozed
                ("resolved", cfg.resolved_message),
                ("open", cfg.reopened_message),  # reopened
            ]
            for count, (status, text) in enumerate(steps, start=1):
                await world.chatwoot.set_status(cid, status)
                await world.wait_for(lambda n=count: len(texts(world)) == n)
                if text is not None:
                    assert text in texts(world)[-1]
            assert not any(m["components"] for m in world.discord.dm_messages(USER))
            conv = await world.daemon.ctx.store.call(q.get_conversation, cid)
            assert conv is not None and conv.status == "open"
            assert_no_violations(world)


async def test_blank_status_messages_disable_those_notices(tmp_path: Path) -> None:
    blank = {"snoozed_message": "", "pending_message": " ", "resolved_message": "",
             "reopened_message": "", "csat_enabled": False}
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, **blank) as world:
            cid = await agent_conversation(world)
            for status in ("snoozed", "pending", "resolved", "open"):
                await world.chatwoot.set_status(cid, status)
            await world.chatwoot.agent_reply(cid, "marker")
            await world.wait_for(lambda: texts(world))
            assert texts(world) == ["marker"]


async def test_resolved_by_the_user_skips_the_notice_but_keeps_the_survey(tmp_path: Path) -> None:
    inbox = {"csat_survey_enabled": True}
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, chatwoot_options={"inbox": inbox}) as world:
            cid = await agent_conversation(world)
            ctx = world.daemon.ctx
            await ctx.store.call(q.set_closed_by_user, cid, ctx.clock())
            await ctx.chatwoot.toggle_status(cid, "resolved")
            await ctx.store.call(q.upsert_conversation, cid, USER, ctx.clock(), status="resolved")
            await world.wait_for(lambda: texts(world))
            await world.chatwoot.wait_webhooks_delivered()
            await world.chatwoot.agent_reply(cid, "marker")
            await world.wait_for(lambda: "marker" in texts(world))
            messages = world.discord.dm_messages(USER)
            assert len(messages) == 2
            assert messages[0]["components"][0]["components"][0]["custom_id"] == f"csat:{cid}"
            assert world.cfg.resolved_message not in json.dumps(messages)


async def test_csat_prompt_needs_both_switches(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(
            tmp_path, chatwoot_options={"inbox": {"csat_survey_enabled": True}}, csat_enabled=False
        ) as world:
            cid = await agent_conversation(world)
            await world.chatwoot.set_status(cid, "resolved")
            await world.wait_for(lambda: texts(world))
            await world.chatwoot.agent_reply(cid, "marker")
            await world.wait_for(lambda: "marker" in texts(world))
            assert not any(m["components"] for m in world.discord.dm_messages(USER))
            assert len(texts(world)) == 2


async def test_dms_closed_marks_the_reply_failed_exactly_once(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world, accepts_dms=False)
            reply = await world.chatwoot.agent_reply(cid, "are you there?")
            message = world.chatwoot.messages[reply["id"]]
            await world.wait_for(lambda: message["status"] == "failed")
            error = "Discord: Cannot send messages to this user (50007)"
            assert message["content_attributes"]["external_error"] == error
            await world.restart()
            second = await world.chatwoot.agent_reply(cid, "second")
            await world.wait_for(lambda: patches(world, second["id"]))
            assert patches(world, reply["id"]) == [{"status": "failed", "external_error": error}]
            assert not [m for m in world.chatwoot.messages_in(cid) if m["private"]]
            assert [j.state for j in await jobs(world, "outbound") if j.kind == "reply"] == [
                "done"
            ] * 2
            assert world.discord.dm_messages(USER) == []
            assert_no_violations(world)


async def test_failed_mark_falls_back_to_one_private_note(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world, accepts_dms=False)
            world.chatwoot.fail_next("PATCH", r"/messages/\d+$", 404)
            await world.chatwoot.agent_reply(cid, "are you there?")
            notes = lambda: [m for m in world.chatwoot.messages_in(cid) if m["private"]]  # noqa: E731
            await world.wait_for(notes)
            await world.chatwoot.wait_webhooks_delivered()
            assert len(notes()) == 1
            assert "Cannot send messages to this user (50007)" in notes()[0]["content"]
            receipts = await jobs(world, "receipts")
            assert [j.state for j in receipts] == ["done"]
            assert_no_violations(world)


async def test_crash_after_the_webhook_was_acknowledged_still_delivers_once(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            # Discord holds the first send back (a long 429), so the crash comes before delivery
            world.discord.fail_next("POST", r"/channels/\d+/messages$", 429, retry_after=60)
            await world.chatwoot.agent_reply(cid, "stored before the crash")
            assert world.chatwoot.webhook_deliveries[-1].status == 200
            await world.wait_for(lambda: world.discord.responses_429 == 1)
            await world.crash()
            assert texts(world) == []
            await world.start()
            await world.wait_for(lambda: texts(world))
            await world.chatwoot.agent_reply(cid, "after")
            await world.wait_for(lambda: "after" in texts(world))
            assert texts(world) == ["stored before the crash", "after"]


async def test_a_send_lost_between_chunks_is_not_repeated(tmp_path: Path) -> None:
    """Crash after Discord created part 0 but before the progress was saved: the nonce wins."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            world.discord.add_user(USER, "alice")
            ctx = world.daemon.ctx
            parts = [{"content": "part one"}, {"content": "part two"}]
            job = await ctx.store.call(
                q.add_job, "test", "k", "lane", "reply", {"parts": parts}, ctx.clock()
            )
            assert job is not None
            channel = await ctx.discord.create_dm(USER)
            first = await ctx.discord.send_message(
                channel, content="part one", nonce=nonce_for(job.id, 0)
            )
            assert await deliver_parts(ctx, job, USER) is None
            assert texts(world) == ["part one", "part two"]
            stored = await ctx.store.call(q.list_jobs, ("pending",), "test")
            assert stored[0].payload["sent"][0] == first["id"]
            assert len(stored[0].payload["sent"]) == 2
            assert_no_violations(world)


def test_routing_identifier_is_the_discord_prefix_and_a_snowflake() -> None:
    assert discord_id_from_identifier(f"discord:{USER}") == USER
    for other in (USER, f"discord:{USER}x", "discord:", "slack:U123", None, ""):
        assert discord_id_from_identifier(other) is None


def test_inbox_templates_match_after_chatwoots_normalisation() -> None:
    inbox = InboxConfig.from_api(
        {
            "id": 7,
            "greeting_message": "Hi there!\\\nWe reply fast.  \n",
            "out_of_office_message": "Closed",
        }
    )
    assert is_inbox_template("Hi there!\nWe reply fast.", inbox)
    assert is_inbox_template(" Closed ", inbox)
    assert not is_inbox_template("Closed today", inbox)
    assert not is_inbox_template("Closed", None)


def test_reply_parts_quote_the_users_message_and_link_what_has_no_file() -> None:
    location = "https://maps.example/?q=52.5,13.4"
    parts = reply_parts(
        {
            "content": "We are here",
            "attachments": [
                {"data_url": location, "file_type": "location", "fallback_title": "Our shop"}
            ],
            "reply_to": "1250000000000000001",
        },
        upload_limit=10 * 1024 * 1024,
    )
    assert parts == [
        {
            "content": f"We are here\n📎 Our shop: {location}",
            "message_reference": {"message_id": "1250000000000000001", "fail_if_not_exists": False},
        }
    ]
    assert reply_parts({"content": "   ", "attachments": []}, upload_limit=1) == []


def test_discord_errors_read_well_for_agents() -> None:
    error = DiscordHTTPError(403, 50007, "Cannot send messages to this user", "POST /channels")
    assert describe(error) == "Discord: Cannot send messages to this user (50007)"
    assert nonce_for(10**12, 99) == "dw1000000000000.99" and len(nonce_for(10**15, 999)) <= 25


async def test_a_status_webhook_older_than_the_one_applied_changes_nothing(
    tmp_path: Path,
) -> None:
    """Chatwoot runs each webhook as its own job, in no particular order: the agent resolves
    and reopens, and the two webhooks arrive reversed.  The older "resolved" must not tell the
    user the ticket is resolved, nor leave it resolved in the store."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, csat_enabled=False) as world:
            cid = await agent_conversation(world)
            fake = world.chatwoot
            await fake.set_status(cid, "resolved", deliver=False)
            await fake.set_status(cid, "open", deliver=False)  # a later updated_at, always
            lost = [p for p in fake.lost_webhooks if p["event"] == "conversation_status_changed"]
            assert [p["status"] for p in lost] == ["resolved", "open"]
            assert lost[0]["updated_at"] < lost[1]["updated_at"]
            await fake.deliver_late(list(reversed(lost)))
            await fake.agent_reply(cid, "marker")
            await world.wait_for(lambda: "marker" in texts(world))
            assert texts(world) == ["marker"]
            conv = await world.daemon.ctx.store.conversation(cid)
            assert conv is not None and conv.status == "open"
            assert_no_violations(world)
