"""WAL checkpoints run beside the store (diswoot.store.checkpoint), never inside its commits."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from diswoot.store import Store, checkpoint, open_store
from diswoot.store import queries as q
from diswoot.store.checkpoint import CHECKPOINT_SECONDS

PAGES_WRITTEN = 1_200
"""More log frames than SQLite's automatic checkpoint lets the log hold (1,000 pages)."""


def log_frames(path: Path) -> int:
    """Frames in the write-ahead log (asked from a connection of the test's own)."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        db.close()


async def write_pages(store: Store, count: int) -> None:
    """``count`` pages: commits of a value that spans two pages each."""
    for i in range(count // 2):
        await store.call(q.set_value, f"k{i}", "x" * 6000)


async def test_commits_never_checkpoint_the_log(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Time stands still, so the checkpointer never runs: the log keeps every frame, which
    SQLite's automatic checkpoint would have copied (inside a commit) at 1,000."""
    path = tmp_path / "t.db"
    async with open_store(path) as store:
        await write_pages(store, PAGES_WRITTEN)
        assert store.checkpoints.runs == 0
        assert await trio.to_thread.run_sync(log_frames, path) >= PAGES_WRITTEN


async def periods_until(
    clock: trio.testing.MockClock, done: Callable[[], bool], *, periods: int = 200
) -> None:
    """Let checkpoint periods pass (and the checkpointer's worker thread run) until ``done()``."""
    for _ in range(periods):
        clock.jump(CHECKPOINT_SECONDS)
        for _ in range(1_000):
            if done():
                return
            await trio.lowlevel.checkpoint()
    raise AssertionError("the checkpointer did not get there")


async def test_the_checkpointer_copies_the_log_and_it_starts_again(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "t.db"
    async with open_store(path) as store:
        stats = store.checkpoints
        await write_pages(store, PAGES_WRITTEN)
        await periods_until(mock_clock, lambda: stats.runs == 1)
        assert stats.copied_frames == stats.log_frames >= PAGES_WRITTEN
        await store.call(q.set_value, "after", 1)  # the next commit writes from the start
        assert await trio.to_thread.run_sync(log_frames, path) < 10
        await periods_until(mock_clock, lambda: stats.runs == 2)  # one checkpoint for it
        with pytest.raises(AssertionError):  # nothing committed since: nothing to do
            await periods_until(mock_clock, lambda: stats.runs > 2, periods=5)
        assert await store.call(q.get_value, "k0") == "x" * 6000


async def test_an_in_memory_database_has_no_checkpointer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_store(":memory:") as store:
        await store.call(q.set_value, "k", 1)
        await trio.sleep(2 * CHECKPOINT_SECONDS)
        assert store.checkpoints.runs == 0
        assert await store.call(q.get_value, "k") == 1


@pytest.mark.parametrize(
    ("step", "error", "failures"),
    [
        ("_checkpoint", "disk I/O error", 3),  # e.g. the disk is full
        ("_connect", "unable to open database file", 2),  # its own connection cannot open
    ],
)
async def test_a_failing_checkpoint_is_logged_once_and_retried_and_the_store_goes_on(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, step: str, error: str, failures: int,
) -> None:
    errors = [sqlite3.OperationalError(error)] * failures
    real = getattr(checkpoint, step)

    def flaky(*args: Any) -> Any:
        if errors:
            raise errors.pop()
        return real(*args)

    monkeypatch.setattr(checkpoint, step, flaky)
    caplog.set_level(logging.INFO, logger="diswoot.store")
    async with open_store(tmp_path / "t.db") as store:
        stats = store.checkpoints
        await store.call(q.set_value, "k", 1)
        await periods_until(mock_clock, lambda: stats.failing)
        await periods_until(mock_clock, lambda: stats.runs == 1)  # retried without a commit
        assert errors == []
        assert not stats.failing
        await store.call(q.set_value, "k", 2)  # the store went on all along
        assert await store.call(q.get_value, "k") == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "diswoot.store"]
    assert [m for m in messages if "checkpoint" in m] == [
        f"WAL checkpoint failed (retrying every 1s): {error}",
        "WAL checkpoints work again",
    ]
