"""User commands in both forms (``/status`` and ``!status``...) against the fakes.

Each test runs the real daemon (``bridge_world``) against FakeDiscord and FakeChatwoot: slash
commands arrive as INTERACTION_CREATE on the fake gateway, text commands as DMs.  A ticket is
seeded directly (contact + conversation created through the daemon's own Chatwoot client, the
mapping stored in its database) so each command is tested on its own.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from diswoot.bridge.commands import (
    COMMAND_DEFINITIONS,
    NO_TICKET,
    REASON_MAX_LENGTH,
    TICKET_GONE,
    UNREACHABLE,
    CommandCall,
    command_from_interaction,
    parse_text_command,
)
from diswoot.store import queries as q
from diswoot.testing.harness import World, bridge_world
from diswoot.testing.openapi import SpecValidator

USER = "80351110224678912"
CEILING = 20


# ----------------------------------------------------------------------------- helpers
@asynccontextmanager
async def world_with_user(tmp_path: Path, **overrides: Any) -> AsyncIterator[World]:
    """A running daemon whose gateway session is up, and a Discord user "alice"."""
    async with bridge_world(tmp_path, **overrides) as world:
        try:
            world.discord.add_user(USER, "alice", global_name="Alice")
            await world.wait_for(lambda: world.daemon.ctx.gateway.state == "ready")
            yield world
        finally:
            await world.crash()  # graceful shutdown is not what these tests are about


async def seed_ticket(world: World, status: str = "open", *, user: str = USER) -> int:
    """A contact and a conversation in Chatwoot, mapped to ``user`` in the daemon's store."""
    ctx = world.daemon.ctx
    contact = await ctx.chatwoot.create_contact(name="Alice", identifier=f"discord:{user}")
    source_id = contact.source_id or await ctx.chatwoot.create_contact_inbox(contact.id)
    data = await ctx.chatwoot.create_conversation(
        contact_id=contact.id, source_id=source_id, status="open"
    )
    conversation_id = int(data["id"])
    if status != "open":
        await world.chatwoot.set_status(conversation_id, status, deliver=False)
    # let the daemon see the creation webhook first, so it cannot overwrite the seeded status
    await world.chatwoot.wait_webhooks_delivered()
    await world.wait_for(lambda: world.daemon.outbound.queue.depth == 0)
    now = time.time()
    await ctx.store.call(q.upsert_user, user, now)
    await ctx.store.call(q.set_user_contact, user, contact.id, source_id, now)
    await ctx.store.call(q.set_user_conversation, user, conversation_id, now)
    await ctx.store.call(q.upsert_conversation, conversation_id, user, now, status=status)
    return conversation_id


async def slash(world: World, name: str, user: str = USER, **options: Any) -> list[dict[str, Any]]:
    """Run ``/name`` over the gateway; the recorded responses once the answer is final."""
    interaction = world.discord.slash_command(user, name, options or None)
    return await final_responses(world, interaction)


async def final_responses(world: World, interaction: dict[str, Any]) -> list[dict[str, Any]]:
    def answered() -> list[dict[str, Any]] | None:
        responses = world.discord.interaction_responses.get(interaction["id"], [])
        if responses and responses[-1].get("type") not in (5, 6):
            return responses
        return None

    result: list[dict[str, Any]] = await world.wait_for(answered)
    return result


async def text(world: World, content: str, user: str = USER) -> dict[str, Any]:
    """Send ``content`` as a DM; the bot's reply to it."""
    sent = world.discord.user_sends(user, content)

    def reply() -> dict[str, Any] | None:
        return next(
            (
                m
                for m in world.discord.dm_messages(user)
                if (m.get("message_reference") or {}).get("message_id") == sent["id"]
            ),
            None,
        )

    result: dict[str, Any] = await world.wait_for(reply)
    return result


def answer_text(message_data: dict[str, Any]) -> str:
    """Titles, descriptions and fields of every embed, as one string."""
    parts: list[str] = []
    for embed in message_data.get("embeds", []):
        parts += [embed.get("title", ""), embed.get("description", "")]
        parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields", [])]
    return "\n".join(parts)


def incoming_contents(world: World, conversation_id: int) -> list[str]:
    return [
        m["content"]
        for m in world.chatwoot.messages_in(conversation_id)
        if m["message_type"] == 0
    ]


