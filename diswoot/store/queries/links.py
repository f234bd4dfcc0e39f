"""``message_links``: which Discord message is which Chatwoot message."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from diswoot.store.models import Link
from diswoot.store.queries.tx import transaction


def add_link(
    db: sqlite3.Connection,
    discord_message_id: str,
    chatwoot_message_id: int,
    conversation_id: int,
    discord_channel_id: str,
    direction: str,
    now: float,
) -> None:
    with transaction(db):
        db.execute(
            """INSERT OR IGNORE INTO message_links (discord_message_id, chatwoot_message_id,
                   conversation_id, discord_channel_id, direction, created_at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (discord_message_id, chatwoot_message_id, conversation_id, discord_channel_id,
             direction, now),
        )


def links_for_chatwoot(db: sqlite3.Connection, chatwoot_message_id: int) -> list[Link]:
    rows = db.execute(
        "SELECT * FROM message_links WHERE chatwoot_message_id = ? ORDER BY rowid",
        (chatwoot_message_id,),
    ).fetchall()
    return [Link.from_row(r) for r in rows]


def links_for_discord(db: sqlite3.Connection, discord_message_id: str) -> list[Link]:
    rows = db.execute(
        "SELECT * FROM message_links WHERE discord_message_id = ? ORDER BY rowid",
        (discord_message_id,),
    ).fetchall()
    return [Link.from_row(r) for r in rows]


def newest_linked_chatwoot_message(db: sqlite3.Connection, conversation_id: int) -> int | None:
    """The highest Chatwoot message id the bridge linked in this conversation (either way)."""
    row = db.execute(
        "SELECT MAX(chatwoot_message_id) AS newest FROM message_links WHERE conversation_id = ?",
        (conversation_id,),
    ).fetchone()
    return int(row["newest"]) if row and row["newest"] is not None else None


_SQL_CHUNK = 500
"""At most this many ``?`` per ``IN (...)`` list (SQLite's default limit is far higher)."""


def handled_chatwoot_messages(
    db: sqlite3.Connection, queue: str, message_ids: Iterable[int]
) -> set[int]:
    """The ids among ``message_ids`` that have a reply job in ``queue`` or an "out" link."""
    ids = sorted(set(message_ids))
    found: set[int] = set()
    for start in range(0, len(ids), _SQL_CHUNK):
        chunk = ids[start : start + _SQL_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"""SELECT DISTINCT chatwoot_message_id FROM message_links
                WHERE direction = 'out' AND chatwoot_message_id IN ({marks})""",  # noqa: S608
            chunk,
        ).fetchall()
        found.update(int(row[0]) for row in rows)
        keys = [f"msg:{message_id}" for message_id in chunk]
        rows = db.execute(
            f"SELECT dedupe_key FROM jobs WHERE queue = ? AND dedupe_key IN ({marks})",  # noqa: S608
            [queue, *keys],
        ).fetchall()
        found.update(int(str(row[0]).removeprefix("msg:")) for row in rows)
    return found


def reply_attempts(
    db: sqlite3.Connection, queue: str, message_id: int
) -> list[tuple[str, str]]:
    """``(dedupe_key, state)`` of the reply jobs of one message (``msg:{id}``, ``retry:{id}:n``)."""
    rows = db.execute(
        """SELECT dedupe_key, state FROM jobs
           WHERE queue = ? AND (dedupe_key = ? OR dedupe_key LIKE ?) ORDER BY id""",
        (queue, f"msg:{message_id}", f"retry:{message_id}:%"),
    ).fetchall()
    return [(str(row["dedupe_key"]), str(row["state"])) for row in rows]
