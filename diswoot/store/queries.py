"""Plain synchronous queries: ``fn(db, ...) -> value``, one transaction each.

Call them through :meth:`diswoot.store.db.Store.call`; never from the trio thread.
Parameterised SQL only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from diswoot.store.models import Conversation, CsatResponse, Job, Link, QueueStats, User


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic step: ``BEGIN IMMEDIATE`` ... ``COMMIT``, or a savepoint inside a batch.

    :class:`~diswoot.store.db.Store` runs each batch of calls in one transaction (group
    commit); there a step is a savepoint, so a failing call undoes only its own writes.
    """
    if db.in_transaction:
        db.execute("SAVEPOINT step")
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # else SQLite aborted the whole transaction already
                db.execute("ROLLBACK TO step")
                db.execute("RELEASE step")
            raise
        db.execute("RELEASE step")
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# --------------------------------------------------------------------------- users


def get_user(db: sqlite3.Connection, discord_id: str) -> User | None:
    row = db.execute("SELECT * FROM users WHERE discord_id = ?", (discord_id,)).fetchone()
    return User.from_row(row) if row else None


def user_by_channel(db: sqlite3.Connection, channel_id: str) -> User | None:
    row = db.execute("SELECT * FROM users WHERE dm_channel_id = ?", (channel_id,)).fetchone()
    return User.from_row(row) if row else None


def user_by_contact(db: sqlite3.Connection, contact_id: int) -> User | None:
    row = db.execute(
        "SELECT * FROM users WHERE contact_id = ? ORDER BY updated_at DESC LIMIT 1", (contact_id,)
    ).fetchone()
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


def note_last_message(
    db: sqlite3.Connection, discord_id: str, message_id: str, now: float
) -> None:
    """Advance the user's newest-seen DM message id (snowflakes compare as integers)."""
    with transaction(db):
        db.execute(
            """UPDATE users SET last_message_id = ?, updated_at = ?
               WHERE discord_id = ?
                 AND (last_message_id IS NULL
                      OR CAST(last_message_id AS INTEGER) < CAST(? AS INTEGER))""",
            (message_id, now, discord_id, message_id),
        )


def users_active_since(db: sqlite3.Connection, since: float) -> list[User]:
    rows = db.execute(
        "SELECT * FROM users WHERE updated_at >= ? AND dm_channel_id IS NOT NULL"
        " ORDER BY updated_at DESC",
        (since,),
    ).fetchall()
    return [User.from_row(r) for r in rows]


# --------------------------------------------------------------------------- conversations


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


def take_closed_by_user(db: sqlite3.Connection, conversation_id: int) -> bool:
    """Consume the 'user closed it themselves' flag; True if it was set."""
    with transaction(db):
        cur = db.execute(
            """UPDATE conversations SET closed_by_user_at = NULL
               WHERE conversation_id = ? AND closed_by_user_at IS NOT NULL""",
            (conversation_id,),
        )
    return cur.rowcount == 1


def set_reconcile_cursor(db: sqlite3.Connection, conversation_id: int, message_id: int) -> None:
    with transaction(db):
        db.execute(
            """UPDATE conversations SET reconcile_cursor = MAX(COALESCE(reconcile_cursor, 0), ?)
               WHERE conversation_id = ?""",
            (message_id, conversation_id),
        )


def conversations_active_since(db: sqlite3.Connection, since: float) -> list[Conversation]:
    rows = db.execute(
        """SELECT * FROM conversations
           WHERE COALESCE(last_activity_at, created_at) >= ?
           ORDER BY COALESCE(last_activity_at, created_at) DESC""",
        (since,),
    ).fetchall()
    return [Conversation.from_row(r) for r in rows]


# --------------------------------------------------------------------------- jobs


def add_job(
    db: sqlite3.Connection,
    queue: str,
    dedupe_key: str,
    lane: str,
    kind: str,
    payload: dict[str, Any],
    now: float,
) -> Job | None:
    """Store a job; None when (queue, dedupe_key) was stored before (a duplicate)."""
    with transaction(db):
        return _insert_job(db, queue, dedupe_key, lane, kind, payload, now)


def job_exists(db: sqlite3.Connection, queue: str, dedupe_key: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM jobs WHERE queue = ? AND dedupe_key = ?", (queue, dedupe_key)
    ).fetchone()
    return row is not None


