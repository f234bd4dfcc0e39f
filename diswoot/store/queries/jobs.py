"""``jobs``: the durable work queues (one row per job, unique per queue and dedupe key)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any, NamedTuple

from diswoot.store.models import Job, QueueStats
from diswoot.store.queries.tx import transaction


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
    assert cur.lastrowid is not None
    # the row as stored, without reading it back (and parsing the payload again)
    return Job(
        id=cur.lastrowid, queue=queue, dedupe_key=dedupe_key, lane=lane, kind=kind,
        payload=payload, state="pending", attempts=0, next_attempt_at=now, last_error=None,
        result=None, created_at=now, updated_at=now,
    )


def job_exists(db: sqlite3.Connection, queue: str, dedupe_key: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM jobs WHERE queue = ? AND dedupe_key = ?", (queue, dedupe_key)
    ).fetchone()
    return row is not None


def get_job(db: sqlite3.Connection, job_id: int) -> Job | None:
    row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return Job.from_row(row) if row else None


def get_jobs(db: sqlite3.Connection, job_ids: list[int]) -> dict[int, Job]:
    """The jobs with these ids (fewer when some are gone), by id."""
    marks = ",".join("?" * len(job_ids))
    rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({marks})", job_ids)  # noqa: S608
    return {int(r["id"]): Job.from_row(r) for r in rows}


class JobRef(NamedTuple):
    """A pending job without its payload (what a queue keeps of a job waiting its turn)."""

    id: int
    lane: str
    created_at: float
    next_attempt_at: float


def pending_job_refs(db: sqlite3.Connection, queue: str) -> list[JobRef]:
    """The queue's pending jobs in id order, without their payloads."""
    rows = db.execute(
        """SELECT id, lane, created_at, next_attempt_at FROM jobs
           WHERE queue = ? AND state = 'pending' ORDER BY id""",
        (queue,),
    )
    return [JobRef(*row) for row in rows]


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


def prune_done_jobs(
    db: sqlite3.Connection, older_than: float, after_id: int, window: int
) -> tuple[int, int | None]:
    """Delete the done jobs that ended before ``older_than`` among the ``window`` jobs after
    ``after_id`` (id order).  Returns how many, and where the next window starts: None once
    this one reached the table's end or a job created since ``older_than`` (ids grow with
    time, so every later job is newer still)."""
    rows = db.execute(
        "SELECT id, created_at FROM jobs WHERE id > ? ORDER BY id LIMIT ?", (after_id, window)
    ).fetchall()
    if not rows:
        return 0, None
    last_id, last_created = int(rows[-1]["id"]), float(rows[-1]["created_at"])
    with transaction(db):
        cur = db.execute(
            """DELETE FROM jobs WHERE id > ? AND id <= ? AND state = 'done'
                                      AND updated_at < ?""",
            (after_id, last_id, older_than),
        )
    finished = len(rows) < window or last_created >= older_than
    return cur.rowcount, None if finished else last_id


def job_lane(db: sqlite3.Connection, queue: str, dedupe_key: str) -> str | None:
    """The lane of a stored job (e.g. the author of a DM), if the job is still stored."""
    row = db.execute(
        "SELECT lane FROM jobs WHERE queue = ? AND dedupe_key = ?", (queue, dedupe_key)
    ).fetchone()
    return str(row["lane"]) if row else None
