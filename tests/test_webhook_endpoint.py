"""POST /webhook: signatures, limits, malformed bodies, unknown events, other accounts."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import trio

from diswoot.chatwoot.signature import sign
from diswoot.store import queries as q
from diswoot.testing.harness import WEBHOOK_SECRET, World, bridge_world

USER = "80351110224678912"
CEILING = 30


def reply_body(**overrides: Any) -> dict[str, Any]:
    """An outgoing agent reply as Chatwoot sends it (chatwoot-api.md §2.4), trimmed."""
    body: dict[str, Any] = {
        "event": "message_created",
        "id": 9002,
        "message_type": "outgoing",
        "private": False,
        "content": "How can I help?",
        "content_type": "text",
        "content_attributes": {},
        "sender": {"id": 3, "name": "Bob", "type": "user"},
        "account": {"id": 1, "name": "Acme"},
        "inbox": {"id": 7, "name": "Discord"},
        "conversation": {
            "id": 42,
            "inbox_id": 7,
            "status": "open",
            "meta": {"sender": {"id": 55, "identifier": f"discord:{USER}", "type": "contact"}},
        },
    }
    body.update(overrides)
    return body


def signed(raw: bytes, *, age: float = 0.0, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    timestamp = str(int(time.time() - age))
    return {
        "X-Chatwoot-Timestamp": timestamp,
        "X-Chatwoot-Signature": sign(secret, timestamp, raw),
        "X-Chatwoot-Delivery": "0b7c5b3e-6f6e-4d1c-9a53-1d1a7a5f0c11",
    }


async def stored_jobs(world: World) -> list[Any]:
    return await world.daemon.ctx.store.call(q.list_jobs, ("pending", "done", "dead"))


async def test_signature_problems_are_rejected_and_store_nothing(tmp_path: Path) -> None:
    raw = json.dumps(reply_body()).encode()
    good = signed(raw)
    cases = {
        "missing": {},
        "no timestamp": {"X-Chatwoot-Signature": good["X-Chatwoot-Signature"]},
        "wrong secret": signed(raw, secret="not-the-secret"),
        "stale": signed(raw, age=301),
        "body only": {
            "X-Chatwoot-Timestamp": good["X-Chatwoot-Timestamp"],
            "X-Chatwoot-Signature": "sha256="
            + hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest(),
        },
        "other body": {**good, "X-Chatwoot-Signature": sign(WEBHOOK_SECRET, "1", raw)},
    }
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            for name, headers in cases.items():
                response = await world.post_webhook(raw, headers)
                assert response.status_code == 401, name
            assert await stored_jobs(world) == []
            assert await world.daemon.ctx.store.call(q.get_conversation, 42) is None
            response = await world.post_webhook(raw, good)
            assert response.status_code == 200
            assert response.json() == {"ok": True, "outcome": "stored"}


async def post_oversized(world: World, size: int) -> bytes:
    """Announce ``size`` bytes, send the first 64 KiB, read the answer.

    A raw socket, because an HTTP client writes the whole body before it reads the early 413.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", world.daemon.http_port)
    async with stream:
        head = (
            "POST /webhook HTTP/1.1\r\nHost: diswoot\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        ).encode()
        await stream.send_all(head + b"x" * 65536)
        return await stream.receive_some(65536)


async def test_oversized_and_malformed_bodies(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            answer = await post_oversized(world, 1024 * 1024 + 1)
            assert answer.startswith(b"HTTP/1.1 413")
            broken = json.dumps(reply_body(conversation={"inbox_id": 7})).encode()
            for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", broken):
                response = await world.post_webhook(raw, signed(raw))
                assert response.status_code == 400, raw
            assert await stored_jobs(world) == []


async def test_unknown_events_and_foreign_accounts_are_ignored(tmp_path: Path) -> None:
    bodies = {
        "unknown event": {"event": "contact_created", "id": 5, "name": "x"},
        "webwidget": {"event": "webwidget_triggered"},
        "other account": reply_body(account={"id": 2, "name": "Other"}),
        "other inbox": reply_body(inbox={"id": 8, "name": "Email"}),
        "typing": {
            "event": "conversation_typing_on",
            "is_private": False,
            "user": {"id": 3, "name": "Bob", "type": "user"},
            "conversation": {"id": 42, "inbox_id": 7, "account": {"id": 1}},
        },
        "unroutable": reply_body(conversation={"id": 43, "inbox_id": 7, "meta": {}}),
    }
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            for name, body in bodies.items():
                raw = json.dumps(body).encode()
                response = await world.post_webhook(raw, signed(raw))
                assert response.status_code == 200, name
                assert response.json()["outcome"] == "ignored", name
            assert await stored_jobs(world) == []


async def test_the_same_message_posted_twice_is_stored_once(tmp_path: Path) -> None:
    raw = json.dumps(reply_body()).encode()
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            first = await world.post_webhook(raw, signed(raw))
            second = await world.post_webhook(raw, signed(raw))
            assert [first.json()["outcome"], second.json()["outcome"]] == ["stored", "duplicate"]
            replies = [j for j in await stored_jobs(world) if j.kind == "reply"]
            assert [j.dedupe_key for j in replies] == ["msg:9002"]
            conv = await world.daemon.ctx.store.call(q.get_conversation, 42)
            assert conv is not None and conv.discord_id == USER


async def test_path_token_alternative_for_chatwoot_without_signing(tmp_path: Path) -> None:
    raw = json.dumps(
        {
            "event": "conversation_typing_off",
            "is_private": False,
            "user": {},
            "conversation": {"id": 42, "inbox_id": 7, "account": {"id": 1}},
        }
    ).encode()
    with trio.fail_after(CEILING):
        async with bridge_world(
            tmp_path, webhook_secret="", webhook_path_token="a-long-random-path-token"
        ) as world:
            assert (await world.post_webhook(raw, path="/webhook/wrong-token")).status_code == 404
            assert (await world.post_webhook(raw)).status_code == 401
            ok = await world.post_webhook(raw, path="/webhook/a-long-random-path-token")
            assert ok.status_code == 200
