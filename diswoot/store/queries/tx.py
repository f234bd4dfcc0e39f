"""One atomic step: a transaction, or a savepoint inside the store's batch."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_batch = threading.local()


@contextmanager
def bare_steps() -> Iterator[None]:
    """Inside (this thread): a step in a transaction writes without a savepoint of its own.

    For :class:`~diswoot.store.db.Store`'s optimistic batch, which is all or nothing: if a
    step fails, the whole transaction is rolled back and the batch runs again step by step.
    """
    _batch.bare = True
    try:
        yield
    finally:
        _batch.bare = False


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic step: ``BEGIN IMMEDIATE`` ... ``COMMIT``, or a savepoint inside a batch.

    :class:`~diswoot.store.db.Store` runs each batch of calls in one transaction (group
    commit); there a step is a savepoint, so a failing call undoes only its own writes
    (or, in :func:`bare_steps`, part of a batch that is undone whole if anything fails).
    """
    if db.in_transaction:
        if getattr(_batch, "bare", False):
            yield db
            return
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
