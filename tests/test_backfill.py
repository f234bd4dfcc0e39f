"""DMs sent while the daemon was away arrive once: by RESUME replay, by backfill, or by both.

The real daemon against FakeDiscord (REST + gateway) and FakeChatwoot on 127.0.0.1, on the real
clock.  ``FakeDiscord.user_sends`` stores a DM even when no gateway client is connected; the
fake gateway keeps it for a RESUME of a still-valid session, or for the next READY after
``invalidate_sessions`` - which Discord would not do, so those tests drop it with
``discard_pending`` and only the backfill can bring it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from diswoot.bridge.backfill import BackfillResult
from diswoot.bridge.commands import NO_TICKET
from diswoot.resume_point import SESSION_KEY
from diswoot.snowflake import snowflake_time
from diswoot.store import open_store
from diswoot.store import queries as q
from diswoot.testing.fake_gateway import FakeGateway
from diswoot.testing.harness import World, bridge_world, daemon_process

UID = "80351110224678912"
TIMEOUT = 40
FAST_DISCORD = {"route_limit": 1000}  # the confirm reactions need not crawl at 5 per 5 s


@asynccontextmanager
async def world_for(tmp_path: Path, **kwargs: Any) -> AsyncIterator[World]:
    with trio.fail_after(TIMEOUT):
        async with bridge_world(
            tmp_path, greeting_enabled=False, discord_options=FAST_DISCORD, **kwargs
        ) as world:
            world.discord.add_user(UID, "alice")
            yield world
            assert world.chatwoot.violations == []
            assert world.discord.violations == []


def gateway(world: World) -> FakeGateway:
    assert isinstance(world.discord.gateway, FakeGateway)
    return world.discord.gateway


def incoming(world: World) -> list[dict[str, Any]]:
    return [
        m
        for c in sorted(world.chatwoot.conversations)
        for m in world.chatwoot.messages_in(c)
        if m["message_type"] == 0
    ]


async def forwarded(world: World, *message_ids: str) -> list[dict[str, Any]]:
    """Wait until every DM is in Chatwoot; all incoming messages, in order."""
    await world.wait_for(
        lambda: set(message_ids) <= {m["source_id"] for m in incoming(world)}, timeout=TIMEOUT
    )
    return incoming(world)


async def settled(world: World) -> None:
    inbound = world.daemon.inbound
    await world.wait_for(
        lambda: inbound.queue.depth == 0 and world.daemon.outbound.queue.depth == 0
    )


def recovered(world: World) -> float:
    value = world.daemon.ctx.metrics.registry.get_sample_value(
        "diswoot_recovered_total", {"source": "backfill"}
    )
    return value or 0.0


def replies_to(world: World, message_id: str) -> list[dict[str, Any]]:
    """The bot's DMs answering the user's message ``message_id``."""
    return [
        m
        for m in world.discord.dm_messages(UID)
        if (m.get("message_reference") or {}).get("message_id") == message_id
    ]


def answer_text(message: dict[str, Any]) -> str:
    return "\n".join(
        f"{e.get('title', '')}\n{e.get('description', '')}" for e in message.get("embeds", [])
    )


def edit_notes(world: World) -> list[str]:
    return [
        m["content"]
        for c in sorted(world.chatwoot.conversations)
        for m in world.chatwoot.messages_in(c)
        if m["private"] and m["content"].startswith("✏️")
    ]


def chatwoot_trace(world: World) -> list[str]:
    """What the daemon did in Chatwoot, in order: messages posted (their text), status changes."""
    trace: list[str] = []
    for r in world.chatwoot.requests:
        body = r.json if isinstance(r.json, dict) else r.form
        if r.method != "POST" or not 200 <= r.status < 300:
            continue
        if r.path.endswith("/messages"):
            trace.append(str(body.get("content")))
        elif r.path.endswith("/toggle_status"):
            trace.append(f"status:{body.get('status')}")
    return trace


def command_metric(world: World, kind: str) -> float:
    value = world.daemon.ctx.metrics.registry.get_sample_value(
        "diswoot_interactions_total", {"kind": kind}
    )
    return value or 0.0


async def again(world: World) -> None:
    """A second fresh session (READY) while running, and the backfill pass it starts."""
    backfill = world.daemon.inbound.backfill
    before = backfill.last_result
    fake = gateway(world)
    fake.invalidate_sessions()
    await fake.drop_client()
    await world.wait_for(lambda: backfill.last_result is not before)
    await world.chatwoot.wait_webhooks_delivered()
    await settled(world)


def history_requests(world: World, channel_id: str) -> list[dict[str, str]]:
    return [
        r.query
        for r in world.discord.requests
        if r.method == "GET" and r.path == f"/channels/{channel_id}/messages"
    ]


async def go_away(world: World, how: str) -> None:
    if how == "stop":
        await world.stop()
    else:
        await world.crash()


@pytest.mark.parametrize("how", ["stop", "crash"])
async def test_a_dm_sent_while_down_arrives_once_by_resume(tmp_path: Path, how: str) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "before")
        await forwarded(world, first["id"])
        await go_away(world, how)
        away = world.discord.user_sends(UID, "while you were away")
        await world.start()
        messages = await forwarded(world, away["id"])
        await settled(world)
        assert [m["content"] for m in incoming(world)] == ["before", "while you were away"]
        assert [m["source_id"] for m in messages] == [first["id"], away["id"]]
        assert len(gateway(world).identifies) == 1 and gateway(world).resumes
        assert world.daemon.inbound.backfill.last_result is None  # RESUME: no backfill


@pytest.mark.parametrize(
    ("how", "replayed_too"), [("stop", False), ("crash", False), ("crash", True)]
)
async def test_a_dm_sent_while_down_arrives_once_by_backfill_on_a_fresh_session(
    tmp_path: Path, how: str, replayed_too: bool
) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "before")
        await forwarded(world, first["id"])
        await go_away(world, how)
        gateway(world).invalidate_sessions()  # the restart must IDENTIFY
        away = world.discord.user_sends(UID, "while you were away")
        if not replayed_too:
            assert gateway(world).discard_pending() == 1  # as on Discord: no replay
        await world.start()
        await forwarded(world, away["id"])
        backfill = world.daemon.inbound.backfill
        result = await world.wait_for(lambda: backfill.last_result)
        await settled(world)
        assert [m["content"] for m in incoming(world)] == ["before", "while you were away"]
        assert len(gateway(world).identifies) == 2
        channel = first["channel_id"]
        [query] = history_requests(world, channel)
        assert result.channels == 1
        assert query["limit"] == "100"  # from the look-back (72 h), for edits of older DMs
        floor = datetime.now(UTC) - timedelta(hours=72)
        assert abs(snowflake_time(query["after"]) - floor) < timedelta(seconds=60)
        if replayed_too:  # whichever of the two stored it first, it was stored once
            assert recovered(world) == result.recovered <= 1
        else:
            assert recovered(world) == result.recovered == 1
        assert world.discord.reactions[-1] == (channel, away["id"], "✅")


async def test_a_lost_session_while_running_is_backfilled(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "before")
        await forwarded(world, first["id"])
        fake = gateway(world)
        fake.invalidate_sessions()
        await fake.drop_client()  # the daemon reconnects, its RESUME fails, it identifies
        away = world.discord.user_sends(UID, "during the outage")
        assert fake.discard_pending() == 1
        messages = await forwarded(world, away["id"])
        assert [m["content"] for m in messages] == ["before", "during the outage"]
        assert recovered(world) == 1


async def test_backfill_pages_forward_and_respects_the_look_back(tmp_path: Path) -> None:
    """131 messages in the window (130 of the user's, one of the bot's) and 3 older ones."""
    now = time.time()
    async with world_for(tmp_path, start=False, backfill_hours=1) as world:
        fake = world.discord
        old = [fake.user_sent_earlier(UID, f"old {n}", at=now - 7200 + n) for n in range(3)]
        recent = [
            fake.user_sent_earlier(UID, f"m{n:03}", at=now - 3000 + 10 * n) for n in range(130)
        ]
        channel = recent[0]["channel_id"]
        bot_says = await world.http.post(  # the bot's own message in the gap is not forwarded
            f"{fake.api_base_url}/channels/{channel}/messages",
            json={"content": "we are back"},
            headers={"Authorization": f"Bot {fake.token}"},
        )
        assert bot_says.status_code == 200
        async with open_store(world.cfg.db_path) as store:  # a user active 10 minutes ago
            await store.call(q.upsert_user, UID, now - 600, dm_channel_id=channel)
        await world.start()
        messages = await forwarded(world, recent[-1]["id"])
        assert [m["content"] for m in messages] == [m["content"] for m in recent]
        result = await world.wait_for(lambda: world.daemon.inbound.backfill.last_result)
        assert result == BackfillResult(channels=1, seen=131, recovered=130)
        assert recovered(world) == 130
        first_page, second_page = history_requests(world, channel)
        floor = snowflake_time(first_page["after"])
        expected = datetime.fromtimestamp(now, UTC) - timedelta(hours=1)
        assert abs(floor - expected) < timedelta(seconds=60)
        assert snowflake_time(old[-1]["id"]) < floor
        assert second_page == {"after": recent[99]["id"], "limit": "100"}
        async with open_store(world.cfg.db_path) as store:
            user = await store.call(q.get_user, UID)
        assert user is not None and user.last_message_id == recent[-1]["id"]


async def test_zero_hours_disables_the_backfill(tmp_path: Path) -> None:
    async with world_for(tmp_path, backfill_hours=0) as world:
        first = world.discord.user_sends(UID, "hello")
        await forwarded(world, first["id"])
        result = await world.daemon.inbound.backfill.run(trio.Event())
        assert result == BackfillResult()
        assert history_requests(world, first["channel_id"]) == []


async def test_commands_in_the_gap_run_in_order_with_the_dms(tmp_path: Path) -> None:
    """``!status``, two DMs, ``!close``, a DM, all sent while down: each command runs where it
    was sent - ``!status`` before the ticket exists, ``!close`` after the DMs before it reached
    it and before the DM after it - once, and none is forwarded."""
    now = time.time()
    async with world_for(tmp_path, start=False) as world:
        fake = world.discord
        texts = ["!status", "a real question", "more detail", "!close thanks", "one more thing"]
        sent = [fake.user_sent_earlier(UID, t, at=now - 300 + n) for n, t in enumerate(texts)]
        async with open_store(world.cfg.db_path) as store:
            await store.call(q.upsert_user, UID, now - 600, dm_channel_id=sent[0]["channel_id"])
        await world.start()
        await forwarded(world, sent[4]["id"])
        result = await world.wait_for(lambda: world.daemon.inbound.backfill.last_result)
        assert (result.seen, result.recovered, result.commands) == (5, 3, 2)
        status = await world.wait_for(lambda: replies_to(world, sent[0]["id"]))
        close = await world.wait_for(lambda: replies_to(world, sent[3]["id"]))
        assert NO_TICKET in answer_text(status[0])  # it ran before the first DM
        assert "while I was offline" in answer_text(status[0])
        assert "Ticket closed" in answer_text(close[0])
        assert chatwoot_trace(world) == [
            "a real question",
            "more detail",
            "The user closed this ticket from Discord.\nReason: thanks",
            "status:resolved",
            "one more thing",
        ]
        await again(world)  # a second fresh session: nothing runs or arrives twice
        assert len(replies_to(world, sent[0]["id"])) == len(replies_to(world, sent[3]["id"])) == 1
        assert [m["content"] for m in incoming(world)] == [texts[1], texts[2], texts[4]]
        second = world.daemon.inbound.backfill.last_result
        assert (second.recovered, second.commands, second.edits) == (0, 0, 0)
        assert command_metric(world, "text_close") == command_metric(world, "text_status") == 1


@pytest.mark.parametrize(
    ("how", "replayed_too"), [("stop", False), ("crash", False), ("crash", True)]
)
async def test_a_close_sent_while_down_is_run_once(
    tmp_path: Path, how: str, replayed_too: bool
) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "my order is late")
        await forwarded(world, first["id"])
        [conversation] = world.chatwoot.conversation_for(f"discord:{UID}")
        cid = conversation["id"]
        await go_away(world, how)
        gateway(world).invalidate_sessions()
        close = world.discord.user_sends(UID, "!close sorted, thanks")
        if not replayed_too:
            assert gateway(world).discard_pending() == 1  # only the backfill can find it
        await world.start()
        await world.wait_for(lambda: world.chatwoot.conversations[cid]["status"] == "resolved")
        await world.wait_for(lambda: replies_to(world, close["id"]))
        await again(world)
        [answer] = replies_to(world, close["id"])
        assert "Ticket closed" in answer_text(answer) and f"#{cid}" in answer_text(answer)
        if not replayed_too:
            assert "You sent `!close` <t:" in answer_text(answer)
        assert [m["content"] for m in world.chatwoot.messages_in(cid) if m["private"]] == [
            "The user closed this ticket from Discord.\nReason: sorted, thanks"
        ]
        assert [m["content"] for m in incoming(world)] == ["my order is late"]
        assert command_metric(world, "text_close") == 1
        titles = [e.get("title") for m in world.discord.dm_messages(UID) for e in m["embeds"]]
        assert "Ticket resolved" not in titles  # the user closed it: no second notice


async def test_a_close_sent_while_down_waits_for_chatwoot(tmp_path: Path) -> None:
    """Chatwoot unreachable when the daemon comes back: the late ``!close`` is retried in its
    lane until it can really run (not answered with "try again later")."""
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "my order is late")
        await forwarded(world, first["id"])
        [conversation] = world.chatwoot.conversation_for(f"discord:{UID}")
        await world.stop()
        gateway(world).invalidate_sessions()
        close = world.discord.user_sends(UID, "!close")
        assert gateway(world).discard_pending() == 1
        world.chatwoot.down = True
        await world.start()
        inbound = world.daemon.inbound
        await world.wait_for(lambda: inbound.queue.counters.retries >= 1)
        assert replies_to(world, close["id"]) == []
        world.chatwoot.down = False
        inbound.queue.wake()
        [answer] = await world.wait_for(lambda: replies_to(world, close["id"]))
        assert "Ticket closed" in answer_text(answer)
        assert world.chatwoot.conversations[conversation["id"]]["status"] == "resolved"
        assert command_metric(world, "text_close") == 1


@pytest.mark.parametrize("replayed_too", [False, True])
async def test_an_edit_made_while_down_becomes_one_note(
    tmp_path: Path, replayed_too: bool
) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "my order is 123")
        await forwarded(world, first["id"])
        await world.crash()
        gateway(world).invalidate_sessions()
        world.discord.user_edits(UID, first["id"], "my order is 124")
        if not replayed_too:
            assert gateway(world).discard_pending() == 1
        await world.start()
        await world.wait_for(lambda: edit_notes(world))
        await again(world)
        assert edit_notes(world) == ["✏️ edited: my order is 124"]
        [message] = incoming(world)
        [note] = [m for m in world.chatwoot.messages_in(message["conversation_id"])
                  if m["private"]]
        assert note["content_attributes"]["in_reply_to"] == message["id"]
        assert world.daemon.inbound.backfill.last_result.edits == 0  # the second pass


async def test_an_edit_seen_live_is_not_noted_again_by_the_backfill(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "my order is 123")
        await forwarded(world, first["id"])
        world.discord.user_edits(UID, first["id"], "my order is 124")
        await world.wait_for(lambda: edit_notes(world))
        await world.stop()
        gateway(world).invalidate_sessions()
        await world.start()
        result = await world.wait_for(lambda: world.daemon.inbound.backfill.last_result)
        await settled(world)
        assert (result.seen, result.recovered, result.edits) == (1, 0, 0)
        assert edit_notes(world) == ["✏️ edited: my order is 124"]


async def test_history_older_than_the_newest_stored_dm_is_never_run_or_forwarded(
    tmp_path: Path,
) -> None:
    """Messages sent before the bridge stored the user's first DM (to the bot it replaced, say)
    are in the look-back too: not forwarded, not run, edits of them not noted."""
    now = time.time()
    async with world_for(tmp_path, start=False) as world:
        fake = world.discord
        old = [fake.user_sent_earlier(UID, t, at=now - 600 + n)
               for n, t in enumerate(["to the old bot", "!close"])]
        fake.user_edits(UID, old[0]["id"], "to the old bot, edited")
        gateway(world).discard_pending()
        await world.start()
        hello = fake.user_sends(UID, "hello")
        await forwarded(world, hello["id"])
        await again(world)
        result = world.daemon.inbound.backfill.last_result
        assert result == BackfillResult(channels=1, seen=3)
        assert [m["content"] for m in incoming(world)] == ["hello"]
        assert replies_to(world, old[1]["id"]) == [] and edit_notes(world) == []


async def test_a_new_users_dm_sent_during_a_crash_arrives_by_resume(tmp_path: Path) -> None:
    """A real ``python -m diswoot`` is SIGKILLed (a crash, the OOM killer, the watchdog): the
    session it saved while running lets the restart RESUME, and Discord's replay brings a DM
    that a user with no ticket sent meanwhile - which no backfill could find (the bot learns
    of a user's DM channel only from their DMs)."""
    newcomer = "80351110224678913"
    with trio.fail_after(TIMEOUT):
        async with bridge_world(
            tmp_path, start=False, greeting_enabled=False, discord_options=FAST_DISCORD
        ) as world:
            world.discord.add_user(UID, "alice")
            world.discord.add_user(newcomer, "bob")
            fake = gateway(world)
            async with daemon_process(world.cfg) as proc:
                first = world.discord.user_sends(UID, "before")
                await forwarded(world, first["id"])
                seen = fake.last_seq
                while await saved_seq(world) != seen:  # noqa: ASYNC110 - another process saves it
                    await trio.sleep(0.05)
                proc.kill()
                await proc.wait()
            away = world.discord.user_sends(newcomer, "hello, first time here")
            await world.start()
            await forwarded(world, away["id"])
            await settled(world)
            assert [m["content"] for m in incoming(world)] == [
                "before", "hello, first time here"
            ]
            assert len(fake.identifies) == 1 and len(fake.resumes) == 1
            assert world.chatwoot.violations == [] and world.discord.violations == []


async def saved_seq(world: World) -> int | None:
    """The ``seq`` of the gateway session the daemon saved (None before any)."""
    async with open_store(world.cfg.db_path) as store:
        saved = await store.call(q.get_value, SESSION_KEY)
    return saved.get("seq") if isinstance(saved, dict) else None


async def test_a_dm_sent_after_a_sigkill_arrives_once(tmp_path: Path) -> None:
    """A real ``python -m diswoot`` is SIGKILLed; a DM sent meanwhile arrives once after a
    restart on the same database (by RESUME replay or by backfill, whichever applies)."""
    with trio.fail_after(TIMEOUT):
        async with bridge_world(
            tmp_path, start=False, greeting_enabled=False, discord_options=FAST_DISCORD
        ) as world:
            world.discord.add_user(UID, "alice")
            async with daemon_process(world.cfg) as proc:
                first = world.discord.user_sends(UID, "before")
                await forwarded(world, first["id"])
                proc.kill()
                await proc.wait()
            away = world.discord.user_sends(UID, "while you were away")
            await world.start()
            await forwarded(world, away["id"])
            await settled(world)
            assert [m["content"] for m in incoming(world)] == ["before", "while you were away"]
            assert world.chatwoot.violations == []
            assert world.discord.violations == []