def private_notes(world: World, conversation_id: int) -> list[str]:
    return [m["content"] for m in world.chatwoot.messages_in(conversation_id) if m["private"]]


def metric(world: World, kind: str) -> float:
    value = world.daemon.ctx.metrics.registry.get_sample_value(
        "diswoot_interactions_total", {"kind": kind}
    )
    return value or 0.0


def assert_clean(world: World) -> None:
    """No request broke the API specs, and no handler crashed."""
    assert world.discord.violations == []
    assert world.chatwoot.violations == []
    assert metric(world, "failed") == 0


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("!status", CommandCall("status", USER, None, "!")),
        ("!STATUS", CommandCall("status", USER, None, "!")),
        ("  !Help  ", CommandCall("help", USER, None, "!")),
        ("! reopen", CommandCall("reopen", USER, None, "!")),
        ("!close", CommandCall("close", USER, None, "!")),
        ("!close  took too long\nthanks", CommandCall("close", USER, "took too long\nthanks", "!")),
        ("!status extra words", CommandCall("status", USER, None, "!")),
        ("!closed", None),
        ("!hello", None),
        ("status", None),
        ("please !status", None),
        ("!", None),
        ("", None),
    ],
)
def test_parse_text_command(content: str, expected: CommandCall | None) -> None:
    assert parse_text_command(content, USER) == expected


def test_text_reason_is_capped() -> None:
    call = parse_text_command("!close " + "x" * 2000, USER)
    assert call is not None and call.reason == "x" * REASON_MAX_LENGTH


def test_command_from_interaction() -> None:
    def interaction(name: str, **options: Any) -> dict[str, Any]:
        data = {"name": name, "type": 1}
        if options:
            data["options"] = [{"name": k, "type": 3, "value": v} for k, v in options.items()]
        return {"type": 2, "data": data}

    assert command_from_interaction(interaction("close", reason=" late "), USER) == CommandCall(
        "close", USER, "late", "/"
    )
    assert command_from_interaction(interaction("close", reason="   "), USER) == CommandCall(
        "close", USER, None, "/"
    )
    assert command_from_interaction(interaction("status"), USER) == CommandCall("status", USER)
    assert command_from_interaction(interaction("ban"), USER) is None


def test_definitions_validate_against_discord_openapi() -> None:
    spec = SpecValidator.load("discord")
    path = "/applications/1200000000000000000/commands"
    assert spec.check_request("PUT", path, json_body=COMMAND_DEFINITIONS) == []
    names = [c["name"] for c in COMMAND_DEFINITIONS]
    assert names == ["status", "close", "reopen", "help"]
    for command in COMMAND_DEFINITIONS:
        assert command["type"] == 1
        assert command["contexts"] == [1]  # the bot's DM only
        assert command["integration_types"] == [0]
        assert 1 <= len(command["description"]) <= 100
    (reason,) = COMMAND_DEFINITIONS[1]["options"]
    assert reason == {
        "type": 3,
        "name": "reason",
        "description": reason["description"],
        "required": False,
        "max_length": REASON_MAX_LENGTH,
    }


# ----------------------------------------------------------------------------- /status
async def test_status_both_forms(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world, "pending")
            last_activity = world.chatwoot.conversations[cid]["last_activity_at"]

            (response,) = await slash(world, "status")
            assert response["type"] == 4
            assert response["data"]["flags"] == 64  # ephemeral
            shown = answer_text(response["data"])
            assert "🟡 Pending" in shown
            assert f"#{cid}" in shown
            assert f"<t:{last_activity}:R>" in shown

            reply = await text(world, "!status")
            assert answer_text(reply) == shown
            assert "flags" not in reply or not reply["flags"] & 64
            assert incoming_contents(world, cid) == []  # never forwarded
            assert metric(world, "slash_status") == 1
            assert metric(world, "text_status") == 1
            assert_clean(world)


