"""Retention: done jobs are deleted after the retention period, nothing else is, and a replay
within it is still deduped."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from diswoot.bridge import retention
from diswoot.bridge.retention import prune_done_jobs, retention_seconds, run_retention
from diswoot.config import test_config
from diswoot.metrics import Metrics
from diswoot.store import Store, open_store
from diswoot.store import queries as q
from diswoot.testing.harness import bridge_world

DAY = 86400.0
NOW = 1_800_000_000.0
KEEP = 30 * DAY


async def add(store: Store, key: str, at: float, state: str = "done") -> int:
    """A job created at ``at`` that ended (or failed for good) at the same time."""
    job = await store.call(q.add_job, "inbound", key, "42", "message", {"text": key}, at)
    assert job is not None
    if state == "done":
        await store.call(q.finish_job, job.id, at, None)
    elif state == "dead":
        await store.call(q.bury_job, job.id, "broken", at)
    return job.id


async def keys(store: Store) -> list[str]:
    jobs = await store.call(q.list_jobs, ("pending", "done", "dead"))
    return [job.dedupe_key for job in jobs]


async def test_only_done_jobs_past_the_retention_are_deleted(tmp_path: Path) -> None:
    async with open_store(tmp_path / "r.db") as store:
        for n in range(7):  # more than two windows of old done jobs
            await add(store, f"old-done-{n}", NOW - 40 * DAY + n)
        await add(store, "old-pending", NOW - 39 * DAY, "pending")
        await add(store, "old-dead", NOW - 39 * DAY, "dead")
        await add(store, "recent-done", NOW - 29 * DAY)
        await add(store, "new-pending", NOW - 1, "pending")

        assert await prune_done_jobs(store, NOW - KEEP, window=3) == 7

        assert await keys(store) == ["old-pending", "old-dead", "recent-done", "new-pending"]
        assert await prune_done_jobs(store, NOW - KEEP, window=3) == 0


async def test_the_sweep_stops_at_the_first_window_inside_the_retention(tmp_path: Path) -> None:
    """Ids grow with time: once a window reaches a job created inside the retention, the
    rest of the table is newer still and is not read."""
    async with open_store(tmp_path / "r.db") as store:
        await add(store, "old", NOW - 40 * DAY)
        for n in range(20):
            await add(store, f"new-{n}", NOW - DAY + n)
        before = store.batches
        assert await prune_done_jobs(store, NOW - KEEP, window=4) == 1
        assert store.batches - before == 1  # one window: old + 3 new ones, then done


async def test_a_replay_within_the_retention_is_still_a_duplicate(tmp_path: Path) -> None:
    async with open_store(tmp_path / "r.db") as store:
        await add(store, "m-recent", NOW - 29 * DAY)
        await add(store, "m-old", NOW - 31 * DAY)
        await prune_done_jobs(store, NOW - KEEP)
        again = await store.call(q.add_job, "inbound", "m-recent", "42", "message", {}, NOW)
        assert again is None  # deduped by the kept row
        back = await store.call(q.add_job, "inbound", "m-old", "42", "message", {}, NOW)
        assert back is not None  # its row is gone: nothing could replay it any more


def test_retention_covers_the_longest_look_back() -> None:
    assert retention_seconds(test_config(backfill_hours=72)) == 30 * DAY
    assert retention_seconds(test_config(backfill_hours=720)) == 60 * DAY
    assert retention_seconds(test_config(backfill_hours=0)) == 30 * DAY


async def test_the_task_prunes_a_minute_after_start_then_every_six_hours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wall = [NOW]
    sweeps: list[tuple[float, float]] = []  # (trio time, older_than)
    metrics = Metrics()
    stop = trio.Event()

    async def prune(store: Store, older_than: float) -> int:
        sweeps.append((trio.current_time(), older_than))
        return 3

    cfg = test_config()
    store = cast(Store, None)  # the fake sweep never touches it
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(run_retention, store, cfg, metrics, stop, clock=lambda: wall[0], prune=prune)
        )
        await trio.sleep(retention.FIRST_DELAY_SECONDS - 1)
        assert sweeps == []
        await trio.sleep(2)
        wall[0] += 10 * DAY
        await trio.sleep(retention.INTERVAL_SECONDS)
        stop.set()
    assert sweeps == [
        (start + retention.FIRST_DELAY_SECONDS, NOW - KEEP),
        (start + retention.FIRST_DELAY_SECONDS + retention.INTERVAL_SECONDS, NOW + 10 * DAY - KEEP),
    ]
    assert metrics.registry.get_sample_value("diswoot_jobs_pruned_total") == 6.0


async def test_the_daemon_deletes_old_done_jobs_it_finds_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real daemon (in-process, real sockets, real clock) with the first sweep moved to
    its start: the old done job of an earlier run is deleted, the recent one is kept."""
    monkeypatch.setattr(retention, "FIRST_DELAY_SECONDS", 0.0)
    with trio.fail_after(30):
        async with bridge_world(tmp_path, start=False) as world:
            now = time.time()
            async with open_store(world.cfg.db_path) as store:
                await add(store, "old", now - 31 * DAY)
                await add(store, "recent", now - 29 * DAY)
            await world.start()
            registry = world.daemon.ctx.metrics.registry
            await world.wait_for(
                lambda: registry.get_sample_value("diswoot_jobs_pruned_total") == 1.0
            )
            assert "recent" in await keys(world.daemon.ctx.store)
            assert "old" not in await keys(world.daemon.ctx.store)
