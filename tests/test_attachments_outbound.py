"""Agent attachments reach the DM as uploaded files (or links when they cannot be uploaded)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio
from test_outbound import CEILING, USER, agent_conversation, assert_no_violations, jobs

from diswoot.bridge.delivery import deliver_parts
from diswoot.bridge.reply_layout import DISCORD_MAX_FILES, reply_parts
from diswoot.store import queries as q
from diswoot.testing.harness import World, bridge_world

MIB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)


def uploaded(world: World, message: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """``(filename, content_type, bytes)`` of the files Discord stored for a message."""
    files = []
    for attachment in message["attachments"]:
        path = attachment["url"].split("?", 1)[0].removeprefix(world.discord.root_url)
        content_type, data = world.discord.attachments[path]
        files.append((attachment["filename"], content_type, data))
    return files


async def test_agent_file_arrives_as_an_uploaded_file_with_the_same_bytes(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            reply = await world.chatwoot.agent_reply(
                cid, "Here is the photo", attachments=[("cat.png", "image/png", PNG)]
            )
            await world.wait_delivered(reply["id"])
            [message] = world.discord.dm_messages(USER)
            assert message["content"] == "Here is the photo"
            assert uploaded(world, message) == [("cat.png", "image/png", PNG)]
            send = next(r for r in world.discord.requests if r.files)
            assert [f.name for f in send.files] == ["files[0]"]
            assert send.json["attachments"] == [{"id": "0", "filename": "cat.png"}]
            assert_no_violations(world)


async def test_a_file_over_the_upload_limit_becomes_a_link_to_its_data_url(
    tmp_path: Path,
) -> None:
    big = os.urandom(MIB + MIB // 2)
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, discord_upload_limit_mb=1) as world:
            cid = await agent_conversation(world)
            reply = await world.chatwoot.agent_reply(
                cid,
                "Two files",
                attachments=[("big.bin", "application/pdf", big), ("cat.png", "image/png", PNG)],
            )
            await world.wait_delivered(reply["id"])
            [message] = world.discord.dm_messages(USER)
            data_url = reply["attachments"][0]["data_url"]
            assert "/blobs/redirect/" in data_url  # the permanent address, not the disk one
            assert message["content"] == f"Two files\n📎 big.bin (1.6 MB): {data_url}"
            assert uploaded(world, message) == [("cat.png", "image/png", PNG)]
            assert_no_violations(world)


async def test_eleven_files_arrive_as_two_messages_in_order(tmp_path: Path) -> None:
    files = [(f"f{i:02}.txt", "text/plain", f"file {i}".encode()) for i in range(11)]
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            reply = await world.chatwoot.agent_reply(cid, "Eleven files", attachments=files)
            await world.wait_delivered(reply["id"])
            first, second = world.discord.dm_messages(USER)
            assert first["content"] == "Eleven files" and second["content"] == ""
            assert uploaded(world, first) + uploaded(world, second) == files
            assert len(first["attachments"]) == DISCORD_MAX_FILES
            links = await world.daemon.ctx.store.call(q.links_for_chatwoot, reply["id"])
            assert [link.discord_message_id for link in links] == [first["id"], second["id"]]
            assert_no_violations(world)


async def test_discord_refusing_the_upload_falls_back_to_links(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            world.discord.fail_next("POST", r"/channels/\d+/messages$", 413, code=40005)
            reply = await world.chatwoot.agent_reply(
                cid, "Photo", attachments=[("cat.png", "image/png", PNG)]
            )
            await world.wait_delivered(reply["id"])
            [message] = world.discord.dm_messages(USER)
            data_url = reply["attachments"][0]["data_url"]
            assert message["content"] == f"Photo\n📎 cat.png ({len(PNG) // 1000} KB): {data_url}"
            assert message["attachments"] == []
            assert_no_violations(world)


async def test_a_file_larger_than_announced_is_linked_when_downloaded(tmp_path: Path) -> None:
    """The size is only known for sure while downloading: the cap applies to the bytes."""
    big = os.urandom(MIB + 1)
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, discord_upload_limit_mb=1) as world:
            cid = await agent_conversation(world)
            reply = await world.chatwoot.agent_reply(
                cid, "x", attachments=[("big.bin", "application/octet-stream", big)], deliver=False
            )
            attachment = {**reply["attachments"][0], "file_size": None}  # an old Chatwoot
            payload = {"content": "Report", "attachments": [attachment]}
            [part] = reply_parts(payload, upload_limit=MIB)
            assert [f["filename"] for f in part["files"]] == ["big.bin"]
            ctx = world.daemon.ctx
            job = await ctx.store.call(
                q.add_job, "test", "k", "lane", "reply", {"parts": [part]}, ctx.clock()
            )
            assert job is not None
            assert await deliver_parts(ctx, job, USER) is None
            [message] = world.discord.dm_messages(USER)
            assert message["content"] == f"Report\n📎 big.bin: {attachment['data_url']}"
            assert message["attachments"] == []
            assert_no_violations(world)


async def test_files_survive_a_crash_before_delivery_and_arrive_once(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            world.discord.fail_next("POST", r"/channels/\d+/messages$", 429, retry_after=60)
            reply = await world.chatwoot.agent_reply(
                cid, "Photo", attachments=[("cat.png", "image/png", PNG)]
            )
            await world.wait_for(lambda: world.discord.responses_429 == 1)
            await world.crash()
            await world.start()
            await world.wait_delivered(reply["id"])
            [message] = world.discord.dm_messages(USER)
            assert uploaded(world, message) == [("cat.png", "image/png", PNG)]
            [job] = [j for j in await jobs(world, "outbound") if j.kind == "reply"]
            assert job.state == "done" and len(job.payload["sent"]) == 1


def _attachment(name: str, size: int | None, file_type: str = "file") -> dict[str, Any]:
    return {
        "data_url": f"https://chat.example/rails/active_storage/blobs/redirect/x/{name}",
        "file_type": file_type,
        "file_size": size,
    }


def test_files_ride_with_the_last_chunk_and_batches_respect_discords_limits() -> None:
    limit = 10 * MIB
    text = "word " * 500  # two chunks, room for ten link lines in the second
    parts = reply_parts(
        {
            "content": text,
            "attachments": [_attachment(f"{i}.png", 1000, "image") for i in range(12)],
            "reply_to": "1250000000000000001",
        },
        upload_limit=limit,
    )
    assert [len(p.get("files", [])) for p in parts] == [0, 10, 2]
    assert "message_reference" in parts[0] and "content" not in parts[2]
    names = [f["filename"] for p in parts for f in p.get("files", [])]
    assert names == [f"{i}.png" for i in range(12)]
    # unknown sizes count as the limit: only two 10 MiB files fit the 25 MiB request
    unknown = reply_parts(
        {"content": "", "attachments": [_attachment(f"{i}.bin", None) for i in range(5)]},
        upload_limit=limit,
    )
    assert [len(p["files"]) for p in unknown] == [2, 2, 1]


def test_a_full_last_chunk_leaves_the_files_to_their_own_message() -> None:
    parts = reply_parts(
        {"content": "a" * 2000, "attachments": [_attachment("cat.png", 10, "image")]},
        upload_limit=MIB,
    )
    assert [sorted(p) for p in parts] == [["content"], ["files"]]
    assert parts[1]["files"][0]["link"].endswith("/cat.png")
    # every part keeps room for the link lines sent instead of its files
    assert all(
        len(p.get("content", "")) + sum(len(f["link"]) + 1 for f in p.get("files", [])) <= 2000
        for p in parts
    )
