"""Row types returned by :mod:`diswoot.store.queries`."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class User:
    discord_id: str
    dm_channel_id: str | None
    username: str | None
    display_name: str | None
    contact_id: int | None
    source_id: str | None
    conversation_id: int | None
    greeted_at: float | None
    last_message_id: str | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> User:
        return cls(**{k: row[k] for k in row.keys()})


@dataclass(frozen=True)
class Conversation:
    conversation_id: int
    discord_id: str
    status: str | None
    status_at: float | None
    last_activity_at: float | None
    uuid: str | None
    ooo_notified_at: float | None
    closed_by_user_at: float | None
    reconcile_cursor: int | None
    created_at: float
    status_event_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Conversation:
        return cls(**{k: row[k] for k in row.keys()})


@dataclass(frozen=True)
class Job:
    id: int
    queue: str
    dedupe_key: str
    lane: str
    kind: str
    payload: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    result: dict[str, Any] | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        values = {k: row[k] for k in row.keys()}
        values["payload"] = json.loads(values["payload"])
        values["result"] = json.loads(values["result"]) if values["result"] else None
        return cls(**values)


@dataclass(frozen=True)
class Link:
    discord_message_id: str
    chatwoot_message_id: int
    conversation_id: int
    discord_channel_id: str
    direction: str
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Link:
        return cls(**{k: row[k] for k in row.keys()})


@dataclass(frozen=True)
class CsatResponse:
    conversation_id: int
    discord_id: str
    rating: int
    comment: str | None
    submitted_at: float | None
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CsatResponse:
        return cls(**{k: row[k] for k in row.keys()})


@dataclass
class QueueStats:
    pending: int = 0
    dead: int = 0
    oldest_pending_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
