"""A user typing in their DM is shown to agents through Chatwoot's public toggle_typing API.

The real daemon against the fakes on 127.0.0.1 and the real clock; the relay's timings (8 s
renew, 10 s off) are shortened on the running daemon so the tests stay fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from diswoot.bridge.user_typing import TypingRelay
from diswoot.testing.harness import World, bridge_world

UID = "80351110224678912"
BOB = "80351110224678913"
TIMEOUT = 30


@asynccontextmanager
async def world_for(tmp_path: Path) -> AsyncIterator[World]:
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            world.discord.add_user(BOB, "bob")
            yield world
            assert world.chatwoot.violations == []
            assert world.discord.violations == []


def relay(world: World, *, renew: float = 8.0, off_after: float = 10.0) -> TypingRelay:
    typing: TypingRelay = world.daemon.inbound.typing
    typing.renew_after, typing.off_after = renew, off_after
    return typing


def toggles(world: World) -> list[tuple[str, str]]:
    """(path, typing_status) of every contact typing call the bridge made."""
    return [
        (r.path, (r.json or {}).get("typing_status", r.query.get("typing_status", "")))
        for r in world.chatwoot.requests
        if r.path.endswith("/toggle_typing")
    ]


async def a_conversation(world: World, user_id: str = UID) -> dict[str, Any]:
    """The user DMs once, so they have a contact and a conversation; its REST message."""
    sent = world.discord.user_sends(user_id, "hello")

    def find() -> dict[str, Any] | None:
        return next(
            (
                m
                for c in world.chatwoot.conversations
                for m in world.chatwoot.messages_in(c)
                if m["source_id"] == sent["id"]
            ),
            None,
        )

    found: dict[str, Any] = await world.wait_for(find)
    return found


async def test_the_user_typing_is_shown_to_agents_then_cleared(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        message = await a_conversation(world)
        relay(world, off_after=0.5)
        world.discord.user_types(UID)
        await world.wait_for(lambda: len(toggles(world)) == 2)
        inbox = world.chatwoot.inbox["inbox_identifier"]
        [contact_inbox] = world.chatwoot.contact_inboxes.values()
        path = (
            f"/public/api/v1/inboxes/{inbox}/contacts/{contact_inbox['source_id']}"
            f"/conversations/{message['conversation_id']}/toggle_typing"
        )
        assert toggles(world) == [(path, "on"), (path, "off")]
        # Chatwoot tells the bridge about it; that echo is the contact's, not an agent's
        await world.wait_for(
            lambda: len(world.chatwoot.delivered_events("conversation_typing_off")) >= 1
        )
        await world.chatwoot.wait_webhooks_delivered()
        [on_event] = world.chatwoot.delivered_events("conversation_typing_on")
        assert on_event["user"]["id"] == message["sender"]["id"]
        assert world.discord.typing == []


async def test_a_burst_of_typing_events_is_coalesced(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        await a_conversation(world)
        relay(world, off_after=0.5)
        for _ in range(5):
            world.discord.user_types(UID)
        await world.wait_for(lambda: [s for _, s in toggles(world)] == ["on", "off"])


async def test_typing_that_goes_on_is_renewed_and_ends_with_one_off(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        await a_conversation(world)
        relay(world, renew=0.2, off_after=0.5)
        start = trio.current_time()
        while trio.current_time() - start < 1.0:  # Discord clients repeat TYPING_START
            world.discord.user_types(UID)
            await trio.sleep(0.1)
        await world.wait_for(lambda: toggles(world) and toggles(world)[-1][1] == "off")
        states = [s for _, s in toggles(world)]
        assert states[-1] == "off" and states.count("off") == 1
        assert 2 <= states.count("on") <= 6  # renewed, but at most once per 0.2 s


async def test_the_dm_arriving_ends_the_typing(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        await a_conversation(world)
        relay(world)  # the 10 s "off" timer would outlast the test's patience below
        world.discord.user_types(UID)
        await world.wait_for(lambda: [s for _, s in toggles(world)] == ["on"])
        world.discord.user_sends(UID, "my question")
        await world.wait_for(lambda: [s for _, s in toggles(world)] == ["on", "off"], timeout=5)


async def test_a_user_without_a_conversation_is_skipped_quietly(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        relay(world, off_after=0.3)
        world.discord.user_types(BOB)  # never DMed the bot: no contact, no conversation
        await a_conversation(world, UID)
        assert toggles(world) == []


async def test_a_chatwoot_without_the_public_api_disables_typing_for_a_while(
    tmp_path: Path,
) -> None:
    async with world_for(tmp_path) as world:
        await a_conversation(world)
        typing = relay(world, off_after=0.3)
        world.chatwoot.fail_next("POST", r"/toggle_typing$", 404)
        world.discord.user_types(UID)
        await world.wait_for(lambda: typing.disabled)
        world.discord.user_types(UID)
        await a_conversation(world)  # the router handled the typing event before this DM
        assert [s for _, s in toggles(world)] == ["on"]
