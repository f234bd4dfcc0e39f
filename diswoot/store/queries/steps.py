"""Bridge steps that change several tables: each is one transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any, NamedTuple

from diswoot.store.models import Job
from diswoot.store.queries.jobs import _insert_job, finish_job, job_exists
from diswoot.store.queries.links import links_for_chatwoot, newest_linked_chatwoot_message
from diswoot.store.queries.tx import transaction


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


class DmToStore(NamedTuple):
    """One DM for :func:`accept_dms`: its job (keyed by the message id) and its user.

    ``posting_conversation``: the conversation it will most likely be posted to; its
    ``posting`` note (see :func:`begin_post`) is then written with the job.
    """

    lane: str
    kind: str
    payload: dict[str, Any]
    discord_id: str
    channel_id: str
    message_id: str
    posting_conversation: int | None = None


def accept_dms(
    db: sqlite3.Connection, queue: str, dms: Iterable[DmToStore], now: float
) -> list[Job | None]:
    """Store DMs as jobs, with each user's DM bookkeeping, in one transaction (group commit).

    One entry per DM, in order: the stored job, or None for a duplicate (nothing changed).
    """
    jobs: list[Job | None] = []
    with transaction(db):
        for dm in dms:
            if dm.posting_conversation is not None:
                _note_posting(db, dm.payload, dm.posting_conversation)
            job = _insert_job(db, queue, dm.message_id, dm.lane, dm.kind, dm.payload, now)
            if job is not None:
                _note_dm(db, dm.discord_id, dm.channel_id, dm.message_id, now)
            jobs.append(job)
    return jobs


def accept_command(
    db: sqlite3.Connection, queue: str, command: DmToStore, now: float, *, done: bool
) -> Job | None:
    """A ``!`` text command's job, keyed by its message id as a DM is (None: seen before).

    ``done``: it runs live, now; stored as done in the same transaction, so the queue never
    sees it pending.
    """
    with transaction(db):
        [job] = accept_dms(db, queue, [command], now)
        if job is not None and done:
            finish_job(db, job.id, now, {"outcome": "run_live"})
    return job


class JobToAdd(NamedTuple):
    """A job another step stores in its own transaction (see :func:`record_inbound_delivery`)."""

    queue: str
    dedupe_key: str
    lane: str
    kind: str
    payload: dict[str, Any]


def begin_post(
    db: sqlite3.Connection, job_id: int, payload: dict[str, Any], conversation_id: int
) -> int | None:
    """Write the posting attempt into the job before a POST Chatwoot cannot dedupe.

    Sets ``payload["posting"] = {"conversation_id", "after"}`` (``after``: the newest Chatwoot
    message the bridge linked in that conversation) and stores the payload; returns ``after``.
    """
    with transaction(db):
        after = _note_posting(db, payload, conversation_id)
        db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (json.dumps(payload), job_id))
    return after


def _note_posting(db: sqlite3.Connection, payload: dict[str, Any], conversation_id: int
                  ) -> int | None:
    """``payload["posting"]`` for a POST into ``conversation_id``; returns its ``after``."""
    after = newest_linked_chatwoot_message(db, conversation_id)
    payload["posting"] = {"conversation_id": conversation_id, "after": after}
    return after


def record_inbound_delivery(
    db: sqlite3.Connection,
    *,
    discord_message_id: str,
    chatwoot_message_id: int,
    conversation_id: int,
    channel_id: str,
    now: float,
    reopened: bool = False,
    finish: tuple[int, dict[str, Any] | None] | None = None,
    then: JobToAdd | None = None,
) -> Job | None:
    """What a forwarded DM changes, in one transaction.

    The link (direction in) and the conversation's activity (and status open when
    ``reopened``); ``finish`` = (job id, result) ends the inbound job in the same
    transaction; ``then`` is stored too (e.g. the confirm reaction) and returned (None: a
    duplicate, or none asked).  The user's DM channel and newest DM were noted when the DM
    was stored (:func:`accept_dms`).
    """
    added: Job | None = None
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
        if finish is not None:
            finish_job(db, finish[0], now, finish[1])
        if then is not None:
            added = _insert_job(db, *then, now)
    return added


def record_outbound_part(
    db: sqlite3.Connection,
    job_id: int,
    payload: dict[str, Any],
    discord_message_id: str,
    discord_channel_id: str,
    chatwoot_message_id: int | None,
    conversation_id: int | None,
    now: float,
    *,
    ending: tuple[dict[str, Any], JobToAdd] | None = None,
) -> Job | None:
    """One part of an outbound job reached Discord: save progress and the link together.

    ``ending`` = (result, next job): it was the last part; the job ends and the next job
    (e.g. the reply's receipt) is stored in the same transaction, and returned (None: none,
    or stored before).
    """
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
        if ending is None:
            return None
        result, then = ending
        finish_job(db, job_id, now, result)
        return _insert_job(db, *then, now)


def finish_job_and_add(
    db: sqlite3.Connection, job_id: int, now: float, result: dict[str, Any] | None, then: JobToAdd
) -> Job | None:
    """End a job and store the job it leads to (e.g. a reply's receipt) in one transaction;
    the new job, or None when it was stored before."""
    with transaction(db):
        finish_job(db, job_id, now, result)
        return _insert_job(db, *then, now)


def _reply_hold(db: sqlite3.Connection, queue: str, message_id: int) -> dict[str, Any] | None:
    """Why a reply must not be sent (an agent deleted it; another job delivered it), or None."""
    if job_exists(db, queue, f"delete:{message_id}"):
        return {"suppressed": "deleted by an agent"}
    links = links_for_chatwoot(db, message_id)
    if any(link.direction == "out" for link in links):
        return {"already_delivered": [link.discord_message_id for link in links]}
    return None


def prepare_reply(
    db: sqlite3.Connection,
    job_id: int,
    queue: str,
    message_id: int,
    payload: dict[str, Any],
    parts: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Before a reply's first send, in one transaction: why it must not be sent (see
    :func:`_reply_hold`), else None with ``parts`` stored in its payload."""
    with transaction(db):
        hold = _reply_hold(db, queue, message_id)
        if hold is not None:
            return hold
        payload["parts"] = parts
        db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (json.dumps(payload), job_id))
    return None


def accept_reply(
    db: sqlite3.Connection,
    reply: JobToAdd,
    message_id: int,
    parts: list[dict[str, Any]] | None,
    now: float,
) -> Job | None:
    """Store an agent's reply (None: stored before), prepared when nothing holds it back.

    In one transaction: the job and, unless :func:`_reply_hold` or ``parts`` is None, its
    ``parts`` in the payload, so the first attempt sends at once (without
    :func:`prepare_reply`).
    """
    with transaction(db):
        if parts is not None and _reply_hold(db, reply.queue, message_id) is None:
            reply.payload["parts"] = parts
        return _insert_job(db, *reply, now)
