"""The gateway's reconnect/resume loop: one connection at a time, jittered exponential backoff,
the identify budget, and a 4000 close on every exit so a restarted daemon can resume."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import outcome
import trio
from trio_websocket import HandshakeError, WebSocketConnection

from diswoot.errors import FatalConfigurationError, FatalError

from .connection import GatewayConnection, PresenceBox, open_gateway_websocket
from .events import GatewayEvent, GatewayStatus, Presence, SessionState
from .protocol import FATAL_CLOSE_MESSAGES, NextAction, connect_url
from .session import ConnectionEnd, Credentials
from .shapes import is_int

log = logging.getLogger(__name__)

RESUMABLE_CLOSE = 4000  # any code but 1000/1001 keeps the session alive
CLOSE_TIMEOUT = 5.0
ABORT_CLOSE_TIMEOUT = 0.2
IDENTIFY_SPACING = 5.0  # seconds between identifies, whatever max_concurrency says
STABLE_SESSION = 30.0  # a session this old resets the backoff
DEFAULT_INTENTS = 1 << 12 | 1 << 14  # DIRECT_MESSAGES | DIRECT_MESSAGE_TYPING
MAX_RESET_MS = 86_400_000  # the session start budget resets within a day

WebSocketOpener = Callable[[str, int], AbstractAsyncContextManager[WebSocketConnection]]
"""(url, max_message_size) -> async context manager yielding an open websocket."""


class GatewayFatalError(FatalError):
    """Discord closed the gateway with a code that reconnecting cannot fix."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(
            FATAL_CLOSE_MESSAGES.get(code, f"the gateway closed with unrecoverable code {code}")
        )


@dataclass(frozen=True)
class GatewaySettings:
    """How to connect; the token is kept out of repr."""

    token: str = field(repr=False)
    intents: int = DEFAULT_INTENTS
    compress: bool = True
    initial_presence: Presence | None = None
    max_message_size: int = 16 * 1024 * 1024


class Backoff:
    """Exponential backoff with jitter: each delay is uniform in [ceiling/2, ceiling]."""

    def __init__(self, base: float = 1.0, factor: float = 2.0, cap: float = 60.0) -> None:
        self.base, self.factor, self.cap = base, factor, cap
        self._attempt = 0

    def next(self) -> float:
        """The next delay; the ceiling doubles up to `cap`."""
        ceiling = min(self.cap, self.base * self.factor ** min(self._attempt, 32))
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class IdentifyGate:
    """The session start budget from /gateway/bot plus at least 5 s between identifies."""

    def __init__(self, status: GatewayStatus, spacing: float = IDENTIFY_SPACING) -> None:
        self._status = status
        self.spacing = spacing
        self.remaining: int | None = None
        self.reset_at = -math.inf
        self.last = -math.inf

    def update(self, limit: Any) -> None:
        """Take `session_start_limit` from a /gateway/bot answer."""
        if not isinstance(limit, dict) or not is_int(limit.get("remaining")):
            return
        reset_ms = limit.get("reset_after", 0)
        if not isinstance(reset_ms, int | float) or not 0 <= reset_ms <= MAX_RESET_MS:
            reset_ms = MAX_RESET_MS  # junk: assume the longest documented wait (24 h)
        self.remaining = limit["remaining"]
        self.reset_at = trio.current_time() + max(reset_ms / 1000, self.spacing)
        self._status.identify_remaining = self.remaining

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def record(self) -> None:
        """Count one IDENTIFY that was just sent."""
        self.last = trio.current_time()
        if self.remaining is not None:
            self.remaining = max(0, self.remaining - 1)
            self._status.identify_remaining = self.remaining


