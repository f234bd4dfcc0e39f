"""``users``: a Discord user, their Chatwoot contact, DM channel and current conversation."""

from __future__ import annotations

import sqlite3

from diswoot.store.models import User
from diswoot.store.queries.tx import transaction


def get_user(db: sqlite3.Connection, discord_id: str) -> User | None:
    row = db.execute("SELECT * FROM users WHERE discord_id = ?", (discord_id,)).fetchone()
    return User.from_row(row) if row else None


def user_by_channel(db: sqlite3.Connection, channel_id: str) -> User | None:
    row = db.execute("SELECT * FROM users WHERE dm_channel_id = ?", (channel_id,)).fetchone()
    return User.from_row(row) if row else None


def upsert_user(
    db: sqlite3.Connection,
    discord_id: str,
    now: float,
    *,
    dm_channel_id: str | None = None,
    username: str | None = None,
    display_name: str | None = None,
) -> User:
    """Create the user row if needed; update the given (non-None) fields."""
    with transaction(db):
        db.execute(
            """INSERT INTO users (discord_id, dm_channel_id, username, display_name,
                                  created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (discord_id) DO UPDATE SET
                   dm_channel_id = COALESCE(excluded.dm_channel_id, users.dm_channel_id),
                   username = COALESCE(excluded.username, users.username),
                   display_name = COALESCE(excluded.display_name, users.display_name),
                   updated_at = excluded.updated_at""",
            (discord_id, dm_channel_id, username, display_name, now, now),
        )
    user = get_user(db, discord_id)
    assert user is not None
    return user


def set_user_contact(
    db: sqlite3.Connection, discord_id: str, contact_id: int, source_id: str | None, now: float
) -> None:
    with transaction(db):
        db.execute(
            "UPDATE users SET contact_id = ?, source_id = ?, updated_at = ? WHERE discord_id = ?",
            (contact_id, source_id, now, discord_id),
        )


def set_user_conversation(
    db: sqlite3.Connection, discord_id: str, conversation_id: int | None, now: float
) -> None:
    with transaction(db):
        db.execute(
            "UPDATE users SET conversation_id = ?, updated_at = ? WHERE discord_id = ?",
            (conversation_id, now, discord_id),
        )


def mark_greeted(db: sqlite3.Connection, discord_id: str, now: float) -> bool:
    """Record the greeting; True only the first time (so it is sent once)."""
    with transaction(db):
        cur = db.execute(
            "UPDATE users SET greeted_at = ? WHERE discord_id = ? AND greeted_at IS NULL",
            (now, discord_id),
        )
    return cur.rowcount == 1


def users_active_since(db: sqlite3.Connection, since: float) -> list[User]:
    rows = db.execute(
        "SELECT * FROM users WHERE updated_at >= ? AND dm_channel_id IS NOT NULL"
        " ORDER BY updated_at DESC",
        (since,),
    ).fetchall()
    return [User.from_row(r) for r in rows]


def forget_user_contact(db: sqlite3.Connection, discord_id: str, now: float) -> None:
    """Drop the cached contact (and conversation): it was deleted in Chatwoot."""
    with transaction(db):
        db.execute(
            """UPDATE users SET contact_id = NULL, source_id = NULL, conversation_id = NULL,
                                updated_at = ?
               WHERE discord_id = ?""",
            (now, discord_id),
        )
