"""A fake Discord gateway (v10) that follows the protocol, for tests and the sandbox.

Serve it on 127.0.0.1 (`serve`), or in-process over memory streams (`serve_memory` plus
`open_memory_websocket` as run_gateway's `open_websocket`) for autojump-clock tests. Time uses
trio's clock, so MockClock works.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)

from diswoot.gateway.protocol import MAX_PAYLOAD_BYTES, Op, ZlibStreamDeflater

PRIVILEGED_INTENTS = 1 << 1 | 1 << 8 | 1 << 15  # GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
SEND_LIMIT, SEND_WINDOW = 120, 60.0
MEMORY_URL = "ws://fake-gateway.invalid"
DEFAULT_BOT_USER: dict[str, Any] = {
    "id": "1100000000000000000",
    "username": "diswoot-test",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "bot": True,
}
_UNAUTHENTICATED_OPS = frozenset({Op.HEARTBEAT, Op.IDENTIFY, Op.RESUME})
_KNOWN_CLIENT_OPS = frozenset({1, 2, 3, 4, 6, 8, 31, 43})


@dataclass
class _Session:
    session_id: str
    seq: int = 0
    history: list[tuple[int, Any, Any]] = field(default_factory=list)
    valid: bool = True


class _Client:
    """One accepted websocket and its outgoing queue."""

    def __init__(self, ws: WebSocketConnection, stream: trio.abc.Stream, compress: bool) -> None:
        self.ws = ws
        self.stream = stream
        self.deflater = ZlibStreamDeflater() if compress else None
        self.outbox_tx, self.outbox_rx = trio.open_memory_channel[dict[str, Any] | str](
            float("inf")  # the fake never drops or blocks on what it has to say
        )
        self.session: _Session | None = None
        self.live = False  # IDENTIFY->READY or RESUME->RESUMED done: dispatches go out directly
        self.server_closing = False
        self.close_done = trio.Event()  # set once a server-side close or drop has finished
        self.sends: deque[float] = deque()

    def queue(self, op: int, d: Any = None, *, s: int | None = None, t: str | None = None) -> None:
        self.outbox_tx.send_nowait({"op": op, "d": d, "s": s, "t": t})


class FakeGateway:
    """See the module docstring; public attributes record what clients did."""

    def __init__(
        self,
        *,
        token: str = "test-token",  # noqa: S107 - a fake credential
        bot_user: dict[str, Any] | None = None,
        application_id: str = "1200000000000000000",
        heartbeat_interval_ms: int = 41250,
        ack_heartbeats: bool = True,
        allowed_intents: int = (1 << 12) | (1 << 14) | (1 << 13) | 1,
        privileged_intents_enabled: bool = False,
    ) -> None:
        self.token = token
        self.bot_user = dict(bot_user or DEFAULT_BOT_USER)
        self.application_id = application_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.ack_heartbeats = ack_heartbeats
        self.allowed_intents = allowed_intents
        self.privileged_intents_enabled = privileged_intents_enabled
        self.url = ""
        self.session_start_limit: dict[str, Any] = {
            "total": 1000,
            "remaining": 1000,
            "reset_after": 14_400_000,
            "max_concurrency": 1,
        }
        self.received: list[dict[str, Any]] = []
        self.identifies: list[dict[str, Any]] = []
        self.identify_times: list[float] = []  # trio.current_time() of each IDENTIFY
        self.resumes: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.heartbeat_times: list[float] = []
        self.presences: list[dict[str, Any]] = []
        self.connections = 0
        self.paths: list[str] = []  # request path + query of every connection
        self.close_codes: list[int] = []
        self.handshakes = 0  # READY or RESUMED sent
        self._listen_scope: trio.CancelScope | None = None
        self._bound: tuple[str, int] | None = None
        self._handshakes_waited = 0
        self._handshake_event = trio.Event()
        self._sessions: dict[str, _Session] = {}
        self._session: _Session | None = None  # where dispatch() goes
        self._pending: list[tuple[str, Any]] = []  # dispatched while no valid session exists
        self._client: _Client | None = None  # the newest open connection
        self._nursery: trio.Nursery | None = None

    # -- serving -----------------------------------------------------------------------------

    async def serve(self, nursery: trio.Nursery, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on a real TCP port; returns (and sets) `url`, e.g. ws://127.0.0.1:54321."""
        self._nursery = nursery
        listeners: list[trio.SocketListener] = await nursery.start(self._listen, host, port)
        bound = listeners[0].socket.getsockname()[1]
        self._bound = (host, bound)
        self.url = f"ws://{host}:{bound}"
        return self.url

    async def _listen(
        self, host: str, port: int, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert self._nursery is not None
        with trio.CancelScope() as scope:
            self._listen_scope = scope
            listeners = await trio.open_tcp_listeners(port, host=host)
            await trio.serve_listeners(
                self.handle_stream, listeners, handler_nursery=self._nursery,
                task_status=task_status,
            )

    def stop_listening(self) -> None:
        """Refuse new TCP connections (as a gateway that is down); open ones carry on."""
        if self._listen_scope is not None:
            self._listen_scope.cancel()
            self._listen_scope = None

    async def listen_again(self) -> None:
        """Accept connections again, on the same port as before."""
        if self._nursery is None or self._bound is None:
            raise RuntimeError("call serve() first")
        if self._listen_scope is None:
            await self._nursery.start(self._listen, *self._bound)

    def serve_memory(self, nursery: trio.Nursery) -> str:
        """Serve in-process only (see open_memory_websocket); returns a placeholder url."""
        self._nursery = nursery
        self.url = MEMORY_URL
        return self.url

    @asynccontextmanager
    async def open_memory_websocket(
        self, url: str, max_message_size: int
    ) -> AsyncIterator[WebSocketConnection]:
        """A client websocket over memory streams into this fake (run_gateway's opener)."""
        if self._nursery is None:
            raise RuntimeError("call serve() or serve_memory() first")
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self.handle_stream, server_stream)
        parts = urlsplit(url)
        resource = parts.path + (f"?{parts.query}" if parts.query else "")
        async with client_stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(
                nursery,
                cast(trio.SocketStream, client_stream),
                parts.netloc,
                resource,
                max_message_size=max_message_size,
            )
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one client connection on `stream` until it closes."""
        async with stream, trio.open_nursery() as nursery:
            try:
                request = await wrap_server_stream(nursery, stream, max_message_size=1 << 20)
                ws = await request.accept()
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()
                return
            try:
                await self._serve_client(_Client(ws, stream, _wants_zlib(request.path)))
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()

    # -- test controls -----------------------------------------------------------------------

    def dispatch(self, event: Any, data: Any) -> None:
        """Send a dispatch now, or buffer it for RESUME replay if the client is away.

        Before any session exists (or after invalidate_sessions), it is delivered after the next
        READY instead.  ``event`` (the ``t``) and ``data`` (the ``d``) are sent as given, so a
        test can send malformed dispatches; each takes a sequence number like any other.
        """
        session = self._session
        if session is None or not session.valid:
            self._pending.append((event, data))
            return
        session.seq += 1
        session.history.append((session.seq, event, data))
        client = self._client
        if client is not None and client.live and client.session is session:
            client.queue(Op.DISPATCH, data, s=session.seq, t=event)

    def send_frame(self, text: str) -> None:
        """Send one raw text frame to the live client (e.g. one that is not JSON)."""
        if self._client is None:
            raise RuntimeError("no client is connected")
        self._client.outbox_tx.send_nowait(text)

    @property
    def last_seq(self) -> int | None:
        """The sequence number of the newest dispatch of the current session."""
        return None if self._session is None else self._session.seq

    def send_op(self, op: int, d: Any) -> None:
        """Send a raw opcode (e.g. 7 reconnect, 9 invalid session, 1 heartbeat request)."""
        if self._client is None:
            raise RuntimeError("no client is connected")
        self._client.queue(op, d)

    async def close_client(self, code: int, reason: str = "") -> None:
        """Close the live socket from the server side with `code`."""
        if self._client is not None:
            await self._close(self._client, code, reason)

    async def drop_client(self) -> None:
        """Drop the live connection's TCP stream with no close frame."""
        client = self._client
        if client is not None:
            client.server_closing = True
            client.live = False  # from now on dispatches wait for a RESUME
            await client.stream.aclose()
            client.close_done.set()

    def invalidate_sessions(self) -> None:
        """Forget every session: the next RESUME is answered with op 9 d=false."""
        for session in self._sessions.values():
            session.valid = False

    async def wait_ready(self) -> None:
        """Wait for one more completed IDENTIFY->READY or RESUME->RESUMED handshake.

        Each call consumes one handshake: the n-th call returns once n handshakes happened.
        """
        self._handshakes_waited += 1
        await self.wait_handshakes(self._handshakes_waited)

    async def wait_handshakes(self, count: int) -> None:
        """Wait until `count` handshakes have completed in total."""
        while self.handshakes < count:
            await self._handshake_event.wait()

    # -- protocol ----------------------------------------------------------------------------

    async def _serve_client(self, client: _Client) -> None:
        self.connections += 1
        self.paths.append(client.ws.path or "")
        query = parse_qs(urlsplit(client.ws.path or "").query)
        if query.get("v") != ["10"]:
            await self._close(client, 4012, "Invalid API version")
            return
        if query.get("encoding") != ["json"] or query.get("compress", ["zlib-stream"]) != [
            "zlib-stream"
        ]:
            await self._close(client, 4002, "Error while decoding payload")
            return
        self._client = client
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, client)
                client.queue(Op.HELLO, {"heartbeat_interval": self.heartbeat_interval_ms})
                await self._reader(client)
                if client.server_closing:  # let the closing task finish its handshake
                    await client.close_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            client.live = False
            if self._client is client:
                self._client = None

    async def _close(self, client: _Client, code: int, reason: str) -> None:
        client.server_closing = True
        client.live = False
        try:
            with trio.move_on_after(5):
                await client.ws.aclose(code, reason or None)
        finally:
            client.close_done.set()

    async def _writer(self, client: _Client) -> None:
        async for payload in client.outbox_rx:
            if not isinstance(payload, str):
                payload = json.dumps(payload, separators=(",", ":"))
            text = payload
            try:
                if client.deflater is not None:
                    await client.ws.send_message(client.deflater.compress(text))
                else:
                    await client.ws.send_message(text)
            except ConnectionClosed:
                return

    async def _reader(self, client: _Client) -> None:
        while True:
            try:
                message = await client.ws.get_message()
            except ConnectionClosed as exc:
                self._client_closed(client, exc.reason.code if exc.reason else None)
                return
            await self._on_message(client, message)

    def _client_closed(self, client: _Client, code: int | None) -> None:
        if client.server_closing or code is None or code == 1006:
            return  # we closed it, or the TCP stream died without a close frame
        self.close_codes.append(int(code))
        if code in (1000, 1001) and client.session is not None:
            client.session.valid = False  # a normal close ends the session, as on Discord

    async def _on_message(self, client: _Client, message: str | bytes) -> None:
        raw = message.encode() if isinstance(message, str) else message
        if len(raw) > MAX_PAYLOAD_BYTES:
            await self._close(client, 4002, "Payload too large")
            return
        now = trio.current_time()
        while client.sends and client.sends[0] <= now - SEND_WINDOW:
            client.sends.popleft()
        client.sends.append(now)
        if len(client.sends) > SEND_LIMIT:
            await self._close(client, 4008, "Rate limited.")
            return
        try:
            payload = json.loads(raw)
            op = int(payload["op"])
        except (ValueError, TypeError, KeyError):
            await self._close(client, 4002, "Error while decoding payload.")
            return
        self.received.append(payload)
        if op not in _KNOWN_CLIENT_OPS:
            await self._close(client, 4001, "Unknown opcode.")
        elif op not in _UNAUTHENTICATED_OPS and client.session is None:
            await self._close(client, 4003, "Not authenticated.")
        elif op == Op.HEARTBEAT:
            self.heartbeats.append(payload)
            self.heartbeat_times.append(now)
            if self.ack_heartbeats:
                client.queue(Op.HEARTBEAT_ACK)
        elif op == Op.IDENTIFY:
            await self._on_identify(client, payload)
        elif op == Op.RESUME:
            await self._on_resume(client, payload)
        elif op == Op.PRESENCE_UPDATE:
            self.presences.append(payload)

    async def _on_identify(self, client: _Client, payload: dict[str, Any]) -> None:
        if client.session is not None:
            await self._close(client, 4005, "Already authenticated.")
            return
        d = _body(payload)
        if d.get("token") != self.token:
            await self._close(client, 4004, "Authentication failed.")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or intents < 0:
            await self._close(client, 4013, "Invalid intent(s).")
            return
        if intents & ~(self.allowed_intents | PRIVILEGED_INTENTS):
            await self._close(client, 4013, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS and not self.privileged_intents_enabled:
            await self._close(client, 4014, "Disallowed intent(s).")
            return
        self.identifies.append(payload)
        self.identify_times.append(trio.current_time())
        if self.session_start_limit["remaining"] <= 0:
            client.queue(Op.INVALID_SESSION, False)
            return
        self.session_start_limit["remaining"] -= 1
        session = _Session(secrets.token_hex(16))
        self._sessions[session.session_id] = session
        self._session = session
        client.session = session
        session.seq += 1
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [],
            "session_id": session.session_id,
            "resume_gateway_url": self.url,
            "application": {"id": self.application_id, "flags": 0},
        }
        client.queue(Op.DISPATCH, ready, s=session.seq, t="READY")
        self._go_live(client)
        pending, self._pending = self._pending, []
        for event, data in pending:
            self.dispatch(event, data)

    async def _on_resume(self, client: _Client, payload: dict[str, Any]) -> None:
        d = _body(payload)
        if d.get("token") != self.token:
            await self._close(client, 4004, "Authentication failed.")
            return
        self.resumes.append(payload)
        session = self._sessions.get(str(d.get("session_id")))
        if session is None or not session.valid:
            client.queue(Op.INVALID_SESSION, False)
            return
        seq = d.get("seq")
        if not isinstance(seq, int) or seq > session.seq:
            await self._close(client, 4007, "Invalid seq.")
            return
        client.session = session
        self._session = session
        for s, event, data in session.history:
            if s > seq:
                client.queue(Op.DISPATCH, data, s=s, t=event)
        client.queue(Op.DISPATCH, {}, t="RESUMED")
        self._go_live(client)

    def _go_live(self, client: _Client) -> None:
        client.live = True
        self.handshakes += 1
        self._handshake_event.set()
        self._handshake_event = trio.Event()

    def discard_pending(self) -> int:
        """Drop the dispatches held for the next READY (how many): Discord never replays missed
        events to a fresh (IDENTIFY) session, so a test of the backfill must not get them."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped


def _body(payload: dict[str, Any]) -> dict[str, Any]:
    d = payload.get("d")
    return d if isinstance(d, dict) else {}


def _wants_zlib(path: str) -> bool:
    return parse_qs(urlsplit(path).query).get("compress") == ["zlib-stream"]