class _Runner:
    def __init__(
        self,
        settings: GatewaySettings,
        fetch_gateway: Callable[[], Awaitable[dict[str, Any]]],
        events_tx: trio.MemorySendChannel[GatewayEvent],
        presence: PresenceBox,
        stop: trio.Event,
        session: SessionState,
        status: GatewayStatus,
        open_websocket: WebSocketOpener,
    ) -> None:
        self._settings = settings
        self._fetch = fetch_gateway
        self._events_tx = events_tx
        self._presence = presence
        self._stop = stop
        self._session = session
        self._status = status
        self._open = open_websocket
        self._creds = Credentials(settings.token, settings.intents, settings.compress)
        self._gate = IdentifyGate(status)
        self._backoff = Backoff()
        self._url: str | None = None  # cached /gateway/bot url, for fresh sessions
        self._last_url: str | None = None
        self._resume_url_failed = False

    async def _stopped_by(self, deadline: float) -> bool:
        """Sleep until `deadline`; True if `stop` was set meanwhile."""
        with trio.move_on_at(deadline):
            await self._stop.wait()
        return self._stop.is_set()

    async def run(self) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                self._status.reconnects += 1
            first = False
            started = trio.current_time()
            end = await self._attempt()
            if end is None:
                delay = self._backoff.next()
                log.info("gateway connect failed; retrying in %.1f s", delay)
            elif end.action is None:
                return
            elif end.action is NextAction.FATAL:
                assert end.code is not None
                raise GatewayFatalError(end.code)
            else:
                delay = self._delay_after(end, trio.current_time() - started)
            self._status.set_state("disconnected")
            if await self._stopped_by(trio.current_time() + delay):
                return

    def _delay_after(self, end: ConnectionEnd, lasted: float) -> float:
        if end.action is NextAction.IDENTIFY:
            self._session.clear()
        log.info(
            "gateway connection ended (%s); next: %s", end.reason, end.action and end.action.value
        )
        if end.invalid_session:
            return random.uniform(1, 5)
        if end.handshake_done and (end.requested or lasted >= STABLE_SESSION):
            self._backoff.reset()
            return 0.0
        return self._backoff.next()

    async def _refresh_gateway(self) -> None:
        """GET /gateway/bot; on failure keep the last good url (with none yet, it propagates)."""
        try:
            data = await self._fetch()
            url = data.get("url") if isinstance(data, dict) else None
            if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
                raise ValueError("GET /gateway/bot answered without a ws(s) url")
        except FatalConfigurationError:
            raise
        except Exception:
            if self._last_url is None:
                raise
            log.warning("GET /gateway/bot failed; reusing the last gateway url", exc_info=True)
            self._url = self._last_url
            return
        self._url = self._last_url = url
        self._gate.update(data.get("session_start_limit"))

    async def _wait_identify_turn(self) -> bool:
        """Respect the session start budget and spacing; False if stopped meanwhile."""
        while self._gate.exhausted:
            log.warning(
                "identify budget exhausted; waiting %.0f s for it to reset",
                self._gate.reset_at - trio.current_time(),
            )
            if await self._stopped_by(self._gate.reset_at):
                return False
            await self._refresh_gateway()
        return not await self._stopped_by(self._gate.last + self._gate.spacing)

    async def _base_url(self, resuming: bool) -> str:
        if resuming and self._session.resume_url and not self._resume_url_failed:
            return self._session.resume_url
        if self._url is None:
            await self._refresh_gateway()
        assert self._url is not None
        return self._url

    async def _attempt(self) -> ConnectionEnd | None:
        """One connection; None when it could not be established."""
        resuming = self._session.resumable
        try:
            base = await self._base_url(resuming)
            if not resuming and not await self._wait_identify_turn():
                return ConnectionEnd(None, "stop requested")
        except FatalConfigurationError:
            raise
        except Exception as exc:  # Discord unreachable: retried with backoff, however long
            log.warning("cannot get the gateway url: %s", exc)
            return None
        using_resume_url = base == self._session.resume_url
        self._status.set_state("connecting")
        end: ConnectionEnd | None = None
        try:
            async with self._open(
                connect_url(base, compress=self._settings.compress),
                self._settings.max_message_size,
            ) as ws:
                self._status.connects += 1
                aborted = True
                try:
                    end = await GatewayConnection(
                        ws,
                        self._creds,
                        session=self._session,
                        status=self._status,
                        presence=self._presence,
                        events_tx=self._events_tx,
                        stop=self._stop,
                        on_identify=self._gate.record,
                    ).run()
                    aborted = False
                finally:
                    # trio-websocket would close with 1000, which ends the session.  When we
                    # are being cancelled the reader is gone and the server's answer to our
                    # close frame can never be read: send the frame, don't wait long for it.
                    wait = ABORT_CLOSE_TIMEOUT if aborted else CLOSE_TIMEOUT
                    with trio.CancelScope(shield=True), trio.move_on_after(wait):
                        await ws.aclose(RESUMABLE_CLOSE)
        except (HandshakeError, OSError, trio.BrokenResourceError) as exc:
            if end is not None:
                return end
            log.warning("cannot connect to the gateway: %r", exc)
            if using_resume_url:
                self._resume_url_failed = True
            else:
                self._url = None
            return None
        if end.handshake_done:
            self._resume_url_failed = False
        return end


async def _collect_presence(
    presence_rx: trio.MemoryReceiveChannel[Presence], box: PresenceBox
) -> None:
    async for presence in presence_rx:
        box.set(presence)


async def run_gateway(
    settings: GatewaySettings,
    fetch_gateway: Callable[[], Awaitable[dict[str, Any]]],
    events_tx: trio.MemorySendChannel[GatewayEvent],
    presence_rx: trio.MemoryReceiveChannel[Presence],
    stop: trio.Event,
    *,
    session: SessionState | None = None,
    status: GatewayStatus | None = None,
    open_websocket: WebSocketOpener = open_gateway_websocket,
) -> None:
    """Keep one gateway session alive until `stop` is set; closes `events_tx` on return.

    `fetch_gateway` returns the JSON of GET /gateway/bot. Raises GatewayFatalError on close codes
    4004 and 4010-4014. `open_websocket` exists for tests (e.g. FakeGateway.open_memory_websocket).
    """
    session = session if session is not None else SessionState()
    status = status if status is not None else GatewayStatus()
    presence = PresenceBox(settings.initial_presence)
    runner = _Runner(
        settings, fetch_gateway, events_tx, presence, stop, session, status, open_websocket
    )
    async with events_tx:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_collect_presence, presence_rx, presence)
                result = await outcome.acapture(runner.run)
                nursery.cancel_scope.cancel()
            result.unwrap()  # GatewayFatalError surfaces as itself, not inside a group
        finally:
            status.set_state("stopped")
