"""The fake Chatwoot's records and wire helpers: requests it saw, webhooks it sent,
Rails JSON and form decoding, Chatwoot's default working hours."""

from __future__ import annotations

import http
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import trio

Json = dict[str, Any]

MESSAGE_TYPES = ("incoming", "outgoing", "activity", "template")
INCOMING, OUTGOING, ACTIVITY, TEMPLATE = range(4)
STATUSES = ("open", "resolved", "pending", "snoozed")
MESSAGE_STATUSES = ("sent", "delivered", "read", "failed")
DELETED_TEXT = "This message was deleted"
SEARCH_PAGE_SIZE = 15
SEARCH_LIMIT_PER_MINUTE = 100
CONVERSATIONS_PER_PAGE = 25
MESSAGES_PER_MINUTE = 200
MAX_ATTACHMENTS = 15
MAX_CONTENT = 150_000
CSAT_WINDOW_DAYS = 14
WEBHOOK_TIMEOUT = 5.0
NOT_FOUND: Json = {"error": "Resource could not be found"}
# Conversation attributes whose change fires conversation_updated (§2.5).
TRACKED_CONVERSATION_ATTRIBUTES = (
    "team_id",
    "assignee_id",
    "status",
    "snoozed_until",
    "custom_attributes",
    "label_list",
    "waiting_since",
    "first_reply_created_at",
    "priority",
)
# Real routes the prose docs describe but the vendored swagger lacks: not spec-checked.
SPEC_GAPS = (
    ("PATCH", re.compile(r"^/api/v1/accounts/\d+/conversations/\d+/messages/\d+$")),
    ("PUT", re.compile(r"^/api/v1/accounts/\d+/conversations/\d+/messages/\d+$")),
    ("PATCH", re.compile(r"^/api/v1/accounts/\d+/contacts/\d+$")),
    ("*", re.compile(r"^/public/api/v1/csat_survey/[^/]+$")),
)
FILE_TYPES = {
    "image/jpeg": "image",
    "image/png": "image",
    "image/gif": "image",
    "image/bmp": "image",
    "image/webp": "image",
    "video/mp4": "video",
    "video/ogg": "video",
    "video/webm": "video",
    "video/quicktime": "video",
}


@dataclass
class RecordedFile:
    """One uploaded file part."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One request the fake received (``status`` is filled in once answered)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    form: dict[str, str]
    files: list[RecordedFile]
    headers: dict[str, str]
    status: int = 0


class WebhookDelivery(NamedTuple):
    """One webhook POST; ``status`` is None when the request itself failed (timeout, refused)."""

    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None


@dataclass
class InjectedFailure:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    body: Any


@dataclass
class QueuedEvent:
    payload: Json
    done: trio.Event = field(default_factory=trio.Event)


def rails_json(payload: Any) -> bytes:
    """``payload.to_json`` as Rails writes it: compact, UTF-8, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode()


def iso(epoch: float) -> str:
    """Rails JSON time: ISO-8601 UTC with milliseconds."""
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def default_working_hours() -> list[Json]:
    """Chatwoot's defaults: Mon-Fri 09:00-17:00, Saturday and Sunday closed."""
    hours = []
    for day in range(7):
        closed = day in (0, 6)
        hours.append(
            {
                "day_of_week": day,
                "closed_all_day": closed,
                "open_hour": None if closed else 9,
                "open_minutes": None if closed else 0,
                "close_hour": None if closed else 17,
                "close_minutes": None if closed else 0,
                "open_all_day": False,
            }
        )
    return hours


def reason_phrase(status: int) -> str:
    """The standard reason phrase, as Net::HTTP reports it."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def truthy(value: Any) -> bool:
    """Rails boolean casting of a param."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "t", "yes", "on")
    return bool(value)


def rails_form(form: dict[str, str]) -> Json:
    """Decode multipart text fields as MessageBuilder does (JSON content_attributes, booleans)."""
    out: Json = dict(form)
    if "private" in out:
        out["private"] = truthy(out["private"])
    raw = out.get("content_attributes")
    if isinstance(raw, str):
        try:
            out["content_attributes"] = json.loads(raw) if raw else {}
        except ValueError:
            out["content_attributes"] = {}
    return out
