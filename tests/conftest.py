"""Shared fixtures.  Every async test runs under trio (pytest-trio, trio_mode = true)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
import trio
import trio.testing

from diswoot.store import db as store_db


class ThreadCheckingConnection(sqlite3.Connection):
    """Records any SQL statement executed on a forbidden thread (the trio thread)."""

    forbidden: ClassVar[set[int]] = set()
    violations: ClassVar[list[str]] = []

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
        if threading.get_ident() in self.forbidden:
            self.violations.append(sql.strip().splitlines()[0])
        return super().execute(sql, *args)


@pytest.fixture(autouse=True)
def sqlite_off_trio_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test asserts that no SQLite statement ran on the trio (main) thread."""
    ThreadCheckingConnection.forbidden = {threading.main_thread().ident or 0}
    ThreadCheckingConnection.violations = []
    monkeypatch.setattr(store_db, "CONNECTION_FACTORY", ThreadCheckingConnection)
    yield
    assert ThreadCheckingConnection.violations == [], (
        "SQLite statements ran on the trio thread: " + repr(ThreadCheckingConnection.violations)
    )


@pytest.fixture
def idle_jump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 20 ms of real idleness: the store's worker threads
    (SQLite calls) finish first, so a jump never lands while a call is under way."""
    return trio.testing.MockClock(autojump_threshold=0.02)
