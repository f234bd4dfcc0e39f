"""Typed gateway events for the bridge, plus the state the gateway keeps across connections.

Dispatches are parsed defensively (:func:`parse_dispatch`): a typed event only exists for a
payload whose fields diswoot reads have the right shape, so its attributes never fail later;
anything else raises MalformedEvent and becomes a :class:`Rejected` event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diswoot.gateway.interaction_body import PING, check_interaction
from diswoot.untrusted import FieldError

from .shapes import (
    MalformedEvent,
    an_object,
    check_message,
    is_int,
    is_snowflake,
    optional,
    snowflake,
)

CHANNEL_TYPE_DM = 1
USER_MESSAGE_TYPES = frozenset({0, 19})  # DEFAULT, REPLY; other types are system messages
ROUTED_EVENTS = frozenset(
    {
        "READY",
        "RESUMED",
        "MESSAGE_CREATE",
        "MESSAGE_UPDATE",
        "MESSAGE_DELETE",
        "TYPING_START",
        "INTERACTION_CREATE",
    }
)
REJECT_MALFORMED = "malformed"  # the dispatch's shape is wrong
REJECT_UNDECODABLE = "undecodable"  # the frame is not a JSON gateway payload
REJECT_HANDLER_ERROR = "handler_error"  # the bridge failed handling a well-formed event
REJECT_REASONS = (REJECT_MALFORMED, REJECT_UNDECODABLE, REJECT_HANDLER_ERROR)
FLAG_EPHEMERAL = 1 << 6
PRESENCE_STATUSES = frozenset({"online", "idle", "dnd", "invisible"})
MAX_PRESENCE_TEXT_BYTES = 512  # keeps op 3 and IDENTIFY well under the 4096-byte payload limit


@dataclass(frozen=True)
class Ready:
    """READY: a fresh session was started by IDENTIFY."""

    user_id: str
    username: str
    discriminator: str
    session_id: str
    application_id: str | None
    resume_url: str | None = None

    @property
    def tag(self) -> str:
        """`name#1234`, or just `name` for users on the new (discriminator "0") username system."""
        if self.discriminator in ("0", ""):
            return self.username
        return f"{self.username}#{self.discriminator}"

    @classmethod
    def from_payload(cls, d: Any) -> Ready:
        """Build from the READY dispatch's `d`; raises MalformedEvent without a session id or a
        bot user id (a resume url that is not a ws(s) url is dropped: the cached url is used)."""
        d = an_object(d, "d")
        session_id = d.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise MalformedEvent("session_id is not a non-empty string")
        user = an_object(d.get("user"), "user")
        application = d.get("application")
        app_id = application.get("id") if isinstance(application, dict) else None
        resume_url = d.get("resume_gateway_url")
        username, discriminator = user.get("username"), user.get("discriminator")
        return cls(
            user_id=snowflake(user, "id", "user."),
            username=username if isinstance(username, str) else "",
            discriminator=discriminator if isinstance(discriminator, str) else "0",
            session_id=session_id,
            application_id=app_id if is_snowflake(app_id) else None,
            resume_url=resume_url if _is_ws_url(resume_url) else None,
        )


@dataclass(frozen=True)
class Resumed:
    """RESUMED: the session continued; `replayed` dispatches were replayed before it."""

    replayed: int


@dataclass(frozen=True)
class _MessageEvent:
    """A user's DM; built only from a `data` that passes :func:`check_message` (else
    MalformedEvent), so the properties below never fail."""

    data: dict[str, Any] = field(repr=False)
    id: str = field(init=False)
    channel_id: str = field(init=False)
    author_id: str = field(init=False)
    content: str = field(init=False)

    def __post_init__(self) -> None:
        data = an_object(self.data, "d")
        check_message(data)
        content = data.get("content")
        object.__setattr__(self, "id", data["id"])
        object.__setattr__(self, "channel_id", data["channel_id"])
        object.__setattr__(self, "author_id", data["author"]["id"])
        object.__setattr__(self, "content", content if isinstance(content, str) else "")


@dataclass(frozen=True)
class MessageCreate(_MessageEvent):
    """A user's DM to the bot (own, bot, webhook, guild and system messages are filtered out)."""


@dataclass(frozen=True)
class MessageUpdate(_MessageEvent):
    """An edit of a user's DM (same filtering as MessageCreate; updates without author dropped)."""


@dataclass(frozen=True)
class MessageDelete:
    """A message deleted in a DM channel."""

    id: str
    channel_id: str


@dataclass(frozen=True)
class TypingStart:
    """A user started typing in a DM; `timestamp` is Unix seconds."""

    channel_id: str
    user_id: str
    timestamp: int


@dataclass(frozen=True)
class InteractionCreate:
    """An interaction delivered over the gateway (its id, token and type were checked)."""

    data: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Rejected:
    """A dispatch that could not be parsed: acknowledged (its seq counts), logged, counted.

    `type` is a label from a fixed vocabulary (see :func:`event_label`), `id` the event's
    snowflake id if it had one, `reason` one of REJECT_REASONS and `detail` which field was
    wrong (never a value).
    """

    type: str
    id: str | None
    reason: str
    detail: str


GatewayEvent = (
    Ready
    | Resumed
    | MessageCreate
    | MessageUpdate
    | MessageDelete
    | TypingStart
    | InteractionCreate
    | Rejected
)


