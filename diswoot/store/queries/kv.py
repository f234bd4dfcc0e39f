"""``kv``: small named values (the gateway session, cursors)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from diswoot.store.queries.tx import transaction


def get_value(db: sqlite3.Connection, key: str) -> Any:
    row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return json.loads(row["value"]) if row else None


def set_value(db: sqlite3.Connection, key: str, value: Any) -> None:
    with transaction(db):
        db.execute(
            """INSERT INTO kv (key, value) VALUES (?, ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
            (key, json.dumps(value)),
        )