def pending_jobs(db: sqlite3.Connection, queue: str) -> list[Job]:
    rows = db.execute(
        "SELECT * FROM jobs WHERE queue = ? AND state = 'pending' ORDER BY id", (queue,)
    ).fetchall()
    return [Job.from_row(r) for r in rows]


def finish_job(
    db: sqlite3.Connection, job_id: int, now: float, result: dict[str, Any] | None = None
) -> None:
    with transaction(db):
        db.execute(
            """UPDATE jobs SET state = 'done', result = ?, last_error = NULL, updated_at = ?,
                               attempts = attempts + 1
               WHERE id = ?""",
            (json.dumps(result) if result is not None else None, now, job_id),
        )


def reschedule_job(
    db: sqlite3.Connection, job_id: int, error: str, next_attempt_at: float, now: float
) -> int:
    """Record a failed attempt; return the attempt count."""
    with transaction(db):
        db.execute(
            """UPDATE jobs SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,
                               updated_at = ?
               WHERE id = ?""",
            (error[:2000], next_attempt_at, now, job_id),
        )
        row = db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return int(row["attempts"]) if row else 0


def update_job_payload(db: sqlite3.Connection, job_id: int, payload: dict[str, Any]) -> None:
    """Persist progress made inside a job (e.g. which parts were already sent)."""
    with transaction(db):
        db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (json.dumps(payload), job_id))


def bury_job(db: sqlite3.Connection, job_id: int, error: str, now: float) -> None:
    """Dead-letter a job: kept, listed by ``diswoot queue``, retried only on request."""
    with transaction(db):
        db.execute(
            """UPDATE jobs SET state = 'dead', attempts = attempts + 1, last_error = ?,
                               updated_at = ?
               WHERE id = ?""",
            (error[:2000], now, job_id),
        )


def list_jobs(
    db: sqlite3.Connection, states: Iterable[str] = ("pending", "dead"), queue: str | None = None
) -> list[Job]:
    wanted = list(states)
    marks = ",".join("?" for _ in wanted)
    sql = f"SELECT * FROM jobs WHERE state IN ({marks})"  # noqa: S608 - only placeholders
    params: list[Any] = list(wanted)
    if queue is not None:
        sql += " AND queue = ?"
        params.append(queue)
    rows = db.execute(sql + " ORDER BY id", params).fetchall()
    return [Job.from_row(r) for r in rows]


def requeue_dead(
    db: sqlite3.Connection, now: float, job_ids: Iterable[int] | None = None
) -> list[Job]:
    """Move dead jobs (all, or the given ids) back to pending, due now."""
    with transaction(db):
        if job_ids is None:
            rows = db.execute("SELECT id FROM jobs WHERE state = 'dead'").fetchall()
            ids = [int(r["id"]) for r in rows]
        else:
            ids = list(job_ids)
        for job_id in ids:
            db.execute(
                """UPDATE jobs SET state = 'pending', next_attempt_at = ?, updated_at = ?
                   WHERE id = ? AND state = 'dead'""",
                (now, now, job_id),
            )
    if not ids:
        return []
    marks = ",".join("?" for _ in ids)
    rows = db.execute(
        f"SELECT * FROM jobs WHERE id IN ({marks}) AND state = 'pending'",  # noqa: S608
        ids,
    ).fetchall()
    return [Job.from_row(r) for r in rows]


def queue_stats(db: sqlite3.Connection) -> dict[str, QueueStats]:
    stats: dict[str, QueueStats] = {}
    rows = db.execute(
        """SELECT queue, state, COUNT(*) AS n, MIN(created_at) AS oldest
           FROM jobs WHERE state IN ('pending', 'dead') GROUP BY queue, state"""
    ).fetchall()
    for row in rows:
        entry = stats.setdefault(row["queue"], QueueStats())
        if row["state"] == "pending":
            entry.pending = int(row["n"])
            entry.oldest_pending_at = float(row["oldest"])
        else:
            entry.dead = int(row["n"])
    return stats


def prune_done_jobs(db: sqlite3.Connection, older_than: float) -> int:
    with transaction(db):
        cur = db.execute(
            "DELETE FROM jobs WHERE state = 'done' AND updated_at < ?", (older_than,)
        )
    return cur.rowcount


# --------------------------------------------------------------------------- message links


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


# --------------------------------------------------------------------------- CSAT


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


# --------------------------------------------------------------------------- kv


