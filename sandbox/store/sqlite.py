"""SQLite store: one database file in WAL mode under the Runtime's state dir."""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
"""

# -- permissions (sandbox/iam) ------------------------------------------------------------
# IAM users, roles, organizations and functions' resource-based policies: one
# JSON record per (kind, key).
IAM_SCHEMA = """
CREATE TABLE IF NOT EXISTS iam_entities (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


class SQLiteStore:
    """Thread-safe: one connection, serialized by a lock (writes are rare)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.executescript(IAM_SCHEMA)
        self._lock = threading.Lock()

    def put_function(self, name: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO functions (name, record) VALUES (?, ?)",
                             (name, json.dumps(record)))

    def get_function(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM functions WHERE name = ?",
                                   (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def delete_function(self, name: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM functions WHERE name = ?", (name,))
        return cursor.rowcount > 0

    def list_functions(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM functions ORDER BY name").fetchall()
        return [json.loads(row[0]) for row in rows]

    # -- permissions (sandbox/iam) ------------------------------------------------------
    def put_iam_record(self, kind: str, key: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO iam_entities (kind, key, record) VALUES (?, ?, ?)",
                (kind, key, json.dumps(record)))

    def get_iam_record(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM iam_entities WHERE kind = ? AND key = ?",
                                   (kind, key)).fetchone()
        return json.loads(row[0]) if row else None

    def delete_iam_record(self, kind: str, key: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM iam_entities WHERE kind = ? AND key = ?",
                                      (kind, key))
        return cursor.rowcount > 0

    def list_iam_records(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM iam_entities WHERE kind = ? ORDER BY key",
                                    (kind,)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
