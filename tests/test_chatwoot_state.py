"""Chatwoot's own state decides (issue 14): the reopen window is judged on Chatwoot's status
and ``last_activity_at``, and a conversation created by an attempt whose answer was lost (a
timeout, a crash, a SIGKILL) is found and reused instead of created twice.

End to end: DMs through the fake gateway, the daemon's queues, FakeChatwoot over real sockets.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from diswoot.testing.harness import World, bridge_world, daemon_process

UID = "80351110224678912"
TIMEOUT = 30
HOUR = 3600


@asynccontextmanager
async def alice(tmp_path: Path, **kwargs: Any) -> AsyncIterator[tuple[World, int]]:
    """A world where alice's first DM opened conversation ``cid``; reopen window 1 hour."""
    with trio.fail_after(TIMEOUT):
        async with bridge_world(
            tmp_path, greeting_enabled=False, reopen_window_hours=1, **kwargs
        ) as world:
            world.discord.add_user(UID, "alice")
            await dm(world, "hello")
            [cid] = world.chatwoot.conversations
            yield world, cid
            assert world.chatwoot.violations == []


async def dm(world: World, text: str) -> dict[str, Any]:
    """Send a DM and wait until Chatwoot has it; the Chatwoot message."""
    sent = world.discord.user_sends(UID, text)

    def arrived() -> list[dict[str, Any]]:
        return [m for m in world.chatwoot.messages.values() if m.get("source_id") == sent["id"]]

    [message] = await world.wait_for(arrived, timeout=TIMEOUT)
    return message


def calls(world: World, mark: int) -> list[str]:
    return [
        f"{r.method} {r.path.split('/', 5)[-1]}"
        for r in world.chatwoot.requests[mark:]
        if r.path.startswith("/api/v1/accounts/") and "/inboxes/" not in r.path
    ]


async def closed_in_chatwoot(
    world: World, cid: int, status: str, *, hours_ago: float, webhook: bool = True
) -> None:
    """An agent resolves/snoozes ``cid``; Chatwoot's last activity was ``hours_ago``."""
    await world.chatwoot.set_status(cid, status, deliver=webhook)
    if webhook:
        stored = world.daemon.ctx.store
        await world.wait_for(lambda: stored.routing.conversations.get(cid).status == status)
    world.chatwoot.conversations[cid]["last_activity_at"] = int(time.time() - hours_ago * HOUR)


async def test_a_resolved_conversation_idle_beyond_the_window_starts_a_new_ticket(
    tmp_path: Path,
) -> None:
    async with alice(tmp_path) as (world, cid):
        # the bridge saw activity a moment ago; Chatwoot's last activity is two hours old
        await closed_in_chatwoot(world, cid, "resolved", hours_ago=2)
        mark = len(world.chatwoot.requests)
        message = await dm(world, "a new problem")
        assert message["conversation_id"] != cid
        assert world.chatwoot.conversations[cid]["status"] == "resolved"
        assert calls(world, mark)[0] == f"GET conversations/{cid}"  # one read, then decided


async def test_a_recently_resolved_conversation_is_reopened(tmp_path: Path) -> None:
    async with alice(tmp_path) as (world, cid):
        await closed_in_chatwoot(world, cid, "resolved", hours_ago=0.25)
        message = await dm(world, "one more thing")
        assert message["conversation_id"] == cid
        assert world.chatwoot.conversations[cid]["status"] == "open"
        assert len(world.chatwoot.conversations) == 1


async def test_a_snoozed_conversation_is_judged_the_same_way(tmp_path: Path) -> None:
    async with alice(tmp_path) as (world, cid):
        await closed_in_chatwoot(world, cid, "snoozed", hours_ago=3)
        assert (await dm(world, "hello again"))["conversation_id"] != cid


