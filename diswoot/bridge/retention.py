"""Retention: done jobs are deleted once nothing can present their event again.

A done job is what dedupes a replayed event, so it is kept :data:`RETENTION_SECONDS` after its
end (30 days), or twice the backfill's look-back when that is longer: beyond what a RESUME, the
backfill or the reconciliation sweep can reach.  Pending and dead-lettered jobs are never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from diswoot.bridge.reconcile import LOOKBACK_SECONDS
from diswoot.config import Config
from diswoot.metrics import Metrics
from diswoot.store import Store
from diswoot.store import queries as q

log = logging.getLogger("diswoot.retention")

DAY = 86400.0
RETENTION_SECONDS = 30 * DAY
"""How long a done job is kept after it ended (at least; see :func:`retention_seconds`)."""
FIRST_DELAY_SECONDS = 60.0
INTERVAL_SECONDS = 6 * 3600.0
WINDOW = 1000
"""Jobs examined per store call."""


def retention_seconds(cfg: Config) -> float:
    """How long done jobs are kept: 30 days, or twice the longest look-back if that is more."""
    return max(RETENTION_SECONDS, 2 * cfg.backfill_hours * 3600.0, 2 * LOOKBACK_SECONDS)


async def prune_done_jobs(store: Store, older_than: float, *, window: int = WINDOW) -> int:
    """Delete the done jobs that ended before ``older_than`` (Unix time); how many."""
    deleted, after_id = 0, 0
    while True:
        count, next_after = await store.call(q.prune_done_jobs, older_than, after_id, window)
        deleted += count
        if next_after is None:
            return deleted
        after_id = next_after


async def run_retention(
    store: Store,
    cfg: Config,
    metrics: Metrics,
    stop: trio.Event,
    *,
    clock: Callable[[], float],
    prune: Callable[[Store, float], Awaitable[int]] = prune_done_jobs,
) -> None:
    """Prune done jobs a minute after start and every :data:`INTERVAL_SECONDS`, until ``stop``."""
    keep = retention_seconds(cfg)
    delay = FIRST_DELAY_SECONDS
    while True:
        with trio.move_on_after(delay):
            await stop.wait()
        if stop.is_set():
            return
        deleted = await prune(store, clock() - keep)
        metrics.jobs_pruned.inc(deleted)
        if deleted:
            log.info("deleted %d done job(s) older than %.0f days", deleted, keep / DAY)
        delay = INTERVAL_SECONDS
