"""Attachment URLs are fetched only from allowed origins (no server-side request forgery).

A plain HTTP server on another 127.0.0.1 port stands in for an internal service (or a media
host named in CHATWOOT_MEDIA_HOSTS); it records every request it gets, so "never fetched"
is an observed fact.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from http_head import read_head
from test_attachments_outbound import uploaded
from test_outbound import CEILING, USER, agent_conversation, assert_no_violations
from test_webhook_endpoint import signed

from diswoot.bridge.downloads import MAX_REDIRECTS
from diswoot.testing.harness import World, bridge_world

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class HttpOrigin:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records the targets it was asked for."""

    respond: Callable[[str], Answer]
    seen: list[str] = field(default_factory=list)
    port: int = 0

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = await read_head(stream)
            if head is None:
                return
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            self.seen.append(target)
            status, headers, body = self.respond(target)
            lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def internal_service(_target: str) -> Answer:
    return 200, {"Content-Type": "text/plain"}, b"internal secrets"


async def reply_with_data_url(world: World, cid: int, url: str, name: str = "report.txt") -> int:
    """A genuine agent reply with a file whose signed webhook names ``url`` as its data_url."""
    reply = await world.chatwoot.agent_reply(
        cid, "See attached", attachments=[(name, "text/plain", b"0123456789")], deliver=False
    )
    body: dict[str, Any] = next(
        b
        for b in world.chatwoot.lost_webhooks
        if b["event"] == "message_created" and b["id"] == reply["id"]
    )
    body["attachments"][0]["data_url"] = url
    raw = json.dumps(body).encode()
    response = await world.post_webhook(raw, signed(raw))
    assert response.json()["outcome"] == "stored"
    await world.wait_delivered(reply["id"])
    return int(reply["id"])


def only_dm(world: World) -> dict[str, Any]:
    [message] = world.discord.dm_messages(USER)
    return message


async def test_an_off_origin_data_url_is_never_fetched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            internal = HttpOrigin(internal_service)
            await internal.serve(nursery)
            async with bridge_world(tmp_path) as world:
                cid = await agent_conversation(world)
                url = internal.url("/latest/meta-data/iam/report.txt")
                await reply_with_data_url(world, cid, url)
                message = only_dm(world)
                assert message["content"] == f"See attached\n📎 report.txt (10 bytes): {url}"
                assert message["attachments"] == []
                assert_no_violations(world)
            nursery.cancel_scope.cancel()
    assert internal.seen == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("is not an allowed download origin" in w for w in warnings)


async def test_media_hosts_are_fetched_but_their_redirects_are_checked(tmp_path: Path) -> None:
    def media(target: str) -> Answer:
        if target.startswith("/hop/"):
            return 302, {"Location": f"/hop/{int(target[5:]) + 1}"}, b""
        if target == "/escape.txt":
            return 302, {"Location": internal.url("/escape.txt")}, b""
        if target == "/file-scheme.txt":
            return 302, {"Location": "file:///etc/passwd"}, b""
        return 200, {"Content-Type": "text/plain"}, b"media bytes"

    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            internal = HttpOrigin(internal_service)
            files = HttpOrigin(media)
            await internal.serve(nursery)
            await files.serve(nursery)
            async with bridge_world(
                tmp_path, chatwoot_media_hosts=(f"127.0.0.1:{files.port}",)
            ) as world:
                cid = await agent_conversation(world)
                await reply_with_data_url(world, cid, files.url("/ok.txt"), "ok.txt")
                assert uploaded(world, only_dm(world)) == [
                    ("ok.txt", "text/plain", b"media bytes")
                ]
                for path in ("/escape.txt", "/file-scheme.txt", "/hop/0"):
                    world.discord.messages.clear()
                    files.seen.clear()
                    name = path.rsplit("/", 1)[1]
                    await reply_with_data_url(world, cid, files.url(path), name)
                    message = only_dm(world)
                    assert message["attachments"] == [], path
                    assert files.url(path) in message["content"], path
                    hops = MAX_REDIRECTS + 1 if path.startswith("/hop/") else 1
                    assert len(files.seen) == hops, (path, files.seen)
            nursery.cancel_scope.cancel()
    assert internal.seen == []


async def test_dm_files_come_only_from_discords_cdn(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            internal = HttpOrigin(internal_service)
            await internal.serve(nursery)
            async with bridge_world(tmp_path) as world:
                world.discord.add_user(USER, "alice")
                first = world.discord.user_sends(USER, "hello")
                await world.wait_for(lambda: world.chatwoot.conversation_for(f"discord:{USER}"))
                url = internal.url("/admin/export.csv")
                attachment = {
                    "id": str(int(first["id"]) + 1),
                    "filename": "export.csv",
                    "size": 16,
                    "url": url,
                    "proxy_url": url,
                    "content_type": "text/csv",
                }
                forged = {**first, "id": str(int(first["id"]) + 2), "content": "see file"}
                forged["attachments"] = [attachment]
                world.discord.gateway.dispatch("MESSAGE_CREATE", {**forged, "channel_type": 1})
                [conversation] = world.chatwoot.conversation_for(f"discord:{USER}")

                def posted() -> list[str]:
                    return [
                        m["content"] or ""
                        for m in world.chatwoot.messages_in(conversation["id"])
                        if "export.csv" in (m["content"] or "")
                    ]

                [content] = await world.wait_for(posted)
                assert url in content and "could not be downloaded" in content
            nursery.cancel_scope.cancel()
    assert internal.seen == []
