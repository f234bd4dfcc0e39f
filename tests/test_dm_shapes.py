"""Every DM Discord can send reaches the agent faithfully: forwards, polls, voice messages,
stickers and replies to deleted messages, end to end (real daemon, fakes, real sockets)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from diswoot.bridge.dm_content import dm_attachments, dm_text
from diswoot.testing.harness import World, bridge_world

UID = "80351110224678912"
TIMEOUT = 30
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(4_000)
OGG = b"OggS" + os.urandom(6_000)


@asynccontextmanager
async def world_for(tmp_path: Path) -> AsyncIterator[World]:
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            yield world
            assert world.chatwoot.violations == []
            assert world.discord.violations == []


async def forwarded(world: World, message_id: str) -> dict[str, Any]:
    """The Chatwoot message that carries the DM ``message_id`` (waits for it)."""

    def find() -> dict[str, Any] | None:
        for conversation_id in world.chatwoot.conversations:
            for message in world.chatwoot.messages_in(conversation_id):
                if message["source_id"] == message_id:
                    return message
        return None

    found: dict[str, Any] = await world.wait_for(find, timeout=TIMEOUT)
    return found


async def test_a_forwarded_message_brings_its_text_and_files_marked_as_forwarded(
    tmp_path: Path,
) -> None:
    async with world_for(tmp_path) as world:
        sent = world.discord.user_forwards(
            UID,
            "Order #1234 shipped\nTracking: ZX9",
            attachments=[("label.png", "image/png", PNG)],
            embeds=[{"type": "rich", "title": "Carrier", "description": "Out for delivery"}],
        )
        assert sent["content"] == ""
        message = await forwarded(world, sent["id"])
        assert message["content"].splitlines() == [
            "↪️ Forwarded message:",
            "> Order #1234 shipped",
            "> Tracking: ZX9",
            "> Carrier",
            "> Out for delivery",
        ]
        [attachment] = message["attachments"]
        assert world.chatwoot.attachment_blobs[int(attachment["id"])] == PNG


async def test_a_poll_reaches_the_agent_as_its_question_and_answers(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        sent = world.discord.user_sends_poll(
            UID, "Which plan do I need?", ["Basic", "Pro", "Team"], multiselect=True
        )
        message = await forwarded(world, sent["id"])
        assert message["content"].splitlines() == [
            "📊 Poll: Which plan do I need?",
            "1. Basic",
            "2. Pro",
            "3. Team",
            "(several answers may be chosen)",
        ]


async def test_a_voice_message_is_uploaded_as_audio(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        sent = world.discord.user_sends_voice(UID, OGG, seconds=67.4)
        message = await forwarded(world, sent["id"])
        assert message["content"] == "🎤 Voice message (1:07)"
        [attachment] = message["attachments"]
        assert attachment["file_type"] == "audio"
        assert world.chatwoot.attachment_blobs[int(attachment["id"])] == OGG


async def test_a_sticker_and_a_reply_to_a_deleted_message_keep_their_words(
    tmp_path: Path,
) -> None:
    async with world_for(tmp_path) as world:
        sticker = world.discord.user_sends_sticker(UID, "Wave")
        reply = world.discord.user_replies_to_deleted(UID, "as I said before, it broke")
        assert (await forwarded(world, sticker["id"]))["content"] == "[sticker: Wave]"
        message = await forwarded(world, reply["id"])
        assert message["content"].splitlines() == [
            "↩️ (in reply to a message that was deleted)",
            "as I said before, it broke",
        ]


# ---------------------------------------------------------------------- the pure renderer


def test_dm_text_renders_each_shape() -> None:
    assert dm_text({"content": "hi"}) == "hi"
    assert dm_text({"content": "", "flags": 1 << 13, "attachments": [{"id": "1"}]}) == (
        "🎤 Voice message"
    )
    # a DM's own embeds are unfurls of links already in its text: not repeated
    assert dm_text({"content": "see https://x.test", "embeds": [{"title": "X"}]}) == (
        "see https://x.test"
    )
    # a reply to a message that still exists carries no marker
    assert dm_text(
        {
            "content": "yes",
            "message_reference": {"type": 0, "message_id": "5"},
            "referenced_message": {"id": "5", "content": "ok?"},
        }
    ) == "yes"
    forward = {
        "content": "",
        "message_reference": {"type": 1, "channel_id": "9"},
        "message_snapshots": [
            {"message": {"content": "a\n\nb", "attachments": [{"id": 7, "url": "u", "size": "x"}]}}
        ],
    }
    assert dm_text(forward) == "↪️ Forwarded message:\n> a\n>\n> b"
    assert dm_attachments(forward) == [
        {"id": "7", "url": "u", "size": 0, "filename": "file", "content_type": None}
    ]
    assert dm_attachments({"attachments": [{"id": "1"}, "junk", None]}) == []
    # a snapshot without the forward reference or flag is not read
    assert dm_text({"content": "x", "message_snapshots": forward["message_snapshots"]}) == "x"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["content", "flags", "poll", "sticker_items", "attachments", "message_reference",
     "message_snapshots", "referenced_message", "embeds", "type"]
)


@settings(max_examples=2000, deadline=None)
@given(st.dictionaries(KEYS, JSON | st.dictionaries(KEYS, JSON, max_size=4), max_size=8))
def test_dm_text_never_raises_on_any_shape(message: dict[str, Any]) -> None:
    assert isinstance(dm_text(message), str)
    assert all(isinstance(a, dict) for a in dm_attachments(message))


async def test_a_poison_job_is_dead_lettered_at_once_and_the_users_next_dm_flows(
    tmp_path: Path,
) -> None:
    from diswoot.store import queries as q

    async with world_for(tmp_path) as world:
        inbound = world.daemon.inbound
        # stored by an older version, or corrupted: the message lacks its author
        poison = {"message": {"id": "1300000000000000001", "channel_id": "1"}, "received_at": 0}
        await inbound.queue.submit("message", "1300000000000000001", UID, poison)
        started = trio.current_time()
        sent = world.discord.user_sends(UID, "my order is late")
        message = await forwarded(world, sent["id"])
        assert trio.current_time() - started < 3.0
        assert message["content"] == "my order is late"
        dead = await world.daemon.ctx.store.call(q.list_jobs, ("dead",))
        assert [(j.dedupe_key, j.attempts) for j in dead] == [("1300000000000000001", 1)]
        assert dead[0].last_error.startswith("malformed job: KeyError")


async def test_system_messages_carry_no_user_text_and_are_not_forwarded(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "hello")
        await forwarded(world, first["id"])
        channel_id, author = first["channel_id"], first["author"]
        for kind, text in ((3, ""), (6, ""), (7, "joined")):  # call, pin, member join
            world.discord.gateway.dispatch(
                "MESSAGE_CREATE",
                {**first, "id": str(int(first["id"]) + kind), "type": kind, "content": text,
                 "channel_id": channel_id, "author": author},
            )
        after = world.discord.user_sends(UID, "still there?")
        await forwarded(world, after["id"])
        sources = [
            m["source_id"]
            for c in world.chatwoot.conversations
            for m in world.chatwoot.messages_in(c)
            if m["message_type"] == 0
        ]
        assert sources == [first["id"], after["id"]]
