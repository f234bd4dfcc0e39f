"""Files of Discord DMs -> Chatwoot attachments, and the bounded downloader under them.

The end-to-end tests run the real daemon against FakeDiscord (whose CDN serves the files at
signed, expiring URLs) and FakeChatwoot, on the real clock; the downloader's own tests use
httpx.MockTransport (no sockets).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from diswoot.bridge.downloads import (
    MAX_REDIRECTS,
    Downloaded,
    DownloadFailed,
    DownloadUnavailable,
    NotAllowed,
    OriginPolicy,
    TooLarge,
    download,
    open_download,
)
from diswoot.testing.harness import World, bridge_world

UID = "80351110224678912"
TIMEOUT = 30
MIB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(48_000)
PDF = b"%PDF-1.7\n" + os.urandom(20_000)


@asynccontextmanager
async def world_for(tmp_path: Path, **config: Any) -> AsyncIterator[World]:
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, greeting_enabled=False, **config) as world:
            world.discord.add_user(UID, "alice")
            yield world
            assert world.chatwoot.violations == []
            assert world.discord.violations == []


async def forwarded(world: World, message_id: str) -> dict[str, Any]:
    """Wait for the Chatwoot message carrying the DM ``message_id``; return it (REST shape)."""

    def find() -> dict[str, Any] | None:
        for conversation_id in world.chatwoot.conversations:
            for message in world.chatwoot.messages_in(conversation_id):
                if message["source_id"] == message_id:
                    return message
        return None

    found: dict[str, Any] = await world.wait_for(find, timeout=TIMEOUT)
    return found


def blob(world: World, attachment: dict[str, Any]) -> bytes:
    return world.chatwoot.attachment_blobs[int(attachment["id"])]


def message_posts(world: World) -> list[Any]:
    return [
        r for r in world.chatwoot.requests if r.method == "POST" and r.path.endswith("/messages")
    ]


# ---------------------------------------------------------------------- end to end


async def test_an_image_dm_arrives_as_an_uploaded_image(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        sent = world.discord.user_sends(
            UID,
            "here is the receipt",
            attachments=[
                ("receipt.png", "image/png", PNG),
            ],
        )
        message = await forwarded(world, sent["id"])
        assert message["content"] == "here is the receipt"
        [attachment] = message["attachments"]
        assert attachment["file_type"] == "image"
        assert attachment["content_type"] == "image/png"
        assert blob(world, attachment) == PNG
        assert "cdn" not in (message["content"] or "") and "http" not in message["content"]
        [post] = message_posts(world)
        [part] = post.files
        assert (part.field, part.filename, part.content_type) == (
            "attachments[]",
            "receipt.png",
            "image/png",
        )


async def test_text_and_files_of_one_dm_stay_one_message_in_order(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        sent = world.discord.user_sends(
            UID,
            "two files",
            attachments=[
                ("photo.png", "image/png", PNG),
                ("invoice.pdf", "application/pdf", PDF),
            ],
        )
        message = await forwarded(world, sent["id"])
        assert [(a["file_type"], blob(world, a)) for a in message["attachments"]] == [
            ("image", PNG),
            ("file", PDF),
        ]
        assert len(message_posts(world)) == 1


async def test_a_file_without_text_has_no_placeholder_text(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        sent = world.discord.user_sends(UID, "", attachments=[("a.png", "image/png", PNG)])
        message = await forwarded(world, sent["id"])
        assert message["content"] is None
        assert [blob(world, a) for a in message["attachments"]] == [PNG]


async def test_an_over_cap_file_becomes_a_link_with_a_note_above_it(tmp_path: Path) -> None:
    big = os.urandom(MIB + 1)
    async with world_for(tmp_path, attachment_max_mb=1) as world:
        sent = world.discord.user_sends(
            UID,
            "a video and a photo",
            attachments=[
                ("clip.mp4", "video/mp4", big),
                ("photo.png", "image/png", PNG),
            ],
        )
        message = await forwarded(world, sent["id"])
        assert [blob(world, a) for a in message["attachments"]] == [PNG]  # the small one
        text, note, link = message["content"].split("\n")
        assert text == "a video and a photo"
        assert note.startswith("📎 clip.mp4 is larger than 1 MB, so it was not uploaded (1.1 MB")
        assert "link valid until" in note
        big_url = sent["attachments"][0]["url"]
        assert link == big_url
        async with httpx.AsyncClient() as http:  # the link is the file
            assert (await http.get(link)).content == big


async def test_an_expired_cdn_url_is_refreshed_from_the_message(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        world.chatwoot.down = True  # the DM waits, stored, while its URL expires
        sent = world.discord.user_sends(UID, "receipt", attachments=[("r.png", "image/png", PNG)])
        await world.wait_for(lambda: world.daemon.inbound.queue.counters.retries >= 1)
        old_url = sent["attachments"][0]["url"]
        world.discord.expire_cdn_urls()
        async with httpx.AsyncClient() as http:
            assert (await http.get(old_url)).status_code == 403
        world.chatwoot.down = False
        world.daemon.inbound.queue.wake()
        message = await forwarded(world, sent["id"])
        assert [blob(world, a) for a in message["attachments"]] == [PNG]
        [refetch] = [
            r for r in world.discord.requests if r.method == "GET" and r.path.endswith("/messages")
        ]
        assert refetch.query == {"after": str(int(sent["id"]) - 1), "limit": "1"}


async def test_the_link_to_an_over_cap_file_is_fresh_when_the_job_runs_late(
    tmp_path: Path,
) -> None:
    async with world_for(tmp_path, attachment_max_mb=1) as world:
        world.chatwoot.down = True
        big = os.urandom(MIB + 1)
        sent = world.discord.user_sends(UID, "", attachments=[("big.zip", "application/zip", big)])
        await world.wait_for(lambda: world.daemon.inbound.queue.counters.retries >= 1)
        world.discord.expire_cdn_urls()
        world.daemon.ctx.clock = lambda: time.time() + 2 * 86400  # past the URL's "ex"
        world.chatwoot.down = False
        world.daemon.inbound.queue.wake()
        message = await forwarded(world, sent["id"])
        note, link = message["content"].split("\n")
        assert note.startswith("📎 big.zip is larger than 1 MB")
        assert link == sent["attachments"][0]["url"]  # re-signed by Discord meanwhile
        async with httpx.AsyncClient() as http:
            assert (await http.get(link)).content == big


async def test_a_file_gone_from_discord_becomes_a_note_and_the_text_arrives(
    tmp_path: Path,
) -> None:
    async with world_for(tmp_path) as world:
        world.chatwoot.down = True
        sent = world.discord.user_sends(UID, "see file", attachments=[("r.png", "image/png", PNG)])
        await world.wait_for(lambda: world.daemon.inbound.queue.counters.retries >= 1)
        old_url = sent["attachments"][0]["url"]
        world.discord.expire_cdn_urls()
        world.discord.user_deletes(UID, sent["id"])  # the message (and its file) is gone
        world.chatwoot.down = False
        world.daemon.inbound.queue.wake()
        message = await forwarded(world, sent["id"])
        assert "attachments" not in message  # REST omits an empty list
        text, note, link = message["content"].split("\n")
        assert text == "see file"
        assert note.startswith("📎 r.png could not be downloaded (deleted in Discord)")
        assert link == old_url


# ---------------------------------------------------------------------- the downloader


ALLOWED = OriginPolicy.build(
    origins=["https://cdn.test", "https://cw.test"], hosts=["store.test"], where="the tests"
)


async def fetch(http: httpx.AsyncClient, url: str, *, max_bytes: int) -> Downloaded:
    return await download(http, url, max_bytes=max_bytes, policy=ALLOWED)


def serve(routes: dict[str, httpx.Response]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return routes.get(request.url.path, httpx.Response(404))

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_download_returns_bytes_type_and_name() -> None:
    routes = {
        "/files/a b.png": httpx.Response(
            200, content=b"png!", headers={"content-type": "image/png; charset=binary"}
        ),
        "/named": httpx.Response(
            200,
            content=b"x",
            headers={"content-disposition": "attachment; filename*=UTF-8''na%C3%AFve.txt"},
        ),
    }
    with trio.fail_after(5):
        async with serve(routes) as http:
            got = await fetch(http, "https://cdn.test/files/a%20b.png?ex=1", max_bytes=10)
            assert (got.data, got.content_type, got.filename) == (b"png!", "image/png", "a b.png")
            named = await fetch(http, "https://cdn.test/named", max_bytes=10)
            assert named.filename == "naïve.txt"


async def test_download_stops_at_the_announced_or_streamed_size() -> None:
    def streamed() -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 1000

        return httpx.Response(200, content=body())  # no Content-Length: streamed, chunked

    with trio.fail_after(5):
        async with serve({"/big": httpx.Response(200, content=b"x" * 5000)}) as http:
            with pytest.raises(TooLarge) as announced:
                await fetch(http, "https://cdn.test/big?hm=secret", max_bytes=4999)
            assert announced.value.size == 5000
            assert "secret" not in str(announced.value)
            assert (
                await fetch(http, "https://cdn.test/big", max_bytes=5000)
            ).data == b"x" * 5000
        async with serve({"/stream": streamed()}) as http:
            with pytest.raises(TooLarge):
                await fetch(http, "https://cdn.test/stream", max_bytes=2500)
        gc.collect()  # an abandoned body left no suspended generator behind (trio would warn)
        async with serve({"/stream": streamed()}) as http:
            opened = open_download(
                http, "https://cdn.test/stream", max_bytes=10_000, policy=ALLOWED
            )
            async with opened as stream:
                assert stream.length is None
                async with aclosing(stream.chunks()) as chunks:
                    assert b"".join([c async for c in chunks]) == b"x" * 10_000


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (403, DownloadFailed),
        (404, DownloadFailed),
        (429, DownloadUnavailable),
        (500, DownloadUnavailable),
        (503, DownloadUnavailable),
    ],
)
async def test_download_errors_are_classified(status: int, error: type[Exception]) -> None:
    with trio.fail_after(5):
        async with serve({"/f": httpx.Response(status)}) as http:
            with pytest.raises(error):
                await fetch(http, "https://cdn.test/f", max_bytes=10)


async def test_a_network_failure_is_transient_and_a_bad_url_permanent() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with trio.fail_after(5):
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
            with pytest.raises(DownloadUnavailable):
                await fetch(http, "https://cdn.test/f", max_bytes=10)
        async with httpx.AsyncClient() as http:
            with pytest.raises(DownloadFailed):
                await fetch(http, "ftp://cdn.test/f", max_bytes=10)


async def test_redirects_are_followed_only_within_the_policy() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        path = request.url.path
        if path.startswith("/hop/"):
            hop = int(path.rsplit("/", 1)[1])
            if hop < 10:
                return httpx.Response(302, headers={"location": f"/hop/{hop + 1}"})
        redirects = {
            "/blob": "https://store.test/real",
            "/away": "https://evil.test/real",
            "/file": "file:///etc/passwd",
        }
        if path in redirects:
            return httpx.Response(302, headers={"location": redirects[path]})
        return httpx.Response(200, content=b"data")

    with trio.fail_after(5):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            got = await download(http, "https://cw.test/blob", max_bytes=10, policy=ALLOWED)
            assert got.data == b"data"
            assert seen == ["https://cw.test/blob", "https://store.test/real"]
            for url in ("https://evil.test/x", "http://cw.test/x", "https://cw.test:8443/x"):
                with pytest.raises(NotAllowed):
                    await download(http, url, max_bytes=10, policy=ALLOWED)
            for url in ("https://cw.test/away", "https://cw.test/file"):
                seen.clear()
                with pytest.raises(NotAllowed):
                    await download(http, url, max_bytes=10, policy=ALLOWED)
                assert seen == [url]  # the redirect target was never requested
            five = f"https://cw.test/hop/{10 - MAX_REDIRECTS}"
            assert (await download(http, five, max_bytes=10, policy=ALLOWED)).data == b"data"
            seen.clear()
            six = f"https://cw.test/hop/{10 - MAX_REDIRECTS - 1}"
            with pytest.raises(DownloadFailed, match="redirects more than 5 times"):
                await download(http, six, max_bytes=10, policy=ALLOWED)
            assert len(seen) == MAX_REDIRECTS + 1


def test_policy_hosts_ports_and_schemes() -> None:
    policy = OriginPolicy.build(
        origins=["http://127.0.0.1:3000"],
        hosts=["files.example.com", "minio.internal:9000", "[::1]:8080"],
        where="the tests",
    )
    allowed = [
        "http://127.0.0.1:3000/rails/x",
        "https://files.example.com/a",
        "http://files.example.com/a",
        "https://FILES.example.com./a",
        "http://minio.internal:9000/b",
        "https://minio.internal:9000/b",
        "http://[::1]:8080/c",
    ]
    refused = [
        "https://127.0.0.1:3000/rails/x",
        "http://127.0.0.1:3001/rails/x",
        "http://localhost:3000/rails/x",
        "https://files.example.com:8443/a",
        "http://minio.internal/b",
        "http://files.example.com.evil.test/a",
        "http://127.0.0.1:3000@evil.test/",
        "http://127.0.0.1:3000\\@evil.test/",
        "http://0x7f.0.0.1:3000/",
        "ftp://files.example.com/a",
        "/relative/path",
    ]
    assert [u for u in allowed if not policy.allows(httpx.URL(u))] == []
    assert [u for u in refused if policy.allows(httpx.URL(u))] == []
