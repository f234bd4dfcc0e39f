"""Typed gateway events for the bridge, plus the state the gateway keeps across connections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHANNEL_TYPE_DM = 1
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

    @property
    def tag(self) -> str:
        """`name#1234`, or just `name` for users on the new (discriminator "0") username system."""
        if self.discriminator in ("0", ""):
            return self.username
        return f"{self.username}#{self.discriminator}"

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> Ready:
        """Build from the READY dispatch's `d`."""
        user = d.get("user") or {}
        application = d.get("application") or {}
        app_id = application.get("id")
        return cls(
            user_id=str(user.get("id", "")),
            username=str(user.get("username", "")),
            discriminator=str(user.get("discriminator", "0")),
            session_id=str(d["session_id"]),
            application_id=None if app_id is None else str(app_id),
        )


@dataclass(frozen=True)
class Resumed:
    """RESUMED: the session continued; `replayed` dispatches were replayed before it."""

    replayed: int


@dataclass(frozen=True)
class _MessageEvent:
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def channel_id(self) -> str:
        return str(self.data["channel_id"])

    @property
    def author_id(self) -> str:
        return str((self.data.get("author") or {}).get("id", ""))

    @property
    def content(self) -> str:
        return str(self.data.get("content") or "")


@dataclass(frozen=True)
class MessageCreate(_MessageEvent):
    """A user's DM to the bot (own, bot, webhook and guild messages are filtered out)."""


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
    """Any interaction delivered over the gateway."""

    data: dict[str, Any]


GatewayEvent = (
    Ready
    | Resumed
    | MessageCreate
    | MessageUpdate
    | MessageDelete
    | TypingStart
    | InteractionCreate
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


def _is_dm_message(d: dict[str, Any]) -> bool:
    if "channel_type" in d:
        return bool(d["channel_type"] == CHANNEL_TYPE_DM)
    return "guild_id" not in d and not int(d.get("flags") or 0) & FLAG_EPHEMERAL


def _is_user_dm(d: dict[str, Any], own_user_id: str | None) -> bool:
    author = d.get("author")
    if not isinstance(author, dict) or not _is_dm_message(d):
        return False
    if author.get("bot") or d.get("webhook_id"):
        return False
    return own_user_id is None or str(author.get("id")) != own_user_id


def parse_dispatch(name: str, d: Any, own_user_id: str | None) -> GatewayEvent | None:
    """Turn a dispatch (other than READY/RESUMED) into an event, or None if diswoot ignores it."""
    if not isinstance(d, dict):
        return None
    if name == "MESSAGE_CREATE" and _is_user_dm(d, own_user_id):
        return MessageCreate(d)
    if name == "MESSAGE_UPDATE" and _is_user_dm(d, own_user_id):
        return MessageUpdate(d)
    if name == "MESSAGE_DELETE" and "guild_id" not in d:
        return MessageDelete(id=str(d["id"]), channel_id=str(d["channel_id"]))
    if name == "TYPING_START" and "guild_id" not in d and str(d.get("user_id")) != own_user_id:
        return TypingStart(
            channel_id=str(d["channel_id"]),
            user_id=str(d["user_id"]),
            timestamp=int(d["timestamp"]),
        )
    if name == "INTERACTION_CREATE":
        return InteractionCreate(d)
    return None