async def test_status_without_ticket(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            (response,) = await slash(world, "status")
            assert NO_TICKET in answer_text(response["data"])
            assert response["data"]["flags"] == 64
            reply = await text(world, "!status")
            assert NO_TICKET in answer_text(reply)
            assert world.chatwoot.contacts == {}  # nothing created
            assert_clean(world)


async def test_status_of_a_deleted_ticket(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world)
            del world.chatwoot.conversations[cid]  # an agent deleted it
            (response,) = await slash(world, "status")
            assert TICKET_GONE in answer_text(response["data"])
            user = await world.daemon.ctx.store.call(q.get_user, USER)
            assert user.conversation_id is None  # the next DM starts a new ticket
            reply = await text(world, "!status")
            assert NO_TICKET in answer_text(reply)
            assert_clean(world)


async def test_status_while_chatwoot_is_down_shows_last_known(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world, "snoozed")
            world.chatwoot.down = True
            (response,) = await slash(world, "status")
            shown = answer_text(response["data"])
            assert UNREACHABLE in shown
            assert "Last known status" in shown and f"#{cid}" in shown and "Snoozed" in shown
            reply = await text(world, "!status")
            assert UNREACHABLE in answer_text(reply)
            assert_clean(world)


# ----------------------------------------------------------------------------- /close
@pytest.mark.parametrize("form", ["slash", "text"])
async def test_close_with_reason(tmp_path: Path, form: str) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world)
            if form == "slash":
                (response,) = await slash(world, "close", reason="solved it myself")
                assert response["data"]["flags"] == 64
                shown = answer_text(response["data"])
            else:
                shown = answer_text(await text(world, "!close solved it myself"))
            assert "Ticket closed" in shown and f"#{cid}" in shown
            assert world.chatwoot.conversations[cid]["status"] == "resolved"
            (note,) = private_notes(world, cid)
            assert "closed this ticket from Discord" in note
            assert "Reason: solved it myself" in note
            assert incoming_contents(world, cid) == []

            # the resolved webhook that follows must not send a second notice
            await world.chatwoot.wait_webhooks_delivered()
            outbound = world.daemon.outbound
            await world.wait_for(lambda: outbound.queue.depth == 0)
            titles = [e.get("title") for m in world.discord.dm_messages(USER)
                      for e in m.get("embeds", [])]
            assert "Ticket resolved" not in titles
            assert_clean(world)


async def test_close_without_reason_and_when_already_closed(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world)
            (response,) = await slash(world, "close")
            assert "Ticket closed" in answer_text(response["data"])
            assert private_notes(world, cid) == ["The user closed this ticket from Discord."]

            (again,) = await slash(world, "close")
            assert "already closed" in answer_text(again["data"])
            reply = await text(world, "!close")
            assert "already closed" in answer_text(reply)
            assert len(private_notes(world, cid)) == 1
            assert_clean(world)


async def test_close_edge_cases(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            (response,) = await slash(world, "close")
            assert "don't have an open ticket" in answer_text(response["data"])

            cid = await seed_ticket(world)
            world.chatwoot.down = True
            (response,) = await slash(world, "close")
            assert UNREACHABLE in answer_text(response["data"])
            world.chatwoot.down = False
            assert world.chatwoot.conversations[cid]["status"] == "open"

            del world.chatwoot.conversations[cid]
            reply = await text(world, "!close")
            assert TICKET_GONE in answer_text(reply)
            assert_clean(world)


# ----------------------------------------------------------------------------- /reopen
@pytest.mark.parametrize("status", ["resolved", "snoozed"])
async def test_reopen_both_forms(tmp_path: Path, status: str) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world, status)
            (response,) = await slash(world, "reopen")
            assert response["data"]["flags"] == 64
            assert "Ticket reopened" in answer_text(response["data"])
            assert world.chatwoot.conversations[cid]["status"] == "open"
            assert private_notes(world, cid) == [
                f"The user reopened this {status} ticket from Discord."
            ]

            reply = await text(world, "!reopen")  # now it is open
            assert "Already open" in answer_text(reply)
            (response,) = await slash(world, "reopen")
            assert "Already open" in answer_text(response["data"])
            assert len(world.chatwoot.conversations) == 1
            assert incoming_contents(world, cid) == []
            assert_clean(world)