def get_value(db: sqlite3.Connection, key: str) -> Any:
    row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return json.loads(row["value"]) if row else None


def set_value(db: sqlite3.Connection, key: str, value: Any) -> None:
    with transaction(db):
        db.execute(
            """INSERT INTO kv (key, value) VALUES (?, ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
            (key, json.dumps(value)),
        )


# ---- inbound (diswoot.bridge.inbound and diswoot.bridge.tickets)


def forget_user_contact(db: sqlite3.Connection, discord_id: str, now: float) -> None:
    """Drop the cached contact (and conversation): it was deleted in Chatwoot."""
    with transaction(db):
        db.execute(
            """UPDATE users SET contact_id = NULL, source_id = NULL, conversation_id = NULL,
                                updated_at = ?
               WHERE discord_id = ?""",
            (now, discord_id),
        )


def newest_linked_chatwoot_message(db: sqlite3.Connection, conversation_id: int) -> int | None:
    """The highest Chatwoot message id the bridge linked in this conversation (either way)."""
    row = db.execute(
        "SELECT MAX(chatwoot_message_id) AS newest FROM message_links WHERE conversation_id = ?",
        (conversation_id,),
    ).fetchone()
    return int(row["newest"]) if row and row["newest"] is not None else None


def job_lane(db: sqlite3.Connection, queue: str, dedupe_key: str) -> str | None:
    """The lane of a stored job (e.g. the author of a DM), if the job is still stored."""
    row = db.execute(
        "SELECT lane FROM jobs WHERE queue = ? AND dedupe_key = ?", (queue, dedupe_key)
    ).fetchone()
    return str(row["lane"]) if row else None


# ---- outbound (diswoot.bridge.outbound, diswoot.bridge.delivery, diswoot.bridge.csat)


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
) -> tuple[bool, str | None, bool]:
    """Record a status from a webhook, atomically; returns ``(changed, previous, by_user)``.

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
            "SELECT status, closed_by_user_at FROM conversations WHERE conversation_id = ?",
            (conversation_id,),
        ).fetchone()
        if row is None:
            return False, None, False
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


def record_outbound_part(
    db: sqlite3.Connection,
    job_id: int,
    payload: dict[str, Any],
    discord_message_id: str,
    discord_channel_id: str,
    chatwoot_message_id: int | None,
    conversation_id: int | None,
    now: float,
) -> None:
    """One part of an outbound job reached Discord: save progress and the link together."""
    with transaction(db):
        db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (json.dumps(payload), job_id))
        if chatwoot_message_id is not None and conversation_id is not None:
            db.execute(
                """INSERT OR IGNORE INTO message_links (discord_message_id, chatwoot_message_id,
                       conversation_id, discord_channel_id, direction, created_at)
                   VALUES (?, ?, ?, ?, 'out', ?)""",
                (discord_message_id, chatwoot_message_id, conversation_id, discord_channel_id,
                 now),
            )


# ---- reconcile (diswoot.bridge.reconcile; agent deletes and retries in diswoot.bridge.outbound)

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


# ---- backfill (diswoot.bridge.backfill; inbound's bookkeeping of received DMs)


def note_dm_received(
    db: sqlite3.Connection, discord_id: str, channel_id: str, message_id: str, now: float
) -> None:
    """A user's DM was stored: remember their DM channel and advance their newest-seen id.

    Creates the user row if needed; the id only moves forward (snowflakes compare as integers),
    so the downtime backfill starts after the newest DM the daemon already holds.
    """
    with transaction(db):
        _note_dm(db, discord_id, channel_id, message_id, now)


# ---- perf (combined queries: one worker-thread hop where the bridge made several)


