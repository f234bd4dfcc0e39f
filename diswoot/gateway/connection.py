"""One gateway websocket's life: the trio driver around the sans-IO GatewaySession.

A reader, a heartbeat and a presence task run as siblings in one nursery and carry out the
session's actions. Whichever decides the connection is over records a ConnectionEnd and
cancels the nursery; the runner closes the socket (with 4000) and reconnects.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from diswoot.tls import client_context

from .events import GatewayEvent, GatewayStatus, Presence, SessionState
from .protocol import NextAction, Op, close_action, encode
from .ratelimit import SendLimiter
from .session import (
    Action,
    ConnectionEnd,
    Credentials,
    Deliver,
    End,
    GatewaySession,
    HandshakeComplete,
    Send,
    StartHeartbeat,
)

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
        tls = client_context() if url.startswith("wss:") else None  # ws: takes none
        async with open_websocket_url(url, tls, max_message_size=max_message_size) as ws:
            opened = ws
            yield ws
    finally:
        if opened is not None:
            # trio-websocket 0.12.2 never closes a client's TCP stream after the server closed
            # the websocket; close it here instead of leaving it to the garbage collector
            with trio.CancelScope(shield=True):
                await opened._stream.aclose()


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
        self._presence = presence
        self._events_tx = events_tx
        self._status = status
        self._stop = stop
        self._on_identify = on_identify
        self._limiter = limiter or SendLimiter()
        self._identified_with: int | None = None  # the presence version IDENTIFY carried
        self._proto = GatewaySession(session, status, credentials, self._presence_to_identify)
        self._end: ConnectionEnd | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self) -> ConnectionEnd:
        """Run until the connection must end; never closes the socket itself."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_stop)
            nursery.start_soon(self._guarded, self._read)
        assert self._end is not None  # the nursery only ends through _finish
        return self._end

    def _finish(self, end: ConnectionEnd) -> None:
        if self._end is None:
            self._end = replace(end, handshake_done=self._proto.handshake_done)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _guarded(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run one sibling, turning socket closes (and, defensively, bugs) into a ConnectionEnd."""
        try:
            await fn(*args)
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else None
            self._finish(ConnectionEnd(close_action(code), f"closed by the server ({code})", code))
        except (KeyError, TypeError, ValueError) as exc:
            log.error("gateway connection failed (%s); reconnecting", type(exc).__name__)
            self._finish(ConnectionEnd(NextAction.RESUME, f"internal error: {type(exc).__name__}"))

    async def _watch_stop(self) -> None:
        await self._stop.wait()
        self._finish(ConnectionEnd(None, "stop requested"))

    async def _read(self) -> None:
        """Feed every frame to the session and carry out what it asks for."""
        with trio.move_on_after(HELLO_TIMEOUT):
            while not self._proto.hello_received:
                frame = await self._ws.get_message()
                await self._apply(self._proto.receive_frame(frame, trio.current_time()))
        if not self._proto.hello_received:
            self._finish(ConnectionEnd(NextAction.RESUME, f"no HELLO within {HELLO_TIMEOUT:g} s"))
            return
        while True:
            frame = await self._ws.get_message()
            await self._apply(self._proto.receive_frame(frame, trio.current_time()))

    async def _apply(self, actions: list[Action]) -> None:
        nursery = self._nursery
        assert nursery is not None
        for action in actions:
            match action:
                case Send(op=op, d=d, priority=priority):
                    if op == Op.IDENTIFY:
                        self._on_identify()
                    await self._send(op, d, priority=priority)
                case StartHeartbeat(interval=interval):
                    nursery.start_soon(self._guarded, self._heartbeat_loop, interval)
                case Deliver(event=event, seq=seq):
                    if not await self._deliver(event):
                        return
                    self._proto.acknowledge(seq)
                case HandshakeComplete():
                    nursery.start_soon(self._guarded, self._presence_loop)
                case End(end=end):
                    self._finish(end)
                    await trio.lowlevel.checkpoint()  # raises Cancelled: nothing runs after it

    async def _send(self, op: Op, d: Any, *, priority: bool = False) -> None:
        text = encode(op, d)
        await self._limiter.acquire(priority=priority)
        await self._ws.send_message(text)

    async def _heartbeat_loop(self, interval: float) -> None:
        """First beat after interval*random(), then every interval (the session keeps score)."""
        await trio.sleep(interval * random.random())
        while True:
            await self._apply(self._proto.heartbeat(trio.current_time()))
            await trio.sleep(interval)

    async def _deliver(self, event: GatewayEvent) -> bool:
        """Hand an event to the bounded channel; heartbeats carry on while this waits."""
        try:
            try:
                self._events_tx.send_nowait(event)
            except trio.WouldBlock:
                self._proto.delivery_blocked(True)
                try:
                    await self._events_tx.send(event)
                finally:
                    self._proto.delivery_blocked(False)
            self._status.delivered += 1
            return True
        except trio.BrokenResourceError:
            log.warning("gateway events receiver closed; stopping the gateway")
            self._finish(ConnectionEnd(None, "events receiver closed"))
            await trio.lowlevel.checkpoint()
            return False

    def _presence_to_identify(self) -> Presence | None:
        """The presence IDENTIFY carries (remembered: the handshake need not send it again)."""
        latest = self._presence.latest
        if latest is not None:
            self._identified_with = self._presence.version
        return latest

    async def _presence_loop(self) -> None:
        """Send the latest presence after the handshake (unless IDENTIFY carried it; a RESUME
        carries none) and whenever it changes."""
        seen = self._identified_with
        while True:
            version, latest = self._presence.version, self._presence.latest
            if latest is not None and version != seen:
                await self._send(Op.PRESENCE_UPDATE, latest.to_payload())
            seen = version
            await self._presence.wait_changed(seen)
