"""The fake Discord's records and helpers: requests it saw, error answers, rate-limit windows,
live interactions."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import IO, Any, Protocol
from urllib.parse import unquote

import trio

API_PREFIX = "/api/v10"
MAX_FILE_BYTES = 10 * 1024 * 1024
INTERACTION_ACK_SECONDS = 3.0
INTERACTION_TOKEN_SECONDS = 15 * 60
NONCE_SECONDS = 120.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class GatewayLike(Protocol):
    """What FakeDiscord needs from the fake gateway (``diswoot.testing.fake_gateway``)."""

    url: str
    session_start_limit: dict[str, Any]

    async def serve(self, nursery: trio.Nursery) -> str: ...

    def dispatch(self, event_name: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RecordedFile:
    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One request as the fake saw it (``path`` relative to /api/v10, percent-encoded)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[RecordedFile]
    template: str | None = None
    status: int = 0


class Reply(Exception):
    """Raised by handlers to answer with an error or a specific status."""

    def __init__(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def error_reply(status: int, code: int, message: str, errors: Any = None) -> Reply:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return Reply(status, body)


def form_error(path: str, code: str, message: str) -> Reply:
    node: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        node = {part: node}
    return error_reply(400, 50035, "Invalid Form Body", node)


@dataclass
class FailRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int | None
    times: int
    retry_after: float
    is_global: bool
    raw_body: bytes | None


@dataclass
class Window:
    start: float
    count: int = 0


@dataclass
class Interaction:
    data: dict[str, Any]
    created: float
    acked: bool = False
    original_id: str | None = None
    deferred: bool = False


def memory_stream(*_: Any, **__: Any) -> IO[bytes]:
    """Keep uploaded parts in memory (no temporary files to leak)."""
    return io.BytesIO()


def is_valid_emoji(raw_segment: str) -> bool:
    """A percent-encoded unicode emoji or ``name:id`` (what Discord accepts, roughly)."""
    if "%" not in raw_segment and not raw_segment.isascii():
        return False  # not URL-encoded
    try:
        text = unquote(raw_segment, errors="strict")
    except UnicodeDecodeError:
        return False
    if re.fullmatch(r"[A-Za-z0-9_~]{2,32}:\d{1,20}", text):
        return True
    if not text or text.isascii() or text.endswith("\u200d"):
        return False
    allowed = {"So", "Sk", "Mn", "Me", "Cf"}
    if not all(unicodedata.category(c) in allowed or c.isdigit() or c in "#*" for c in text):
        return False
    # Discord rejects an added VS16 after a character it knows without one (DAD issue #864).
    return not re.search("[\u2714\u2716\u2705]\ufe0f", text)
