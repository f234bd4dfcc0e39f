"""``csat_responses``: the satisfaction survey of a conversation."""

from __future__ import annotations

import sqlite3

from diswoot.store.models import CsatResponse
from diswoot.store.queries.tx import transaction


def get_csat(db: sqlite3.Connection, conversation_id: int) -> CsatResponse | None:
    row = db.execute(
        "SELECT * FROM csat_responses WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    return CsatResponse.from_row(row) if row else None


def save_csat(
    db: sqlite3.Connection,
    conversation_id: int,
    discord_id: str,
    rating: int,
    comment: str | None,
    now: float,
) -> bool:
    """Store a rating; False when this conversation was already rated."""
    with transaction(db):
        cur = db.execute(
            """INSERT OR IGNORE INTO csat_responses
                   (conversation_id, discord_id, rating, comment, created_at)
               VALUES (?, ?, ?, ?, ?)""",
            (conversation_id, discord_id, rating, comment, now),
        )
    return cur.rowcount == 1


def mark_csat_submitted(db: sqlite3.Connection, conversation_id: int, now: float) -> None:
    with transaction(db):
        db.execute(
            "UPDATE csat_responses SET submitted_at = ? WHERE conversation_id = ?",
            (now, conversation_id),
        )
