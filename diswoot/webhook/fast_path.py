"""A thin ASGI path in front of Quart for authenticated Chatwoot webhooks.

It answers every ``POST /webhook`` it can authenticate and parse, handing the event to the same
``accept`` as the Quart route; anything else goes on to the Quart route with the body replayed,
so a webhook gets the same answer either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from diswoot.chatwoot.signature import verify
from diswoot.config import Config
from diswoot.metrics import Metrics
from diswoot.untrusted import BodyError, parse_json

IGNORED = json.dumps({"ok": True, "outcome": "ignored"}).encode()
Accept = Callable[[dict[str, Any]], Awaitable[tuple[dict[str, Any], int]]]
"""Stores (or refuses) an authentic webhook object: the JSON answer and its status."""


def ignorable(body: dict[str, Any]) -> bool:
    """A message event the bridge ignores whatever else it says: checked before parsing it.

    Chatwoot sends one for every forwarded DM (the ``incoming`` echo) and every private note;
    the outbound bridge delivers only public ``outgoing``/``template`` messages.
    """
    return body.get("event") in ("message_created", "message_updated") and (
        body.get("private") is True or body.get("message_type") == "incoming"
    )


class WebhookFastPath:
    """ASGI middleware for ``paths`` (see docs/modules.md); ``gate`` is the scope key
    set by the path-token gate (None: the route authenticates by signature).
    ``also_ignore``: more events the bridge is known to ignore (e.g. its own receipts'
    echoes, which the outbound bridge recognises from memory)."""

    def __init__(
        self,
        app: ASGIFramework,
        cfg: Config,
        metrics: Metrics,
        *,
        accept: Accept,
        paths: dict[str, str | None],
        max_body: int,
        clock: Callable[[], float] = time.time,
        also_ignore: Callable[[dict[str, Any]], bool] = lambda body: False,
    ) -> None:
        self.app = app
        self.accept = accept
        self.cfg = cfg
        self.metrics = metrics
        self.paths = paths
        self.max_body = max_body
        self.clock = clock
        self.also_ignore = also_ignore

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope.get("method") != "POST" or path not in self.paths:
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        announced = headers.get(b"content-length", b"0")
        if not announced.isdigit() or int(announced) > self.max_body:
            await self.app(scope, receive, send)  # Quart answers 413 before the body comes
            return
        chunks: list[bytes] = []
        size, more, messages = 0, True, []
        while more and size <= self.max_body:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            chunks.append(body)
            size += len(body)
            more = bool(message.get("more_body", False))
        if not more and size <= self.max_body:
            raw = b"".join(chunks)
            parsed = self._authenticated_object(headers, scope, self.paths[path], raw)
            if parsed is not None:
                if ignorable(parsed) or self.also_ignore(parsed):
                    self.metrics.webhooks.labels(outcome="ignored").inc()
                    await _answer(send, 200, IGNORED)
                else:
                    answer, status = await self.accept(parsed)
                    await _answer(send, status, json.dumps(answer).encode())
                return
        await self.app(scope, _replay(messages, receive), send)

    def _authenticated_object(
        self, headers: dict[bytes, bytes], scope: Scope, gate: str | None, raw: bytes
    ) -> dict[str, Any] | None:
        """The body as a JSON object when the request is authentic, else None (Quart decides)."""
        if gate is not None:
            if scope.get(gate) is not True:
                return None
        elif not self.cfg.webhook_secret:
            return None
        else:
            result = verify(
                self.cfg.webhook_secret,
                _header(headers, b"x-chatwoot-timestamp"),
                _header(headers, b"x-chatwoot-signature"),
                raw,
                now=self.clock(),
            )
            if not result.ok:
                return None
        try:
            body = parse_json(raw)
        except BodyError:
            return None
        return body if isinstance(body, dict) else None


async def _answer(send: ASGISendCallable, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


def _replay(messages: list[Any], receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """``receive`` that first hands back the messages already read."""
    pending = list(messages)

    async def replayed() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
