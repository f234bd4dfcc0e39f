"""WAL checkpoints beside the store, not in its transactions.

The store's connection never checkpoints; :func:`checkpoint_wal` does, PASSIVE, from a
connection of its own in a worker thread, so no commit copies the log and commits go on meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import trio

log = logging.getLogger("diswoot.store")

CHECKPOINT_SECONDS = 1.0
"""Longest time between a commit and the checkpoint that copies it into the database file."""


@dataclass
class CheckpointStats:
    """What the checkpoints did (observability, tests)."""

    runs: int = 0
    log_frames: int = 0  # frames in the log at the last checkpoint
    copied_frames: int = 0  # of those, copied into the database file
    failing: bool = False  # the last attempt failed (logged once until one works again)


def no_automatic_checkpoints(db: sqlite3.Connection) -> None:
    """Leave checkpoints to :func:`checkpoint_wal` (see docs/modules.md)."""
    db.execute("PRAGMA wal_autocheckpoint=0")


def _connect(path: str, factory: type[sqlite3.Connection]) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None, factory=factory)


def _checkpoint(db: sqlite3.Connection) -> tuple[int, int, int]:
    busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(frames), int(copied)


async def checkpoint_wal(
    path: str,
    commits: Callable[[], int],
    stats: CheckpointStats,
    *,
    factory: type[sqlite3.Connection] = sqlite3.Connection,
    period: float = CHECKPOINT_SECONDS,
) -> None:
    """Until cancelled: after the first ``period`` and after every later one in which
    ``commits()`` changed, checkpoint the log of the database at ``path`` through a connection
    of its own, in a worker thread.  Failing to open that connection is a failed checkpoint
    like any other: logged once, tried again next period, never the store's end."""
    db: sqlite3.Connection | None = None
    try:
        seen: int | None = None  # the first period checkpoints whatever the log holds
        while True:
            await trio.sleep(period)
            now = commits()
            if now == seen:
                continue
            seen = now
            try:
                if db is None:
                    db = await trio.to_thread.run_sync(_connect, path, factory)
                busy, frames, copied = await trio.to_thread.run_sync(_checkpoint, db)
            except sqlite3.Error as exc:  # e.g. the disk is full: the next period tries again
                if not stats.failing:
                    log.warning("WAL checkpoint failed (retrying every %gs): %s", period, exc)
                stats.failing = True
                seen = None  # retry next period, commits or not
                continue
            if stats.failing:
                log.info("WAL checkpoints work again")
                stats.failing = False
            stats.runs += 1
            stats.log_frames, stats.copied_frames = frames, copied
            if busy:
                log.debug("WAL checkpoint: %d of %d frames copied (busy)", copied, frames)
    finally:
        if db is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(db.close)
