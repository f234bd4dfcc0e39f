"""``conversations``: the Chatwoot conversations the bridge knows, and their state."""

from __future__ import annotations

import sqlite3

from diswoot.store.models import Conversation
from diswoot.store.queries.tx import transaction


def get_conversation(db: sqlite3.Connection, conversation_id: int) -> Conversation | None:
    row = db.execute(
        "SELECT * FROM conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    return Conversation.from_row(row) if row else None


def upsert_conversation(
    db: sqlite3.Connection,
    conversation_id: int,
    discord_id: str,
    now: float,
    *,
    status: str | None = None,
    last_activity_at: float | None = None,
    uuid: str | None = None,
) -> Conversation:
    """Create or update what we know about a conversation (None fields are kept)."""
    with transaction(db):
        db.execute(
            """INSERT INTO conversations (conversation_id, discord_id, status, status_at,
                                          last_activity_at, uuid, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (conversation_id) DO UPDATE SET
                   discord_id = excluded.discord_id,
                   status = COALESCE(excluded.status, conversations.status),
                   status_at = CASE WHEN excluded.status IS NULL THEN conversations.status_at
                                    ELSE excluded.status_at END,
                   last_activity_at = COALESCE(excluded.last_activity_at,
                                               conversations.last_activity_at),
                   uuid = COALESCE(excluded.uuid, conversations.uuid)""",
            (
                conversation_id,
                discord_id,
                status,
                now if status is not None else None,
                last_activity_at,
                uuid,
                now,
            ),
        )
    conv = get_conversation(db, conversation_id)
    assert conv is not None
    return conv


def change_conversation_status(
    db: sqlite3.Connection, conversation_id: int, status: str, now: float
) -> str | None:
    """Set the status; return the previous one (None if unknown).  No-op when unchanged."""
    with transaction(db):
        row = db.execute(
            "SELECT status FROM conversations WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()
        previous = row["status"] if row else None
        if row is not None:
            db.execute(
                "UPDATE conversations SET status = ?, status_at = ? WHERE conversation_id = ?",
                (status, now, conversation_id),
            )
    return previous


def touch_conversation(db: sqlite3.Connection, conversation_id: int, at: float) -> None:
    with transaction(db):
        db.execute(
            """UPDATE conversations SET last_activity_at = MAX(COALESCE(last_activity_at, 0), ?)
               WHERE conversation_id = ?""",
            (at, conversation_id),
        )


def mark_ooo_notified(db: sqlite3.Connection, conversation_id: int, now: float) -> bool:
    """True only the first time for this conversation (one out-of-office notice per ticket)."""
    with transaction(db):
        cur = db.execute(
            """UPDATE conversations SET ooo_notified_at = ?
               WHERE conversation_id = ? AND ooo_notified_at IS NULL""",
            (now, conversation_id),
        )
    return cur.rowcount == 1


def set_closed_by_user(db: sqlite3.Connection, conversation_id: int, at: float | None) -> None:
    with transaction(db):
        db.execute(
            "UPDATE conversations SET closed_by_user_at = ? WHERE conversation_id = ?",
            (at, conversation_id),
        )


def set_reconcile_cursor(db: sqlite3.Connection, conversation_id: int, message_id: int) -> None:
    with transaction(db):
        db.execute(
            """UPDATE conversations SET reconcile_cursor = MAX(COALESCE(reconcile_cursor, 0), ?)
               WHERE conversation_id = ?""",
            (message_id, conversation_id),
        )


def adopt_conversation(
    db: sqlite3.Connection,
    conversation_id: int,
    discord_id: str,
    contact_id: int | None,
    source_id: str | None,
    now: float,
) -> Conversation:
    """Map a conversation we did not create (an agent started it) to its Discord user.

    Creates the user row if needed, fills its contact/source only when unknown, and makes this
    conversation the user's current one when it is newer than the one on record.
    """
    with transaction(db):
        db.execute(
            """INSERT INTO users (discord_id, contact_id, source_id, conversation_id,
                                  created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (discord_id) DO UPDATE SET
                   contact_id = COALESCE(users.contact_id, excluded.contact_id),
                   source_id = COALESCE(users.source_id, excluded.source_id),
                   conversation_id = CASE
                       WHEN users.conversation_id IS NULL
                            OR users.conversation_id < excluded.conversation_id
                       THEN excluded.conversation_id ELSE users.conversation_id END,
                   updated_at = excluded.updated_at""",
            (discord_id, contact_id, source_id, conversation_id, now, now),
        )
        db.execute(
            """INSERT INTO conversations (conversation_id, discord_id, created_at)
               VALUES (?, ?, ?)
               ON CONFLICT (conversation_id) DO NOTHING""",
            (conversation_id, discord_id, now),
        )
    conv = get_conversation(db, conversation_id)
    assert conv is not None
    return conv


def apply_status_event(
    db: sqlite3.Connection,
    conversation_id: int,
    status: str,
    now: float,
    closed_by_user_window: float,
    last_activity_at: float | None = None,
    event_at: float | None = None,
) -> tuple[bool, str | None, bool] | None:
    """Record a status from a webhook, atomically; returns ``(changed, previous, by_user)``, or
    None for an event older (its conversation's ``updated_at``, ``event_at``) than the last one
    applied: Chatwoot sends webhooks in no particular order.

    ``changed`` is False when the store already had this status (a redelivered or twin event)
    unless the user closed the ticket themselves within ``closed_by_user_window`` seconds (the
    command may have recorded "resolved" before the webhook came); that flag is consumed here.
    """
    with transaction(db):
        if last_activity_at is not None:
            db.execute(
                """UPDATE conversations
                   SET last_activity_at = MAX(COALESCE(last_activity_at, 0), ?)
                   WHERE conversation_id = ?""",
                (last_activity_at, conversation_id),
            )
        row = db.execute(
            """SELECT status, closed_by_user_at, status_event_at FROM conversations
               WHERE conversation_id = ?""",
            (conversation_id,),
        ).fetchone()
        if row is None:
            return False, None, False
        applied_at = row["status_event_at"]
        if event_at is not None and applied_at is not None and event_at < applied_at:
            return None
        if event_at is not None:
            db.execute(
                "UPDATE conversations SET status_event_at = ? WHERE conversation_id = ?",
                (event_at, conversation_id),
            )
        closed_at = row["closed_by_user_at"]
        by_user = status == "resolved" and closed_at is not None
        if closed_at is not None and status == "resolved":
            db.execute(
                "UPDATE conversations SET closed_by_user_at = NULL WHERE conversation_id = ?",
                (conversation_id,),
            )
        by_user = by_user and closed_at >= now - closed_by_user_window
        previous = row["status"]
        if previous == status and not by_user:
            return False, previous, False
        db.execute(
            "UPDATE conversations SET status = ?, status_at = ? WHERE conversation_id = ?",
            (status, now, conversation_id),
        )
    return True, previous if previous != status else None, by_user


def set_conversation_uuid(db: sqlite3.Connection, conversation_id: int, uuid: str) -> None:
    """Cache the conversation uuid (needed by the public CSAT API)."""
    with transaction(db):
        db.execute(
            "UPDATE conversations SET uuid = ? WHERE conversation_id = ?", (uuid, conversation_id)
        )