async def test_chatwoots_status_repairs_a_stale_local_one(tmp_path: Path) -> None:
    """An agent reopened the conversation while its webhook was lost: locally it is still
    resolved (and two hours idle by Chatwoot's clock), but Chatwoot says open: it is used."""
    async with alice(tmp_path) as (world, cid):
        await closed_in_chatwoot(world, cid, "resolved", hours_ago=2)
        await world.chatwoot.set_status(cid, "open", deliver=False)
        world.chatwoot.conversations[cid]["last_activity_at"] = int(time.time() - 2 * HOUR)
        mark = len(world.chatwoot.requests)
        assert (await dm(world, "still there?"))["conversation_id"] == cid
        assert world.daemon.ctx.store.routing.conversations.get(cid).status == "open"
        # repaired: the next DM costs one call again (the POST)
        mark = len(world.chatwoot.requests)
        await dm(world, "thanks")
        assert calls(world, mark) == [f"POST conversations/{cid}/messages"]


async def test_an_open_conversation_costs_no_read(tmp_path: Path) -> None:
    async with alice(tmp_path) as (world, cid):
        mark = len(world.chatwoot.requests)
        await dm(world, "steady state")
        assert calls(world, mark) == [f"POST conversations/{cid}/messages"]


def in_chatwoot(world: World, source_id: str) -> bool:
    return any(m.get("source_id") == source_id for m in world.chatwoot.messages.values())


def conversations_of_alice(world: World) -> list[dict[str, Any]]:
    contact = world.chatwoot.contact_by_identifier(f"discord:{UID}")
    assert contact is not None
    return [c for c in world.chatwoot.conversations.values() if c["contact_id"] == contact["id"]]


async def test_a_lost_answer_to_the_conversation_post_creates_no_second_one(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            world.chatwoot.webhook_urls = []  # no conversation_created webhook tells us either
            lost = world.chatwoot.lose_next_answer("/conversations", delay=0)
            message = await dm(world, "first words")
            assert lost == [200]
            [conversation] = conversations_of_alice(world)
            assert message["conversation_id"] == conversation["id"]
            assert len(world.chatwoot.contacts) == 1
            made = calls(world, 0)
            assert made.count("POST conversations") == 1  # the retry looked instead:
            assert f"GET contacts/{conversation['contact_id']}/conversations" in made


async def test_a_crash_after_the_conversation_post_leaves_one_conversation(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            world.chatwoot.webhook_urls = []  # its conversation_created webhook is lost too
            lost = world.chatwoot.lose_next_answer("/conversations", delay=60)
            sent = world.discord.user_sends(UID, "first words")
            await world.wait_for(lambda: lost == [200])  # Chatwoot created it...
            await world.crash()  # ...and the daemon died before hearing the answer
            await world.start()
            await world.wait_for(lambda: in_chatwoot(world, sent["id"]))
            [conversation] = conversations_of_alice(world)
            assert [m["content"] for m in world.chatwoot.messages_in(conversation["id"])] == [
                "first words"
            ]


async def test_sigkill_right_after_the_conversation_post_leaves_one_conversation(
    tmp_path: Path,
) -> None:
    """A real ``python -m diswoot`` is SIGKILLed while Chatwoot answers the conversation
    POST; the next daemon on the same database finds that conversation and uses it."""
    with trio.fail_after(TIMEOUT * 2):
        async with bridge_world(tmp_path, start=False, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            lost = world.chatwoot.lose_next_answer("/conversations", delay=60)
            async with daemon_process(world.cfg) as proc:
                sent = world.discord.user_sends(UID, "first words")
                await world.wait_for(lambda: lost == [200], timeout=TIMEOUT)
                proc.kill()
                await proc.wait()
            await world.start()
            await world.wait_for(lambda: in_chatwoot(world, sent["id"]), timeout=TIMEOUT)
            [conversation] = conversations_of_alice(world)
            assert len(world.chatwoot.contacts) == 1
            assert [m["content"] for m in world.chatwoot.messages_in(conversation["id"])] == [
                "first words"
            ]