@dataclass(frozen=True)
class Presence:
    """The bot's presence: a status plus a custom-status text."""

    status: str
    text: str

    def __post_init__(self) -> None:
        if self.status not in PRESENCE_STATUSES:
            raise ValueError(f"presence status must be one of {sorted(PRESENCE_STATUSES)}")
        if len(self.text.encode()) > MAX_PRESENCE_TEXT_BYTES:
            raise ValueError(f"presence text is longer than {MAX_PRESENCE_TEXT_BYTES} bytes")

    def to_payload(self) -> dict[str, Any]:
        """The Update Presence object (op 3 `d`, IDENTIFY `presence`)."""
        return {
            "since": None,
            "status": self.status,
            "afk": False,
            "activities": [{"name": "Custom Status", "type": 4, "state": self.text}],
        }


@dataclass
class SessionState:
    """Resume state that survives connections (the daemon may persist and restore it).

    `user_id` is our own bot user id from READY, used to drop our own messages.
    """

    session_id: str | None = None
    seq: int | None = None
    resume_url: str | None = None
    user_id: str | None = None

    @property
    def resumable(self) -> bool:
        return self.session_id is not None and self.seq is not None

    def clear(self) -> None:
        """Forget the session so the next connection identifies (user_id is kept)."""
        self.session_id = None
        self.seq = None
        self.resume_url = None


@dataclass
class GatewayStatus:
    """Observable gateway health, updated in place; `on_change` is called on state changes."""

    state: str = "stopped"
    user_tag: str | None = None
    connects: int = 0
    identifies: int = 0
    resumes: int = 0
    reconnects: int = 0
    last_ack_latency: float | None = None
    identify_remaining: int | None = None
    delivered: int = 0
    """Dispatches handed to the router's channel (the router counts those it took)."""
    on_change: Callable[[GatewayStatus], None] | None = field(
        default=None, repr=False, compare=False
    )

    def set_state(self, state: str) -> None:
        """Move to `state` and call the hook if it changed."""
        if state == self.state:
            return
        self.state = state
        if self.on_change is not None:
            self.on_change(self)


def event_label(name: object) -> str:
    """`name` if diswoot handles dispatches of that name, else "other" (a bounded label)."""
    return name if isinstance(name, str) and name in ROUTED_EVENTS else "other"


def event_id(d: object) -> str | None:
    """The dispatch's own snowflake id, if it has a valid one (for log lines)."""
    value = d.get("id") if isinstance(d, dict) else None
    return value if is_snowflake(value) else None


def _is_ws_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("wss://", "ws://"))


def _is_dm_message(d: dict[str, Any]) -> bool:
    optional(d, "channel_type", int)
    optional(d, "flags", int)
    if d.get("channel_type") is not None:
        return bool(d["channel_type"] == CHANNEL_TYPE_DM)
    return "guild_id" not in d and not (d.get("flags") or 0) & FLAG_EPHEMERAL


def _user_dm(d: dict[str, Any], own_user_id: str | None, *, update: bool) -> bool:
    """Whether a valid-looking message is a user's DM; raises MalformedEvent on a bad shape.

    System messages, guild and ephemeral messages, and webhooks are ignored before the full
    check; bots (ourselves included) after it.  An update without author is a partial update.
    """
    optional(d, "type", int)
    if (d.get("type") or 0) not in USER_MESSAGE_TYPES:
        return False
    if not _is_dm_message(d) or d.get("webhook_id") is not None:
        return False
    if update and d.get("author") is None:
        return False
    check_message(d)
    author = d["author"]
    return not author.get("bot") and author["id"] != own_user_id


def parse_dispatch(name: str, d: Any, own_user_id: str | None) -> GatewayEvent | None:
    """Turn a dispatch (other than READY/RESUMED) into an event, or None if diswoot ignores it.

    Raises MalformedEvent when a dispatch diswoot handles has the wrong shape.
    """
    if name not in ROUTED_EVENTS:
        return None
    d = an_object(d, "d")
    if name == "MESSAGE_CREATE":
        return MessageCreate(d) if _user_dm(d, own_user_id, update=False) else None
    if name == "MESSAGE_UPDATE":
        return MessageUpdate(d) if _user_dm(d, own_user_id, update=True) else None
    if name == "MESSAGE_DELETE":
        if "guild_id" in d:
            return None
        return MessageDelete(id=snowflake(d, "id"), channel_id=snowflake(d, "channel_id"))
    if name == "TYPING_START":
        if "guild_id" in d:
            return None
        channel_id, user_id = snowflake(d, "channel_id"), snowflake(d, "user_id")
        timestamp = d.get("timestamp")
        if not is_int(timestamp):
            raise MalformedEvent("timestamp is not an integer")
        if user_id == own_user_id:
            return None
        return TypingStart(channel_id=channel_id, user_id=user_id, timestamp=timestamp)
    if name == "INTERACTION_CREATE":
        try:  # the same fields an HTTP interaction must have
            kind = check_interaction(d)
        except FieldError as exc:
            raise MalformedEvent(str(exc)) from None
        if kind == PING:  # only ever sent to an HTTP endpoint, and it carries no id or token
            raise MalformedEvent("type is PING, which the gateway never sends")
        return InteractionCreate(d)
    return None