def _insert_job(
    db: sqlite3.Connection,
    queue: str,
    dedupe_key: str,
    lane: str,
    kind: str,
    payload: dict[str, Any],
    now: float,
) -> Job | None:
    """``add_job``'s statements, inside the caller's transaction."""
    cur = db.execute(
        """INSERT OR IGNORE INTO jobs (queue, dedupe_key, lane, kind, payload,
                                       next_attempt_at, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        (queue, dedupe_key, lane, kind, json.dumps(payload), now, now, now),
    )
    if cur.rowcount != 1:
        return None
    row = db.execute("SELECT * FROM jobs WHERE id = ?", (cur.lastrowid,)).fetchone()
    return Job.from_row(row)


def _note_dm(
    db: sqlite3.Connection, discord_id: str, channel_id: str, message_id: str, now: float
) -> None:
    """Inside the caller's transaction: the user's DM channel, newest DM id (only forward)."""
    db.execute(
        """INSERT INTO users (discord_id, dm_channel_id, last_message_id, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (discord_id) DO UPDATE SET
               dm_channel_id = excluded.dm_channel_id,
               last_message_id = CASE
                   WHEN users.last_message_id IS NULL
                     OR CAST(users.last_message_id AS INTEGER)
                        < CAST(excluded.last_message_id AS INTEGER)
                   THEN excluded.last_message_id
                   ELSE users.last_message_id END,
               updated_at = excluded.updated_at""",
        (discord_id, channel_id, message_id, now, now),
    )


def add_jobs(
    db: sqlite3.Connection,
    queue: str,
    jobs: Iterable[tuple[str, str, str, dict[str, Any]]],
    now: float,
) -> list[Job | None]:
    """``add_job`` for several ``(dedupe_key, lane, kind, payload)`` in one transaction.

    One entry per job, in order: the stored job, or None for a duplicate.
    """
    with transaction(db):
        return [
            _insert_job(db, queue, key, lane, kind, body, now) for key, lane, kind, body in jobs
        ]


def accept_dm(
    db: sqlite3.Connection,
    queue: str,
    lane: str,
    kind: str,
    payload: dict[str, Any],
    now: float,
    *,
    discord_id: str,
    channel_id: str,
    message_id: str,
) -> Job | None:
    """``add_job`` (keyed by ``message_id``) and, for a new job, ``note_dm_received``, at once."""
    with transaction(db):
        job = _insert_job(db, queue, message_id, lane, kind, payload, now)
        if job is not None:
            _note_dm(db, discord_id, channel_id, message_id, now)
    return job


def ticket_state(
    db: sqlite3.Connection, discord_id: str, message_id: str | None = None
) -> tuple[User | None, Conversation | None, list[Link]]:
    """The user, their current conversation and the links of ``message_id``, in one read."""
    user = get_user(db, discord_id)
    conversation = None
    if user is not None and user.conversation_id is not None:
        conversation = get_conversation(db, user.conversation_id)
    links = links_for_discord(db, message_id) if message_id is not None else []
    return user, conversation, links


def begin_post(
    db: sqlite3.Connection, job_id: int, payload: dict[str, Any], conversation_id: int
) -> int | None:
    """Write the posting attempt into the job before a POST Chatwoot cannot dedupe.

    Sets ``payload["posting"] = {"conversation_id", "after"}`` (``after``: the newest Chatwoot
    message the bridge linked in that conversation) and stores the payload; returns ``after``.
    """
    with transaction(db):
        after = newest_linked_chatwoot_message(db, conversation_id)
        payload["posting"] = {"conversation_id": conversation_id, "after": after}
        db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (json.dumps(payload), job_id))
    return after


def record_inbound_delivery(
    db: sqlite3.Connection,
    *,
    discord_message_id: str,
    chatwoot_message_id: int,
    conversation_id: int,
    channel_id: str,
    discord_id: str,
    now: float,
    reopened: bool = False,
) -> User:
    """What a forwarded DM changes, in one transaction; returns the user row afterwards.

    ``add_link`` (direction in), ``touch_conversation``, ``change_conversation_status`` to
    open when ``reopened``, ``upsert_user`` with the DM channel and ``note_last_message``.
    """
    with transaction(db):
        db.execute(
            """INSERT OR IGNORE INTO message_links (discord_message_id, chatwoot_message_id,
                   conversation_id, discord_channel_id, direction, created_at)
               VALUES (?, ?, ?, ?, 'in', ?)""",
            (discord_message_id, chatwoot_message_id, conversation_id, channel_id, now),
        )
        if reopened:
            db.execute(
                """UPDATE conversations SET status = 'open', status_at = ?,
                       last_activity_at = MAX(COALESCE(last_activity_at, 0), ?)
                   WHERE conversation_id = ?""",
                (now, now, conversation_id),
            )
        else:
            db.execute(
                """UPDATE conversations
                   SET last_activity_at = MAX(COALESCE(last_activity_at, 0), ?)
                   WHERE conversation_id = ?""",
                (now, conversation_id),
            )
        _note_dm(db, discord_id, channel_id, discord_message_id, now)
    user = get_user(db, discord_id)
    assert user is not None
    return user
