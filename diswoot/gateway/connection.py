"""One gateway websocket's life: HELLO, IDENTIFY or RESUME, then reader, heartbeat and presence
tasks as siblings in one nursery. Whichever decides the connection is over records a
ConnectionEnd and cancels the nursery; the runner closes the socket (with 4000) and reconnects.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from .events import (
    GatewayEvent,
    GatewayStatus,
    Presence,
    Ready,
    Resumed,
    SessionState,
    parse_dispatch,
)
from .protocol import (
    NextAction,
    Op,
    Payload,
    ProtocolError,
    ZlibStreamInflater,
    close_action,
    decode,
    encode,
    identify_payload,
    resume_payload,
)
from .ratelimit import SendLimiter

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 20.0


@asynccontextmanager
async def open_gateway_websocket(
    url: str, max_message_size: int
) -> AsyncIterator[WebSocketConnection]:
    """trio_websocket.open_websocket_url that also closes the TCP stream after a server close.

    Leaving it still closes with 1000 if the socket is open: call `ws.aclose(4000)` first.
    """
    opened: WebSocketConnection | None = None
    try:
        async with open_websocket_url(url, max_message_size=max_message_size) as ws:
            opened = ws
            yield ws
    finally:
        if opened is not None:
            # trio-websocket 0.12.2 never closes a client's TCP stream after the server closed
            # the websocket; close it here instead of leaving it to the garbage collector
            with trio.CancelScope(shield=True):
                await opened._stream.aclose()


@dataclass(frozen=True)
class ConnectionEnd:
    """Why a connection ended. `action` None means stopped on request (or no consumer left)."""

    action: NextAction | None
    reason: str
    code: int | None = None  # the server's close code, when the server closed
    handshake_done: bool = False  # READY or RESUMED was received
    invalid_session: bool = False  # op 9 d=false: wait 1-5 s, then identify
    requested: bool = False  # op 7: a clean, server-requested reconnect


class PresenceBox:
    """The latest presence plus a version counter; connections wait on it for changes."""

    def __init__(self, initial: Presence | None = None) -> None:
        self.latest = initial
        self.version = 0
        self._changed = trio.Event()

    def set(self, presence: Presence) -> None:
        """Store a new presence and wake waiters."""
        self.latest = presence
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self, seen: int) -> None:
        """Wait until the version differs from `seen`."""
        while self.version == seen:
            await self._changed.wait()


@dataclass(frozen=True)
class Credentials:
    """What IDENTIFY and RESUME need; the token is never logged."""

    token: str
    intents: int
    compress: bool

    def __repr__(self) -> str:
        return f"Credentials(intents={self.intents}, compress={self.compress})"


class GatewayConnection:
    """Drives one open websocket until it must be replaced; see `run`."""

    def __init__(
        self,
        ws: WebSocketConnection,
        credentials: Credentials,
        *,
        session: SessionState,
        status: GatewayStatus,
        presence: PresenceBox,
        events_tx: trio.MemorySendChannel[GatewayEvent],
        stop: trio.Event,
        on_identify: Callable[[], None] = lambda: None,
        limiter: SendLimiter | None = None,
    ) -> None:
        self._ws = ws
        self._creds = credentials
        self._session = session
        self._status = status
        self._presence = presence
        self._events_tx = events_tx
        self._stop = stop
        self._on_identify = on_identify
        self._limiter = limiter or SendLimiter()
        self._inflater = ZlibStreamInflater() if credentials.compress else None
        self._end: ConnectionEnd | None = None
        self._nursery: trio.Nursery | None = None
        self._handshake_done = False
        self._replayed = 0
        self._awaiting_ack = False
        self._beat_sent_at: float | None = None
        self._delivering = False  # the reader is blocked handing an event to events_tx
        self._stalled = False  # ... and was at some point since the last heartbeat

    async def run(self) -> ConnectionEnd:
        """Run until the connection must end; never closes the socket itself."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_stop)
            nursery.start_soon(self._guarded, self._open_session)
        assert self._end is not None  # the nursery only ends through _finish
        return self._end

    def _finish(self, end: ConnectionEnd) -> None:
        if self._end is None:
            self._end = replace(end, handshake_done=self._handshake_done)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _guarded(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run one sibling, turning socket closes and bad payloads into a ConnectionEnd."""
        try:
            await fn(*args)
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else None
            self._finish(ConnectionEnd(close_action(code), f"closed by the server ({code})", code))
        except ProtocolError as exc:
            self._finish(ConnectionEnd(NextAction.RESUME, str(exc)))
        except (KeyError, TypeError, ValueError) as exc:
            self._finish(ConnectionEnd(NextAction.RESUME, f"malformed gateway payload: {exc!r}"))

    async def _watch_stop(self) -> None:
        await self._stop.wait()
        self._finish(ConnectionEnd(None, "stop requested"))

    async def _send(self, op: Op, d: Any, *, priority: bool = False) -> None:
        text = encode(op, d)
        await self._limiter.acquire(priority=priority)
        await self._ws.send_message(text)

    async def _receive(self) -> Payload:
        while True:
            message = await self._ws.get_message()
            if isinstance(message, bytes) and self._inflater is not None:
                text = self._inflater.feed(message)
                if text is None:
                    continue
                return decode(text)
            return decode(message)

    async def _receive_hello(self) -> float:
        """The heartbeat interval in seconds from HELLO (op 7 first means: try again later)."""
        with trio.move_on_after(HELLO_TIMEOUT):
            hello = await self._receive()
            if hello["op"] == Op.RECONNECT:
                raise ProtocolError("server asked to reconnect before HELLO")
            if hello["op"] != Op.HELLO:
                raise ProtocolError(f"expected HELLO, got op {hello['op']}")
            return float(hello["d"]["heartbeat_interval"]) / 1000
        raise ProtocolError(f"no HELLO within {HELLO_TIMEOUT:g} s")

    async def _open_session(self) -> None:
        interval = await self._receive_hello()
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, self._heartbeat_loop, interval)
        session = self._session
        if session.session_id is not None and session.seq is not None:
            self._status.set_state("resuming")
            self._status.resumes += 1
            await self._send(
                Op.RESUME, resume_payload(self._creds.token, session.session_id, session.seq)
            )
        else:
            self._status.set_state("identifying")
            self._status.identifies += 1
            self._on_identify()
            latest = self._presence.latest
            await self._send(
                Op.IDENTIFY,
                identify_payload(
                    self._creds.token,
                    self._creds.intents,
                    latest.to_payload() if latest is not None else None,
                ),
            )
        while True:
            await self._handle(await self._receive())

    async def _heartbeat_loop(self, interval: float) -> None:
        """First beat after interval*random(), then every interval; a missed ACK is a zombie."""
        await trio.sleep(interval * random.random())
        while True:
            if self._awaiting_ack:
                if not self._stalled:
                    self._finish(
                        ConnectionEnd(NextAction.RESUME, "zombie connection: no heartbeat ACK")
                    )
                    return
                # the ACK is queued behind events a slow consumer has not taken yet
                self._stalled = self._delivering
            self._awaiting_ack = True
            await self._send_heartbeat()
            await trio.sleep(interval)

    async def _send_heartbeat(self) -> None:
        self._beat_sent_at = trio.current_time()
        await self._send(Op.HEARTBEAT, self._session.seq, priority=True)

    async def _handle(self, payload: Payload) -> None:
        op = payload["op"]
        if op == Op.DISPATCH:
            await self._on_dispatch(str(payload.get("t")), payload.get("s"), payload.get("d"))
        elif op == Op.HEARTBEAT_ACK:
            self._awaiting_ack = False
            if self._beat_sent_at is not None:
                self._status.last_ack_latency = trio.current_time() - self._beat_sent_at
        elif op == Op.HEARTBEAT:
            await self._send_heartbeat()
        elif op == Op.RECONNECT:
            self._finish(
                ConnectionEnd(NextAction.RESUME, "server requested a reconnect", requested=True)
            )
        elif op == Op.INVALID_SESSION:
            if payload.get("d") is True:
                self._finish(ConnectionEnd(NextAction.RESUME, "invalid session (resumable)"))
            else:
                self._finish(
                    ConnectionEnd(NextAction.IDENTIFY, "invalid session", invalid_session=True)
                )

    async def _on_dispatch(self, name: str, seq: Any, d: Any) -> None:
        event: GatewayEvent | None
        if name == "READY":
            ready = Ready.from_payload(d)
            self._session.session_id = ready.session_id
            self._session.resume_url = d.get("resume_gateway_url")
            self._session.user_id = ready.user_id
            self._status.user_tag = ready.tag
            event = ready
            self._complete_handshake()
        elif name == "RESUMED":
            event = Resumed(replayed=self._replayed)
            self._complete_handshake()
        else:
            if not self._handshake_done:
                self._replayed += 1
            event = parse_dispatch(name, d, self._session.user_id)
        if event is not None:
            await self._deliver(event)
        # advance seq only once the event is in the channel: an event lost to a cancelled
        # delivery is replayed on the next RESUME
        if isinstance(seq, int):
            self._session.seq = seq

    def _complete_handshake(self) -> None:
        self._handshake_done = True
        self._status.set_state("ready")
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, self._presence_loop)

    async def _deliver(self, event: GatewayEvent) -> None:
        """Hand an event to the bounded channel; heartbeats carry on while this waits."""
        try:
            try:
                self._events_tx.send_nowait(event)
                return
            except trio.WouldBlock:
                pass
            self._stalled = self._delivering = True
            try:
                await self._events_tx.send(event)
            finally:
                self._delivering = False
        except trio.BrokenResourceError:
            log.warning("gateway events receiver closed; stopping the gateway")
            self._finish(ConnectionEnd(None, "events receiver closed"))
            await trio.lowlevel.checkpoint()

    async def _presence_loop(self) -> None:
        """Send the latest presence now (after every handshake) and whenever it changes."""
        seen: int | None = None
        while True:
            version, latest = self._presence.version, self._presence.latest
            if latest is not None and version != seen:
                await self._send(Op.PRESENCE_UPDATE, latest.to_payload())
            seen = version
            await self._presence.wait_changed(seen)
