"""Routing state in memory: users and their conversations, read without a store call.

The rows are kept in step with SQLite by write-through: triggers report every changed key, and
:class:`~diswoot.store.db.Store` applies the re-read rows before any caller of the batch is
woken.  No write path can forget the cache, and it never holds a row that was not committed.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final, Generic, TypeVar

from diswoot.store.models import Conversation, User

K = TypeVar("K")
R = TypeVar("R")

LIMIT: Final = 10_000
"""Rows kept per table: a few MB; beyond it the least recently used is read on demand."""

TABLES: Final = {"users": "discord_id", "conversations": "conversation_id"}
_ROWS: Final[dict[str, Any]] = {"users": User, "conversations": Conversation}

Change = tuple[str, Any, Any]
"""``(table, key, row or None)``: the committed state of one row after a batch."""


class Absent:
    """Marks a key the cache knows nothing about (``None`` means "no such row")."""


ABSENT: Final = Absent()


def install_change_hooks(db: sqlite3.Connection, touched: set[tuple[str, Any]]) -> None:
    """Temporary triggers that add ``(table, key)`` of every written row to ``touched``."""

    def note(table: str, key: Any) -> None:
        touched.add((table, key))

    db.create_function("diswoot_touched", 2, note)
    for table, key in TABLES.items():
        for op, ref in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            # table/key/op are our own constants, never input
            db.execute(
                f"CREATE TEMP TRIGGER IF NOT EXISTS routing_{table}_{op.lower()} "
                f"AFTER {op} ON main.{table} "
                f"BEGIN SELECT diswoot_touched('{table}', {ref}.{key}); END"
            )


def read_rows(db: sqlite3.Connection, keys: Iterable[tuple[str, Any]]) -> list[Change]:
    """Worker thread: the current state of each touched row."""
    changes: list[Change] = []
    for table, key in keys:
        row = db.execute(
            f"SELECT * FROM {table} WHERE {TABLES[table]} = ?",  # noqa: S608 - constants
            (key,),
        ).fetchone()
        changes.append((table, key, _ROWS[table].from_row(row) if row else None))
    return changes


def read_through(db: sqlite3.Connection, table: str, key: Any) -> Any:
    """Worker thread: a cache miss; the row (or None), also put in the cache with the batch."""
    db.execute("SELECT diswoot_touched(?, ?)", (table, key))
    return read_rows(db, [(table, key)])[0][2]


def load_recent(db: sqlite3.Connection, limit: int = LIMIT) -> list[Change]:
    """Worker thread: the most recently active users and conversations, for the start."""
    users = db.execute(
        "SELECT * FROM users ORDER BY updated_at DESC LIMIT ?", (limit,)
    ).fetchall()
    conversations = db.execute(
        """SELECT * FROM conversations
           ORDER BY COALESCE(last_activity_at, status_at, created_at) DESC LIMIT ?""",
        (limit,),
    ).fetchall()
    changes: list[Change] = [("users", r["discord_id"], User.from_row(r)) for r in users]
    changes += [
        ("conversations", r["conversation_id"], Conversation.from_row(r)) for r in conversations
    ]
    changes.reverse()  # oldest first: the newest end up most recently used
    return changes


class _Table(Generic[K, R]):
    """One table's rows, least recently used first."""

    def __init__(self, limit: int) -> None:
        self.rows: OrderedDict[K, R | None] = OrderedDict()
        self.limit = limit

    def get(self, key: K) -> R | Absent | None:
        try:
            row = self.rows[key]
        except KeyError:
            return ABSENT
        self.rows.move_to_end(key)
        return row

    def put(self, key: K, row: R | None) -> None:
        self.rows[key] = row
        self.rows.move_to_end(key)
        if len(self.rows) > self.limit:
            self.rows.popitem(last=False)


class RoutingState:
    """The cached rows (see docs/modules.md); changed only by :meth:`apply`."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.users: _Table[str, User] = _Table(limit)
        self.conversations: _Table[int, Conversation] = _Table(limit)

    def apply(self, changes: Iterable[Change]) -> None:
        for table, key, row in changes:
            if table == "users":
                self.users.put(str(key), row)
            else:
                self.conversations.put(int(key), row)
