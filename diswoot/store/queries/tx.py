"""One atomic step: a transaction, or a savepoint inside the store's batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


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
