"""SQLite store: one database file in WAL mode under the Runtime's state dir.

Durability: ``synchronous=NORMAL`` in WAL mode. A transaction is in the WAL
file (written with ``write()``) before COMMIT returns, so a committed event
survives the Runtime's process being killed at any moment (SIGKILL, crash):
that is the guarantee the invocation models promise. What NORMAL gives up
is an fsync per commit, so an operating-system crash or power loss may roll
back the last commits. ``SQLiteStore(path, synchronous="FULL")``
(``Runtime(fsync_commits=True)``) fsyncs the WAL on every commit for that
case; group commit keeps many concurrent writers fast either way.

Group commit: the accept paths (async events, queue sends, stream puts) add
their write to a pending list; whichever caller holds the write lock runs
every pending write in one transaction and commits once, then each caller
returns its own result. A lone caller commits alone (no thread hand-off).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .base import AsyncEvent, Message, NewEvent, NewMessage, Outbox, StreamRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS function_settings (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    first_received_at REAL,
    receipt_handle TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at, seq);
CREATE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt_handle);
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    next_sequence INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS stream_records (
    stream TEXT NOT NULL,
    shard INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    lane_key INTEGER NOT NULL,
    data BLOB NOT NULL,
    arrived_at REAL NOT NULL,
    PRIMARY KEY (stream, shard, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS async_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function TEXT NOT NULL,
    request_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    accepted_at REAL NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    throttles INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS mappings (
    uuid TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    mapping TEXT NOT NULL,
    shard INTEGER NOT NULL,
    lane INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    PRIMARY KEY (mapping, shard, lane)
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
_INSERT_MESSAGE = (
    "INSERT INTO messages (queue, message_id, body, attributes, sender_id, sent_at, visible_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_EVENT = ("INSERT INTO async_events (function, request_id, payload, accepted_at, due_at)"
                 " VALUES (?, ?, ?, ?, ?)")

_Op = Callable[[sqlite3.Connection], Any]


class _Pending:
    __slots__ = ("op", "one_statement", "done", "result", "error")

    def __init__(self, op: _Op, one_statement: bool) -> None:
        self.op = op
        self.one_statement = one_statement
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class SQLiteStore:
    """Thread-safe: one connection, serialized by a lock; accept paths group-commit."""

    shared = False  # one Runtime per database (the state dir's lock)

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(SCHEMA)
        self._db.executescript(IAM_SCHEMA)
        self._lock = threading.RLock()
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()

    # -- transactions --------------------------------------------------------------------
    def _transaction(self, op: _Op) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = op(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def _grouped(self, op: _Op, one_statement: bool = False) -> Any:
        """Runs ``op`` in a transaction shared with other pending writes and
        returns its result once that transaction committed. An ``op`` of
        ``one_statement`` that finds no company runs in autocommit mode (one
        statement is atomic by itself, and skips BEGIN and COMMIT)."""
        mine = _Pending(op, one_statement)
        with self._pending_lock:
            self._pending.append(mine)
        with self._lock:
            if not mine.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit_batch(batch)
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _commit_batch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1 and batch[0].one_statement:
            item = batch[0]
            try:
                item.result = item.op(self._db)
            except Exception as exc:
                item.error = exc
            item.done = True
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                results = [item.op(self._db) for item in batch]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done = True
                return
            # One write failed the batch: run each alone so only it fails.
            for item in batch:
                try:
                    item.result = self._transaction(item.op)
                except Exception as exc:
                    item.error = exc
                item.done = True
            return
        for item, result in zip(batch, results, strict=True):
            item.result = result
            item.done = True

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- functions ---------------------------------------------------------------------
    def put_function(self, name: str, record: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO functions (name, record) VALUES (?, ?)",
                    (name, json.dumps(record)))

    def get_function(self, name: str) -> dict[str, Any] | None:
        rows = self._read("SELECT record FROM functions WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def delete_function(self, name: str) -> bool:
        return self._write("DELETE FROM functions WHERE name = ?", (name,)) > 0

    def list_functions(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT record FROM functions ORDER BY name")
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

    # -- per-function settings -----------------------------------------------------------
    def put_function_settings(self, kind: str, name: str, record: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO function_settings (kind, name, record)"
                    " VALUES (?, ?, ?)", (kind, name, json.dumps(record)))

    def get_function_settings(self, kind: str, name: str) -> dict[str, Any] | None:
        rows = self._read("SELECT record FROM function_settings WHERE kind = ? AND name = ?",
                          (kind, name))
        return json.loads(rows[0][0]) if rows else None

    def list_function_settings(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT name, record FROM function_settings WHERE kind = ?", (kind,))
        return {name: json.loads(record) for name, record in rows}

    def delete_function_settings(self, kind: str | None, name: str) -> bool:
        if kind is None:
            return self._write("DELETE FROM function_settings WHERE name = ?", (name,)) > 0
        return self._write("DELETE FROM function_settings WHERE kind = ? AND name = ?",
                           (kind, name)) > 0

    # -- queues ------------------------------------------------------------------------
    def put_queue(self, name: str, record: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO queues (name, record) VALUES (?, ?)",
                    (name, json.dumps(record)))

    def get_queue(self, name: str) -> dict[str, Any] | None:
        rows = self._read("SELECT record FROM queues WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def list_queues(self) -> list[dict[str, Any]]:
        return [json.loads(row[0]) for row in self._read("SELECT record FROM queues ORDER BY name")]

    def delete_queue(self, name: str) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM messages WHERE queue = ?", (name,))
            return db.execute("DELETE FROM queues WHERE name = ?", (name,)).rowcount > 0
        return bool(self._transaction(op))

    def send_messages(self, messages: list[NewMessage]) -> None:
        rows = [_message_row(m) for m in messages]
        self._grouped(lambda db: db.executemany(_INSERT_MESSAGE, rows), len(rows) == 1)

    def receive_messages(self, queue: str, max_messages: int, now: float, visible_at: float,
                         max_receive_count: int | None, dead_letter_queue: str | None,
                         new_handle: Callable[[], str]) -> list[Message]:
        def op(db: sqlite3.Connection) -> list[Message]:
            received: list[Message] = []
            taken: list[int] = []  # a zero visibility timeout leaves them visible: skip them
            while len(received) < max_messages:
                rows = db.execute(
                    "SELECT seq, message_id, body, attributes, sender_id, sent_at, receive_count,"
                    " first_received_at FROM messages WHERE queue = ? AND visible_at <= ?"
                    f" AND seq NOT IN ({','.join('?' * len(taken))})"
                    " ORDER BY visible_at, seq LIMIT ?",
                    (queue, now, *taken, max_messages - len(received))).fetchall()
                if not rows:
                    break
                taken.extend(row[0] for row in rows)
                for seq, message_id, body, attributes, sender, sent_at, count, first in rows:
                    if (max_receive_count is not None and dead_letter_queue is not None
                            and count >= max_receive_count):
                        # Redrive: the message moves, keeping its id, body and sent time.
                        db.execute("UPDATE messages SET queue = ?, visible_at = ?,"
                                   " receive_count = 0, first_received_at = NULL,"
                                   " receipt_handle = NULL WHERE seq = ?",
                                   (dead_letter_queue, now, seq))
                        continue
                    handle = new_handle()
                    first = first if first is not None else now
                    db.execute("UPDATE messages SET visible_at = ?, receive_count = ?,"
                               " first_received_at = ?, receipt_handle = ? WHERE seq = ?",
                               (visible_at, count + 1, first, handle, seq))
                    received.append(Message(message_id, handle, body, json.loads(attributes),
                                            sent_at, first, count + 1, sender))
            return received
        result: list[Message] = self._transaction(op)
        return result

    def delete_messages(self, queue: str, receipt_handles: list[str]) -> int:
        def op(db: sqlite3.Connection) -> int:
            return sum(db.execute("DELETE FROM messages WHERE receipt_handle = ? AND queue = ?",
                                  (handle, queue)).rowcount for handle in receipt_handles)
        return int(self._transaction(op))

    def change_visibility(self, queue: str, receipt_handle: str, visible_at: float) -> bool:
        return self._write("UPDATE messages SET visible_at = ? WHERE receipt_handle = ?"
                           " AND queue = ?", (visible_at, receipt_handle, queue)) > 0

    def count_messages(self, queue: str, now: float) -> tuple[int, int]:
        rows = self._read(
            "SELECT COALESCE(SUM(visible_at <= ?), 0), COALESCE(SUM(visible_at > ?), 0)"
            " FROM messages WHERE queue = ?", (now, now, queue))
        return int(rows[0][0]), int(rows[0][1])

    def next_visible_at(self, queue: str) -> float | None:
        rows = self._read("SELECT MIN(visible_at) FROM messages WHERE queue = ?", (queue,))
        return rows[0][0]

    def expire_messages(self, queue: str, sent_before: float) -> int:
        return self._write("DELETE FROM messages WHERE queue = ? AND sent_at < ?",
                           (queue, sent_before))

    # -- streams -----------------------------------------------------------------------
    def put_stream(self, name: str, record: dict[str, Any]) -> None:
        self._write("INSERT INTO streams (name, record) VALUES (?, ?)",
                    (name, json.dumps(record)))

    def get_stream(self, name: str) -> dict[str, Any] | None:
        rows = self._read("SELECT record FROM streams WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def list_streams(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._read("SELECT record FROM streams ORDER BY name")]

    def delete_stream(self, name: str) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM stream_records WHERE stream = ?", (name,))
            return db.execute("DELETE FROM streams WHERE name = ?", (name,)).rowcount > 0
        return bool(self._transaction(op))

    def put_record(self, stream: str, shard: int, partition_key: str, lane_key: int,
                   data: bytes, arrived_at: float) -> int:
        def op(db: sqlite3.Connection) -> int:
            row = db.execute("UPDATE streams SET next_sequence = next_sequence + 1"
                             " WHERE name = ? RETURNING next_sequence - 1", (stream,)).fetchone()
            if row is None:
                raise KeyError(stream)
            db.execute("INSERT INTO stream_records (stream, shard, sequence, partition_key,"
                       " lane_key, data, arrived_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (stream, shard, row[0], partition_key, lane_key, data, arrived_at))
            return int(row[0])
        return int(self._grouped(op))

    def read_records(self, stream: str, shard: int, after: int, limit: int,
                     lanes: int = 1, lane: int = 0) -> list[StreamRecord]:
        rows = self._read(
            "SELECT sequence, partition_key, data, arrived_at FROM stream_records"
            " WHERE stream = ? AND shard = ? AND sequence > ? AND lane_key % ? = ?"
            " ORDER BY sequence LIMIT ?", (stream, shard, after, lanes, lane, limit))
        return [StreamRecord(shard, seq, key, bytes(data), arrived)
                for seq, key, data, arrived in rows]

    def last_sequence(self, stream: str, shard: int) -> int:
        rows = self._read("SELECT MAX(sequence) FROM stream_records WHERE stream = ?"
                          " AND shard = ?", (stream, shard))
        return int(rows[0][0] or 0)

    def expire_records(self, stream: str, arrived_before: float) -> int:
        return self._write("DELETE FROM stream_records WHERE stream = ? AND arrived_at < ?",
                           (stream, arrived_before))

    # -- asynchronous events ---------------------------------------------------------------
    def add_event(self, event: NewEvent) -> int:
        row = _event_row(event)
        return int(self._grouped(lambda db: db.execute(_INSERT_EVENT, row).lastrowid, True))

    def load_event(self, event_id: int) -> AsyncEvent | None:
        rows = self._read("SELECT id, function, request_id, payload, accepted_at, due_at,"
                          " attempts, throttles FROM async_events WHERE id = ?", (event_id,))
        if not rows:
            return None
        row = rows[0]
        return AsyncEvent(row[0], row[1], row[2], bytes(row[3]), row[4], row[5], row[6], row[7])

    def pending_events(self) -> list[tuple[float, int]]:
        return [(due, i) for due, i in self._read("SELECT due_at, id FROM async_events")]

    def reschedule_event(self, event_id: int, attempts: int, throttles: int,
                         due_at: float) -> None:
        self._write("UPDATE async_events SET attempts = ?, throttles = ?, due_at = ?"
                    " WHERE id = ?", (attempts, throttles, due_at, event_id))

    def retire_event(self, event_id: int, outbox: Outbox) -> list[int]:
        if not outbox:
            self._write("DELETE FROM async_events WHERE id = ?", (event_id,))
            return []

        def op(db: sqlite3.Connection) -> list[int]:
            db.execute("DELETE FROM async_events WHERE id = ?", (event_id,))
            return _apply(db, outbox)
        result: list[int] = self._transaction(op)
        return result

    # -- event source mappings ---------------------------------------------------------------
    def put_mapping(self, uuid: str, record: dict[str, Any]) -> None:
        self._write("INSERT INTO mappings (uuid, created, record) VALUES (?,"
                    " (SELECT COALESCE(MAX(created), 0) + 1 FROM mappings), ?)"
                    " ON CONFLICT (uuid) DO UPDATE SET record = excluded.record",
                    (uuid, json.dumps(record)))

    def get_mapping(self, uuid: str) -> dict[str, Any] | None:
        rows = self._read("SELECT record FROM mappings WHERE uuid = ?", (uuid,))
        return json.loads(rows[0][0]) if rows else None

    def list_mappings(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT record FROM mappings ORDER BY created")
        return [json.loads(row[0]) for row in rows]

    def delete_mapping(self, uuid: str) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM checkpoints WHERE mapping = ?", (uuid,))
            return db.execute("DELETE FROM mappings WHERE uuid = ?", (uuid,)).rowcount > 0
        return bool(self._transaction(op))

    def get_checkpoints(self, uuid: str) -> dict[tuple[int, int], int]:
        rows = self._read("SELECT shard, lane, sequence FROM checkpoints WHERE mapping = ?",
                          (uuid,))
        return {(shard, lane): seq for shard, lane, seq in rows}

    def put_checkpoints(self, uuid: str, positions: dict[tuple[int, int], int]) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM checkpoints WHERE mapping = ?", (uuid,))
            db.executemany("INSERT INTO checkpoints (mapping, shard, lane, sequence)"
                           " VALUES (?, ?, ?, ?)",
                           [(uuid, s, lane, seq) for (s, lane), seq in positions.items()])
        self._transaction(op)

    def advance_checkpoint(self, uuid: str, shard: int, lane: int, sequence: int,
                           outbox: Outbox) -> list[int]:
        def op(db: sqlite3.Connection) -> list[int]:
            db.execute("INSERT OR REPLACE INTO checkpoints (mapping, shard, lane, sequence)"
                       " VALUES (?, ?, ?, ?)", (uuid, shard, lane, sequence))
            return _apply(db, outbox)
        result: list[int] = self._transaction(op)
        return result

    # -- figures (metrics) ---------------------------------------------------------------
    def event_backlog(self) -> dict[str, tuple[int, float]]:
        rows = self._read("SELECT function, COUNT(*), MIN(accepted_at) FROM async_events"
                          " GROUP BY function")
        return {str(function): (int(count), float(oldest)) for function, count, oldest in rows}

    def queue_backlog(self, queue: str) -> tuple[int, float | None]:
        rows = self._read("SELECT COUNT(*), MIN(sent_at) FROM messages WHERE queue = ?",
                          (queue,))
        return int(rows[0][0]), rows[0][1]

    def stream_backlog(self, stream: str, shard: int, after: int, lanes: int, lane: int
                       ) -> tuple[int, float | None]:
        rows = self._read(
            "SELECT COUNT(*), MIN(arrived_at) FROM stream_records WHERE stream = ?"
            " AND shard = ? AND sequence > ? AND lane_key % ? = ?",
            (stream, shard, after, lanes, lane))
        return int(rows[0][0]), rows[0][1]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _message_row(m: NewMessage) -> tuple[Any, ...]:
    return (m.queue, m.message_id, m.body, json.dumps(m.attributes), m.sender_id, m.sent_at,
            m.sent_at)


def _event_row(e: NewEvent) -> tuple[Any, ...]:
    return (e.function, e.request_id, e.payload, e.accepted_at, e.accepted_at)


def _apply(db: sqlite3.Connection, outbox: Outbox) -> list[int]:
    if outbox.messages:
        db.executemany(_INSERT_MESSAGE, [_message_row(m) for m in outbox.messages])
    return [int(db.execute(_INSERT_EVENT, _event_row(e)).lastrowid or 0) for e in outbox.events]

