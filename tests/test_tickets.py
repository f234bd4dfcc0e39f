"""Tickets: contacts and conversations as the commands and the inbound bridge use them.

Through the running daemon's own :class:`~diswoot.bridge.tickets.Tickets` against FakeChatwoot
(real sockets, real clock; "now" is injected through ``ctx.clock``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from diswoot.bridge.tickets import NoTicket, Tickets
from diswoot.chatwoot.errors import ChatwootNotFound, ChatwootUnavailable
from diswoot.plugins.base import DiscordUser, Enrichment
from diswoot.plugins.registry import PluginRegistry
from diswoot.testing.harness import World, bridge_world

UID = "80351110224678912"
TIMEOUT = 30


@asynccontextmanager
async def ticket_world(tmp_path: Path, **kwargs: Any) -> AsyncIterator[tuple[World, Tickets]]:
    """A world where alice already sent one DM (so she has a contact and a conversation)."""
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, greeting_enabled=False, **kwargs) as world:
            world.discord.add_user(UID, "alice", global_name="Alice")
            sent = world.discord.user_sends(UID, "hello")
            await world.wait_for(
                lambda: any(mid == sent["id"] for _, mid, _ in world.discord.reactions)
            )
            yield world, world.daemon.inbound.tickets
            assert world.chatwoot.violations == []


def calls_since(world: World, mark: int) -> list[str]:
    return [
        f"{r.method} {r.path.split('/', 5)[-1]}"
        for r in world.chatwoot.requests[mark:]
        if r.path.startswith("/api/v1/accounts/") and "/inboxes/" not in r.path
    ]


def only_conversation(world: World) -> int:
    [cid] = world.chatwoot.conversations
    return cid


async def test_the_contact_is_cached_and_kept_up_to_date(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (world, tickets):
        contact = world.chatwoot.contact_by_identifier(f"discord:{UID}")
        assert contact is not None
        user = dict(world.discord.users[UID])
        mark = len(world.chatwoot.requests)
        assert (await tickets.ensure_contact(user))[0] == contact["id"]
        assert (await tickets.ensure_contact({"id": UID}))[0] == contact["id"]  # a bare id
        assert calls_since(world, mark) == []
        user["global_name"] = "Alice Renamed"
        assert (await tickets.ensure_contact(user))[0] == contact["id"]
        assert calls_since(world, mark) == [f"PUT contacts/{contact['id']}"]
        assert contact["name"] == "Alice Renamed"
        assert contact["custom_attributes"]["discord_display_name"] == "Alice Renamed"
        await tickets.ensure_contact(user)
        assert len(calls_since(world, mark)) == 1


async def test_resolve_posts_the_note_and_sends_no_second_notice(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (world, tickets):
        cid = only_conversation(world)
        assert await tickets.resolve(UID, note="closed by the user: solved") == cid
        assert world.chatwoot.conversations[cid]["status"] == "resolved"
        [note] = [m for m in world.chatwoot.messages_in(cid) if m["private"]]
        assert note["content"] == "closed by the user: solved"
        await world.chatwoot.wait_webhooks_delivered()
        await world.wait_for(lambda: world.daemon.outbound.queue.depth == 0)
        texts = [json.dumps(m["embeds"]) for m in world.discord.dm_messages(UID)]
        assert not [t for t in texts if "resolved" in t.lower()]
        current = await tickets.current(UID)
        assert current is not None and current.status == "resolved"


async def test_a_failed_resolve_clears_the_flag(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (world, tickets):
        cid = only_conversation(world)
        world.chatwoot.fail_next("POST", r"/toggle_status$", 503)
        with pytest.raises(ChatwootUnavailable):
            await tickets.resolve(UID)
        current = await tickets.current(UID)
        assert current is not None and current.closed_by_user_at is None
        assert world.chatwoot.conversations[cid]["status"] == "open"


async def test_resolve_and_reopen_without_a_ticket(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (_world, tickets):
        assert await tickets.resolve("42") is None
        assert await tickets.current("42") is None
        with pytest.raises(NoTicket):
            await tickets.reopen("42")


async def test_reopen_a_resolved_ticket(tmp_path: Path) -> None:
    async with ticket_world(tmp_path, reopen_window_hours=1) as (world, tickets):
        cid = only_conversation(world)
        await tickets.resolve(UID)
        choice = await tickets.reopen(UID, note="reopened from Discord")
        assert (choice.conversation_id, choice.created, choice.reopened) == (cid, False, True)
        assert choice.previous_status == "resolved"
        assert world.chatwoot.conversations[cid]["status"] == "open"
        notes = [m["content"] for m in world.chatwoot.messages_in(cid) if m["private"]]
        assert notes == ["reopened from Discord"]


async def test_reopen_after_the_window_starts_a_new_ticket(tmp_path: Path) -> None:
    async with ticket_world(tmp_path, reopen_window_hours=1) as (world, tickets):
        cid = only_conversation(world)
        await tickets.resolve(UID)
        real = world.daemon.ctx.clock
        world.daemon.ctx.clock = lambda: real() + 3 * 3600
        choice = await tickets.reopen(UID)
        assert choice.created and choice.conversation_id != cid
        assert choice.previous_status == "resolved"
        assert world.chatwoot.conversations[cid]["status"] == "resolved"
        current = await tickets.current(UID)
        assert current is not None and current.conversation_id == choice.conversation_id


async def test_a_deleted_conversation_is_forgotten(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (world, tickets):
        cid = only_conversation(world)
        del world.chatwoot.conversations[cid]
        with pytest.raises(ChatwootNotFound):
            await tickets.current(UID, refresh=True)
        assert await tickets.current(UID) is None


async def test_status_from_webhooks_and_refresh(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (world, tickets):
        cid = only_conversation(world)
        assert await tickets.note_status(cid, "snoozed", last_activity_at=1.0) == "open"
        stored = await tickets.current(UID)
        assert stored is not None and stored.status == "snoozed"
        fresh = await tickets.current(UID, refresh=True)
        assert fresh is not None and fresh.status == "open"
        assert fresh.uuid == world.chatwoot.conversations[cid]["uuid"]


async def test_a_deleted_contact_is_recreated(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (world, _tickets):
        fake = world.chatwoot
        cid = only_conversation(world)
        old = fake.conversations.pop(cid)
        del fake.contacts[old["contact_id"]]
        sent = world.discord.user_sends(UID, "still there?")
        await world.wait_for(
            lambda: any(mid == sent["id"] for _, mid, _ in world.discord.reactions)
        )
        [contact] = fake.contacts.values()
        assert contact["id"] != old["contact_id"]
        assert contact["identifier"] == f"discord:{UID}"
        [conversation] = fake.conversations.values()
        assert [m["content"] for m in fake.messages_in(conversation["id"])] == ["still there?"]


class BrokenPlugin:
    name = "broken"

    def init(self, env: Mapping[str, str]) -> bool:
        return True

    async def enrich_contact(self, user: DiscordUser) -> Enrichment | None:
        raise RuntimeError("the platform API is down")

    async def shutdown(self) -> None:
        return None


class PlatformPlugin:
    name = "platform"

    def __init__(self, email: str) -> None:
        self.email = email
        self.seen: list[DiscordUser] = []

    def init(self, env: Mapping[str, str]) -> bool:
        return True

    async def enrich_contact(self, user: DiscordUser) -> Enrichment | None:
        self.seen.append(user)
        return Enrichment(
            email=self.email, custom_attributes={"user_id": "u-1", "discord_id": "spoofed"}
        )

    async def shutdown(self) -> None:
        return None


BOB = "80351110224678913"


async def test_plugins_enrich_and_a_failing_one_does_not_block(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (world, _tickets):
        platform = PlatformPlugin("Bob@Example.com")
        world.daemon.ctx.plugins = PluginRegistry([BrokenPlugin(), platform])
        world.discord.add_user(BOB, "bob", avatar="a_animated")
        sent = world.discord.user_sends(BOB, "hi")
        await world.wait_for(
            lambda: any(mid == sent["id"] for _, mid, _ in world.discord.reactions)
        )
        contact = world.chatwoot.contact_by_identifier(f"discord:{BOB}")
        assert contact is not None
        assert contact["email"] == "bob@example.com"
        assert contact["name"] == "bob"
        assert contact["custom_attributes"] == {
            "user_id": "u-1",
            "discord_id": BOB,  # plugins cannot override the bridge's own attributes
            "discord_username": "bob",
            "discord_display_name": "bob",
            "source": "discord",
        }
        [who] = platform.seen
        assert who.avatar_url == f"https://cdn.discordapp.com/avatars/{BOB}/a_animated.gif"


async def test_an_email_taken_by_another_contact_is_left_out(tmp_path: Path) -> None:
    async with ticket_world(tmp_path) as (world, _tickets):
        alice = world.chatwoot.contact_by_identifier(f"discord:{UID}")
        assert alice is not None
        alice["email"] = "shared@example.com"
        world.daemon.ctx.plugins = PluginRegistry([PlatformPlugin("shared@example.com")])
        world.discord.add_user(BOB, "bob")
        sent = world.discord.user_sends(BOB, "hi")
        await world.wait_for(
            lambda: any(mid == sent["id"] for _, mid, _ in world.discord.reactions)
        )
        bob = world.chatwoot.contact_by_identifier(f"discord:{BOB}")
        assert bob is not None and bob["email"] is None
        assert bob["custom_attributes"]["user_id"] == "u-1"