@pytest.mark.parametrize(("locked", "new_ticket"), [(False, True), (True, False)])
async def test_reopen_past_the_window(tmp_path: Path, locked: bool, new_ticket: bool) -> None:
    """Past REOPEN_WINDOW_HOURS a new ticket starts, unless the inbox is locked to one."""
    with trio.fail_after(CEILING):
        async with world_with_user(
            tmp_path,
            reopen_window_hours=1,
            chatwoot_options={"inbox": {"lock_to_single_conversation": locked}},
        ) as world:
            cid = await seed_ticket(world, "resolved")
            world.chatwoot.conversations[cid]["last_activity_at"] = int(time.time()) - 3 * 3600
            reply = await text(world, "!reopen")
            shown = answer_text(reply)
            user = await world.daemon.ctx.store.call(q.get_user, USER)
            if new_ticket:
                assert "New ticket opened" in shown
                assert user.conversation_id != cid
                assert world.chatwoot.conversations[cid]["status"] == "resolved"
                assert private_notes(world, user.conversation_id) != []
            else:
                assert "Ticket reopened" in shown
                assert user.conversation_id == cid
                assert world.chatwoot.conversations[cid]["status"] == "open"
            assert f"#{user.conversation_id}" in shown
            assert_clean(world)


async def test_reopen_edge_cases(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            reply = await text(world, "!reopen")
            assert NO_TICKET in answer_text(reply)

            cid = await seed_ticket(world, "resolved")
            world.chatwoot.down = True
            (response,) = await slash(world, "reopen")
            assert UNREACHABLE in answer_text(response["data"])
            world.chatwoot.down = False

            del world.chatwoot.conversations[cid]
            (response,) = await slash(world, "reopen")
            assert TICKET_GONE in answer_text(response["data"])
            assert_clean(world)


# ----------------------------------------------------------------------------- /help
async def test_help_both_forms(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            world.chatwoot.down = True  # /help needs no Chatwoot
            (response,) = await slash(world, "help")
            assert response["data"]["flags"] == 64
            shown = answer_text(response["data"])
            for command in ("/status", "/close [reason]", "/reopen", "/help"):
                assert f"`{command}`" in shown
            assert "How it works" in shown
            reply = await text(world, "!HELP")
            assert "`!close [reason]`" in answer_text(reply)
            assert metric(world, "text_help") == 1
            assert_clean(world)


async def test_other_bang_messages_and_attachments_are_forwarded(tmp_path: Path) -> None:
    """Only the four commands are intercepted; ``!hello`` is an ordinary DM."""
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            router = world.daemon.interactions
            sent = world.discord.user_sends(USER, "!hello there")
            from diswoot.gateway.events import MessageCreate

            assert not router.is_text_command(MessageCreate(sent))
            assert router.is_text_command(MessageCreate({**sent, "content": "!Status"}))
            with_file = {**sent, "content": "!close", "attachments": [{"id": "1"}]}
            assert not router.is_text_command(MessageCreate(with_file))


async def test_commands_after_a_real_dm(tmp_path: Path) -> None:
    """End to end: a DM opens the ticket, then ``!status`` and ``/close`` act on it."""
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            world.discord.user_sends(USER, "my order is late")
            user = await world.wait_for(
                lambda: world.chatwoot.conversation_for(f"discord:{USER}")
            )
            cid = user[0]["id"]
            await world.wait_for(lambda: incoming_contents(world, cid))
            shown = answer_text(await text(world, "!status"))
            assert f"#{cid}" in shown and "Open" in shown
            (response,) = await slash(world, "close", reason="found it")
            assert "Ticket closed" in answer_text(response["data"])
            assert incoming_contents(world, cid) == ["my order is late"]
            assert world.chatwoot.conversations[cid]["status"] == "resolved"
            assert_clean(world)


async def test_close_right_after_a_dm_lets_that_dm_land_first(tmp_path: Path) -> None:
    """``!close`` sent while the DM before it is still queued must not overtake it."""
    with trio.fail_after(CEILING):
        async with world_with_user(tmp_path) as world:
            cid = await seed_ticket(world)
            # the DM's first POST fails, so it waits in its lane for a retry ...
            world.chatwoot.fail_next("POST", r"/conversations/\d+/messages$", 503)
            world.discord.user_sends(USER, "one more thing before I go")
            inbound = world.daemon.inbound.queue
            await world.wait_for(lambda: inbound.counters.retries == 1)
            shown = answer_text(await text(world, "!close"))  # ... when the close arrives
            assert "Ticket closed" in shown
            # the DM reached the ticket before it was resolved, so it stays resolved
            assert incoming_contents(world, cid)[-1] == "one more thing before I go"
            await world.chatwoot.wait_webhooks_delivered()
            assert world.chatwoot.conversations[cid]["status"] == "resolved"
            assert_clean(world)
