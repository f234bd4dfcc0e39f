"""Sans-IO core of one gateway connection: frames in, actions out (as wsproto does).

:class:`GatewaySession` decides everything the protocol decides (HELLO, IDENTIFY or RESUME,
`seq`, heartbeat ACKs and the zombie rule, READY/RESUMED, op 7/9) and never blocks, sleeps or
reads a clock: times are passed in, and the driver (connection.py) carries out the actions.
No payload can make it raise: a dispatch it cannot parse becomes a :class:`Rejected` event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .events import (
    REJECT_MALFORMED,
    REJECT_UNDECODABLE,
    GatewayEvent,
    GatewayStatus,
    Presence,
    Ready,
    Rejected,
    Resumed,
    SessionState,
    event_id,
    event_label,
    parse_dispatch,
)
from .protocol import (
    NextAction,
    Op,
    Payload,
    ProtocolError,
    ZlibStreamInflater,
    decode,
    identify_payload,
    resume_payload,
)
from .shapes import MalformedEvent, is_int


@dataclass(frozen=True)
class Credentials:
    """What IDENTIFY and RESUME need; the token is never logged."""

    token: str
    intents: int
    compress: bool

    def __repr__(self) -> str:
        return f"Credentials(intents={self.intents}, compress={self.compress})"


@dataclass(frozen=True)
class ConnectionEnd:
    """Why a connection ended. `action` None means stopped on request (or no consumer left)."""

    action: NextAction | None
    reason: str
    code: int | None = None  # the server's close code, when the server closed
    handshake_done: bool = False  # READY or RESUMED was received
    invalid_session: bool = False  # op 9 d=false: wait 1-5 s, then identify
    requested: bool = False  # op 7: a clean, server-requested reconnect


@dataclass(frozen=True)
class Send:
    """Send `{"op": op, "d": d}`; heartbeats have `priority` over the send budget."""

    op: Op
    d: Any
    priority: bool = False


@dataclass(frozen=True)
class StartHeartbeat:
    """Start beating: the first beat after `interval * random()`, then every `interval` s."""

    interval: float


@dataclass(frozen=True)
class Deliver:
    """Hand `event` to the bridge, then call :meth:`GatewaySession.acknowledge` with `seq`."""

    event: GatewayEvent
    seq: int | None


@dataclass(frozen=True)
class HandshakeComplete:
    """READY or RESUMED arrived: start sending presence updates."""


@dataclass(frozen=True)
class End:
    """The connection must end (close it with 4000; the runner decides what comes next)."""

    end: ConnectionEnd


Action = Send | StartHeartbeat | Deliver | HandshakeComplete | End


def _end(action: NextAction, reason: str, **flags: bool) -> list[Action]:
    return [End(ConnectionEnd(action, reason, **flags))]


class GatewaySession:
    """The protocol state of one connection over the resumable `state` (see module docstring).

    `status` is updated in place (state, counters, ACK latency); `latest_presence` supplies the
    presence sent with IDENTIFY.
    """

    def __init__(
        self,
        state: SessionState,
        status: GatewayStatus,
        credentials: Credentials,
        latest_presence: Callable[[], Presence | None] = lambda: None,
    ) -> None:
        self.state = state
        self.status = status
        self._creds = credentials
        self._latest_presence = latest_presence
        self._inflater = ZlibStreamInflater() if credentials.compress else None
        self.hello_received = False
        self.handshake_done = False
        self.replayed = 0  # dispatches before RESUMED
        self.awaiting_ack = False
        self._beat_sent_at: float | None = None
        self._blocked = False  # the driver is blocked handing an event to the bridge
        self._stalled = False  # ... and was at some point since the last heartbeat

    # -- input -------------------------------------------------------------------------------

    def receive_frame(self, frame: str | bytes, now: float) -> list[Action]:
        """One websocket message: zlib-stream frames are buffered until a payload is complete."""
        text: str | bytes | None = frame
        if isinstance(frame, bytes) and self._inflater is not None:
            try:
                text = self._inflater.feed(frame)
            except ProtocolError as exc:  # the shared inflate context is lost with it
                return _end(NextAction.RESUME, str(exc))
            if text is None:
                return []
        assert text is not None
        try:
            payload = decode(text)
        except ProtocolError as exc:
            if not self.hello_received:
                return _end(NextAction.RESUME, str(exc))
            detail = "not a JSON gateway payload"
            return [Deliver(Rejected(event_label(None), None, REJECT_UNDECODABLE, detail), None)]
        return self.receive(payload, now)

    def receive(self, payload: Payload, now: float) -> list[Action]:
        """One decoded payload (a dict with an integer `op`)."""
        op = payload["op"]
        if not self.hello_received:
            return self._hello(payload)
        if op == Op.DISPATCH:
            return self._dispatch(payload.get("t"), payload.get("s"), payload.get("d"))
        if op == Op.HEARTBEAT_ACK:
            self.awaiting_ack = False
            if self._beat_sent_at is not None:
                self.status.last_ack_latency = now - self._beat_sent_at
            return []
        if op == Op.HEARTBEAT:
            return [self._beat(now)]
        if op == Op.RECONNECT:
            return _end(NextAction.RESUME, "server requested a reconnect", requested=True)
        if op == Op.INVALID_SESSION:
            if payload.get("d") is True:
                return _end(NextAction.RESUME, "invalid session (resumable)")
            return _end(NextAction.IDENTIFY, "invalid session", invalid_session=True)
        return []  # a second HELLO, or an op this client does not use

    def heartbeat(self, now: float) -> list[Action]:
        """The heartbeat timer fired: a zombie ends the connection, else beat.

        An ACK missing since the previous beat means a zombie, unless the driver was blocked
        handing events to a slow bridge meanwhile (the ACK is queued behind those events).
        """
        if self.awaiting_ack and not self._stalled:
            return _end(NextAction.RESUME, "zombie connection: no heartbeat ACK")
        self._stalled = self._blocked  # a new interval: a stall before it excuses nothing
        self.awaiting_ack = True
        return [self._beat(now)]

    def acknowledge(self, seq: int | None) -> None:
        """The dispatch numbered `seq` was handed over (or skipped): RESUME starts after it."""
        if seq is not None:
            self.state.seq = seq

    def delivery_blocked(self, blocked: bool) -> None:
        """The driver started (True) or stopped (False) waiting for the bridge to take events."""
        self._blocked = blocked
        self._stalled = self._stalled or blocked

    # -- protocol ----------------------------------------------------------------------------

    def _beat(self, now: float) -> Send:
        self._beat_sent_at = now
        return Send(Op.HEARTBEAT, self.state.seq, priority=True)

    def _hello(self, payload: Payload) -> list[Action]:
        """HELLO first (op 7 first means: try again later), then IDENTIFY or RESUME."""
        op = payload["op"]
        if op == Op.RECONNECT:
            return _end(NextAction.RESUME, "server asked to reconnect before HELLO")
        if op != Op.HELLO:
            return _end(NextAction.RESUME, f"expected HELLO, got op {op}")
        d = payload.get("d")
        interval = d.get("heartbeat_interval") if isinstance(d, dict) else None
        if not isinstance(interval, int | float) or isinstance(interval, bool) or not (
            0 < interval < 1e9
        ):
            return _end(NextAction.RESUME, "HELLO without a usable heartbeat_interval")
        self.hello_received = True
        actions: list[Action] = [StartHeartbeat(float(interval) / 1000)]
        state = self.state
        if state.session_id is not None and state.seq is not None:
            self.status.set_state("resuming")
            self.status.resumes += 1
            payload = resume_payload(self._creds.token, state.session_id, state.seq)
            actions.append(Send(Op.RESUME, payload))
        else:
            self.status.set_state("identifying")
            self.status.identifies += 1
            latest = self._latest_presence()
            presence = latest.to_payload() if latest is not None else None
            payload = identify_payload(self._creds.token, self._creds.intents, presence)
            actions.append(Send(Op.IDENTIFY, payload))
        return actions

    def _dispatch(self, name: object, s: object, d: object) -> list[Action]:
        seq = s if is_int(s) else None
        assert seq is None or isinstance(seq, int)
        actions: list[Action] = []
        event: GatewayEvent | None
        if name == "READY":
            try:
                event = self._ready(d)
            except MalformedEvent as exc:  # no usable session: start a new one
                event = Rejected("READY", None, REJECT_MALFORMED, str(exc))
                actions += _end(NextAction.IDENTIFY, f"malformed READY: {exc}")
            else:
                actions.append(HandshakeComplete())
        elif name == "RESUMED":
            event = Resumed(replayed=self.replayed)
            self._handshake()
            actions.append(HandshakeComplete())
        else:
            if not self.handshake_done:
                self.replayed += 1
            event = self._parse(name, d)
        if event is None:
            self.acknowledge(seq)
            return actions
        return [Deliver(event, seq), *actions]

    def _ready(self, d: object) -> Ready:
        ready = Ready.from_payload(d)
        self.state.session_id = ready.session_id
        self.state.resume_url = ready.resume_url
        self.state.user_id = ready.user_id
        self.status.user_tag = ready.tag
        self._handshake()
        return ready

    def _handshake(self) -> None:
        self.handshake_done = True
        self.status.set_state("ready")

    def _parse(self, name: object, d: object) -> GatewayEvent | None:
        """A typed event, None (ignored), or Rejected; never raises."""
        try:
            if not isinstance(name, str):
                raise MalformedEvent("t is not a string")
            return parse_dispatch(name, d, self.state.user_id)
        except MalformedEvent as exc:
            return Rejected(event_label(name), event_id(d), REJECT_MALFORMED, str(exc))
        except Exception as exc:  # a parser bug must not end the connection either
            detail = f"parser error {type(exc).__name__}"
            return Rejected(event_label(name), event_id(d), REJECT_MALFORMED, detail)

