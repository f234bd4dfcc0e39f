"""The ASGI fast path answers authentic webhooks itself and hands everything else to Quart."""

from __future__ import annotations

import json
from typing import Any

from diswoot.chatwoot.signature import sign
from diswoot.config import test_config
from diswoot.metrics import Metrics
from diswoot.webhook.fast_path import WebhookFastPath

SECRET = "fast-path-secret"
NOW = 1_800_000_000.0
GATE = "gate.ok"


class Inner:
    """The app behind the fast path (Quart in the daemon): records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.calls.append((scope, body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


async def post(
    app: WebhookFastPath, raw: bytes, *, path: str = "/webhook", chunk: int = 7,
    headers: dict[str, str] | None = None, gate: bool | None = None,
) -> tuple[int, bytes]:
    parts = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    if gate is not None:
        scope[GATE] = gate
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def signed(raw: bytes, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(NOW))
    return {"X-Chatwoot-Timestamp": stamp, "X-Chatwoot-Signature": sign(secret, stamp, raw)}


class Accepted:
    """The bridge's ``accept``: records the objects handed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        self.bodies.append(body)
        if body.get("id") == 400:
            return {"error": "id is wrong"}, 400
        return {"ok": True, "outcome": "stored"}, 200


def fast_path(inner: Inner, accepted: Accepted | None = None, **cfg: Any) -> WebhookFastPath:
    return WebhookFastPath(
        inner, test_config(**cfg), Metrics(), accept=accepted or Accepted(),
        paths={"/webhook": None, "/gated": GATE}, max_body=1000, clock=lambda: NOW,
    )


ECHO = json.dumps({"event": "message_created", "message_type": "incoming", "id": 1}).encode()
NOTE = json.dumps({"event": "message_created", "message_type": "outgoing", "private": True})
REPLY = json.dumps({"event": "message_created", "message_type": "outgoing", "id": 2}).encode()


async def test_an_authentic_echo_or_note_is_answered_without_the_app() -> None:
    inner = Inner()
    app = fast_path(inner, webhook_secret=SECRET)
    for raw in (ECHO, NOTE.encode()):
        status, body = await post(app, raw, headers=signed(raw))
        assert (status, json.loads(body)) == (200, {"ok": True, "outcome": "ignored"})
    assert inner.calls == []
    assert app.metrics.webhooks.labels(outcome="ignored")._value.get() == 2


async def test_an_authentic_event_is_accepted_without_the_app() -> None:
    inner, accepted = Inner(), Accepted()
    app = fast_path(inner, accepted, webhook_secret=SECRET)
    status, body = await post(app, REPLY, headers=signed(REPLY))
    assert (status, json.loads(body)) == (200, {"ok": True, "outcome": "stored"})
    refused = json.dumps({"event": "message_created", "id": 400}).encode()
    status, body = await post(app, refused, headers=signed(refused))
    assert (status, json.loads(body)) == (400, {"error": "id is wrong"})
    assert [b["id"] for b in accepted.bodies] == [2, 400] and inner.calls == []


async def test_everything_else_reaches_the_app_with_the_whole_body() -> None:
    inner, accepted = Inner(), Accepted()
    app = fast_path(inner, accepted, webhook_secret=SECRET)
    forged = signed(ECHO, secret="not-the-secret")
    assert (await post(app, ECHO, headers=forged))[0] == 299  # Quart answers it (401)
    assert inner.calls[-1][1] == ECHO
    big = json.dumps({"event": "message_created", "message_type": "incoming", "x": "y" * 2000})
    assert (await post(app, big.encode(), headers=signed(big.encode())))[0] == 299  # 413 there
    assert inner.calls[-1][1] == big.encode()
    too_long = {**signed(ECHO), "Content-Length": "1001"}  # announced: Quart's early 413
    assert (await post(app, ECHO, headers=too_long))[0] == 299
    for bad in (b"[1]", b"{", b""):
        assert (await post(app, bad, headers=signed(bad)))[0] == 299  # 400 there
    await post(app, b"{}", path="/health")
    assert inner.calls[-1][0]["path"] == "/health"
    assert accepted.bodies == []


async def test_with_a_path_token_the_gate_decides() -> None:
    inner, accepted = Inner(), Accepted()
    app = fast_path(inner, accepted, webhook_path_token="tok")
    assert (await post(app, ECHO, path="/gated", gate=True))[0] == 200
    assert (await post(app, REPLY, path="/gated", gate=True))[0] == 200
    assert (await post(app, REPLY, path="/gated", gate=False))[0] == 299  # a 404 from the route
    assert (await post(app, REPLY, path="/webhook"))[0] == 299  # no secret: the route decides
    assert len(inner.calls) == 2 and [b["id"] for b in accepted.bodies] == [2]
