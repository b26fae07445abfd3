"""Redis store: several Runtimes (on one host or many) share one Redis server.

Selected by URL: ``Runtime(store="redis://127.0.0.1:6379/0")``. Each Runtime
still has its own state dir (logs, its lock); the registry, queues, streams,
asynchronous events, mappings and their checkpoints live in Redis.

- Asynchronous events: a Redis stream (``ev:ready``) read by the consumer
  group ``deliverers``; each Runtime is one consumer. An event stays in its
  consumer's pending entries until retired (acknowledged with its outbox, in
  one Lua script) or rescheduled (moved to the ``ev:delayed`` sorted set, and
  back to the stream when due). A Runtime renews its pending entries; those of
  a Runtime that stopped renewing for ``lease_s`` (killed, hung, cut off) are
  taken over with XAUTOCLAIM: each accepted event is delivered at least once.
- Queues: a hash per message and sorted sets by visibility and sent time;
  receive (with redrive), delete and visibility changes are Lua scripts.
- Streams: one Redis stream per shard whose entry ids are the sequence numbers.
- Leases (a stream mapping's shard and lane, processed by one Runtime at a time)
  and concurrency slots (limits across every Runtime) expire unless renewed,
  so a dead Runtime's share returns to the others.

Durability is Redis's: run it with ``appendonly yes`` and ``appendfsync
always`` so that an acknowledged write survives Redis itself being killed
(``everysec`` may lose the last second of acknowledged events).

Lost connections are retried (with backoff, for about half a minute), so a
Redis restart pauses the Runtimes rather than failing them; a write whose
reply was lost may be applied twice (an event delivered twice: at least once).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.parse
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..errors import InvalidParameterValueException, ResourceConflictException, ServiceException
from . import redis_scripts as lua
from .base import (
    AsyncEvent,
    LeaseLost,
    Message,
    NewEvent,
    NewMessage,
    Outbox,
    StreamRecord,
    mapping_lease_key,
)

log = logging.getLogger("sandbox.store")

PREFIX = "sandbox:"
GROUP = "deliverers"
# How long a Runtime that stops renewing keeps its claimed events, shard
# leases and concurrency slots (URL option ``lease_s``).
LEASE_S_DEFAULT = 10.0
# Reconnection: backoff capped at half a second, about 30 s in all.
RECONNECT_BACKOFF_CAP_S = 0.5
RECONNECT_BACKOFF_BASE_S = 0.02
RECONNECT_RETRIES = 60
SOCKET_TIMEOUT_S = 30.0
# Due delayed events moved to the ready stream per claim.
PROMOTE_BATCH = 500
# Records read per round trip while filtering a shard by lane.
READ_CHUNK = 500
SETTINGS_KINDS = "settings:kinds"
# A consumer (a Runtime) idle this many lease_s with no pending event is
# removed from the group: the consumers of dead Runtimes do not pile up.
CONSUMER_FORGET_LEASES = 10


def parse_url(url: str) -> tuple[str, float]:
    """``(redis URL, lease_s)`` from a store URL; ``lease_s`` is the only
    option of ours in its query string (the rest go to redis-py).

    Raises:
        InvalidParameterValueException: not a redis:// or unix:// URL, or a
            bad lease_s.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise InvalidParameterValueException(
            f"store must be 'sqlite' or a redis://host:port/db URL, got {url!r}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    lease_s = LEASE_S_DEFAULT
    rest = []
    for key, value in query:
        if key != "lease_s":
            rest.append((key, value))
            continue
        try:
            lease_s = float(value)
        except ValueError:
            lease_s = -1.0
        if not 0.5 <= lease_s <= 3600:
            raise InvalidParameterValueException(
                f"store URL option lease_s must be 0.5-3600 seconds, got {value!r}")
    clean = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(rest)))
    return clean, lease_s


def _f(value: float) -> str:
    return repr(float(value))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _event(event_id: int, row: dict[bytes, bytes]) -> AsyncEvent:
    return AsyncEvent(event_id, _s(row[b"function"]), _s(row[b"request_id"]),
                      bytes(row[b"payload"]), float(row[b"accepted_at"]),
                      float(row[b"due_at"]), int(row[b"attempts"]), int(row[b"throttles"]))


def _outbox_args(outbox: Outbox | None, messages: list[NewMessage] | None = None
                 ) -> list[Any]:
    messages = list(messages or []) + (outbox.messages if outbox else [])
    events = outbox.events if outbox else []
    args: list[Any] = [len(messages)]
    for m in messages:
        args += [m.queue, m.message_id, m.body, json.dumps(m.attributes), m.sender_id,
                 _f(m.sent_at)]
    args.append(len(events))
    for e in events:
        args += [e.function, e.request_id, e.payload, _f(e.accepted_at)]
    return args


class RedisStore:
    """Thread-safe (redis-py's connection pool); shared by several Runtimes.

    Raises:
        InvalidParameterValueException: a bad URL.
        ServiceException: Redis cannot be reached (from the first command).
    """

    shared = True  # several Runtimes use this store at once

    def __init__(self, url: str) -> None:
        redis_url, self.lease_s = parse_url(url)
        # Any: redis-py's annotations type every reply as a union of all reply
        # shapes; the shapes here are fixed by the commands and scripts used.
        # No retries until Redis answered once: a wrong URL fails at once.
        self._r: Any = redis.Redis.from_url(
            redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=5.0,
            retry=Retry(NoBackoff(), 0), retry_on_error=[RedisConnectionError, RedisTimeoutError])
        # One consumer (and lease owner) per store: this Runtime, on this host.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuidlib.uuid4().hex[:8]}"
        self._scripts = {name: self._r.register_script(getattr(lua, name)) for name in (
            "SEND_MESSAGES", "ADD_EVENT", "RECEIVE", "DELETE_MESSAGES", "CHANGE_VISIBILITY",
            "EXPIRE_MESSAGES", "DELETE_QUEUE", "PUT_RECORD", "EXPIRE_RECORDS", "DELETE_STREAM",
            "RETIRE_EVENT", "RESCHEDULE_EVENT", "PROMOTE_EVENTS", "PUT_MAPPING",
            "ADVANCE_CHECKPOINT", "HOLD_LEASE", "RELEASE_LEASE", "ACQUIRE_SLOT",
            "RELEASE_SLOT", "RENEW_SLOTS", "RELEASE_EVENTS", "FORGET_CONSUMERS")}
        try:
            self._ensure_group()
        except redis.RedisError as exc:
            self._r.close()
            where = urllib.parse.urlsplit(redis_url)  # named without any password
            place = f"{where.hostname}:{where.port or 6379}" if where.hostname else where.path
            raise ServiceException(f"cannot use the Redis store at {place}: {exc}") from None
        self._r.set_retry(Retry(ExponentialBackoff(cap=RECONNECT_BACKOFF_CAP_S,
                                                   base=RECONNECT_BACKOFF_BASE_S),
                                RECONNECT_RETRIES))
        self._lock = threading.Lock()
        self._claims: dict[int, bytes] = {}  # event id -> its entry in our pending list
        self._loaded: dict[int, AsyncEvent] = {}  # claimed events read with their claim
        self._leases: set[str] = set()
        self._slots: dict[str, list[str]] = {}  # function -> slot ids we hold
        self._reclaimed_at = 0.0
        self._closed = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="sandbox-redis-renew",
                                         daemon=True)
        self._renewer.start()

    def _k(self, *parts: Any) -> str:
        return PREFIX + ":".join(str(p) for p in parts)

    def _run(self, name: str, *args: Any) -> Any:
        return self._scripts[name](args=[PREFIX, *args])

    def _ensure_group(self) -> None:
        try:
            self._r.xgroup_create(self._k("ev", "ready"), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- records in hashes ------------------------------------------------------------
    def _hput(self, key: str, field: str, record: dict[str, Any]) -> None:
        self._r.hset(self._k(key), field, json.dumps(record))

    def _hget(self, key: str, field: str) -> dict[str, Any] | None:
        raw = self._r.hget(self._k(key), field)
        return json.loads(raw) if raw is not None else None

    def _hdel(self, key: str, field: str) -> bool:
        return bool(self._r.hdel(self._k(key), field))

    def _hlist(self, key: str) -> list[dict[str, Any]]:
        rows = self._r.hgetall(self._k(key))
        return [json.loads(rows[name]) for name in sorted(rows)]

    # -- functions ---------------------------------------------------------------------
    def put_function(self, name: str, record: dict[str, Any]) -> None:
        self._hput("functions", name, record)

    def get_function(self, name: str) -> dict[str, Any] | None:
        return self._hget("functions", name)

    def delete_function(self, name: str) -> bool:
        return self._hdel("functions", name)

    def list_functions(self) -> list[dict[str, Any]]:
        return self._hlist("functions")

    # -- permissions (sandbox/iam) ------------------------------------------------------
    def put_iam_record(self, kind: str, key: str, record: dict[str, Any]) -> None:
        self._hput(f"iam:{kind}", key, record)

    def get_iam_record(self, kind: str, key: str) -> dict[str, Any] | None:
        return self._hget(f"iam:{kind}", key)

    def delete_iam_record(self, kind: str, key: str) -> bool:
        return self._hdel(f"iam:{kind}", key)

    def list_iam_records(self, kind: str) -> list[dict[str, Any]]:
        return self._hlist(f"iam:{kind}")

    # -- per-function settings -----------------------------------------------------------
    def put_function_settings(self, kind: str, name: str, record: dict[str, Any]) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.sadd(self._k(SETTINGS_KINDS), kind)
        pipe.hset(self._k("settings", kind), name, json.dumps(record))
        pipe.execute()

    def get_function_settings(self, kind: str, name: str) -> dict[str, Any] | None:
        return self._hget(f"settings:{kind}", name)

    def list_function_settings(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self._r.hgetall(self._k("settings", kind))
        return {_s(name): json.loads(record) for name, record in rows.items()}

    def delete_function_settings(self, kind: str | None, name: str) -> bool:
        kinds = ([kind] if kind is not None
                 else [_s(k) for k in self._r.smembers(self._k(SETTINGS_KINDS))])
        pipe = self._r.pipeline(transaction=True)
        for each in kinds:
            pipe.hdel(self._k("settings", each), name)
        return any(pipe.execute())

    # -- queues ------------------------------------------------------------------------
    def put_queue(self, name: str, record: dict[str, Any]) -> None:
        self._hput("queues", name, record)

    def get_queue(self, name: str) -> dict[str, Any] | None:
        return self._hget("queues", name)

    def list_queues(self) -> list[dict[str, Any]]:
        return self._hlist("queues")

    def delete_queue(self, name: str) -> bool:
        return bool(self._run("DELETE_QUEUE", name))

    def send_messages(self, messages: list[NewMessage]) -> None:
        self._run("SEND_MESSAGES", *_outbox_args(None, messages))

    def receive_messages(self, queue: str, max_messages: int, now: float, visible_at: float,
                         max_receive_count: int | None, dead_letter_queue: str | None,
                         new_handle: Callable[[], str]) -> list[Message]:
        handles = [new_handle() for _ in range(max_messages)]
        rows = self._run("RECEIVE", queue, _f(now), _f(visible_at), max_messages,
                         "" if max_receive_count is None else max_receive_count,
                         dead_letter_queue or "", *handles)
        return [Message(_s(mid), _s(handle), _s(body), json.loads(attrs), float(sent),
                        float(first), int(count), _s(sender))
                for _, handle, count, first, mid, body, attrs, sender, sent in rows]

    def delete_messages(self, queue: str, receipt_handles: list[str]) -> int:
        if not receipt_handles:
            return 0
        return int(self._run("DELETE_MESSAGES", queue, *receipt_handles))

    def change_visibility(self, queue: str, receipt_handle: str, visible_at: float) -> bool:
        return bool(self._run("CHANGE_VISIBILITY", queue, receipt_handle, _f(visible_at)))

    def count_messages(self, queue: str, now: float) -> tuple[int, int]:
        key = self._k("q", queue, "vis")
        pipe = self._r.pipeline(transaction=True)
        pipe.zcount(key, "-inf", _f(now))
        pipe.zcount(key, f"({_f(now)}", "+inf")
        visible, in_flight = pipe.execute()
        return int(visible), int(in_flight)

    def next_visible_at(self, queue: str) -> float | None:
        first = self._r.zrange(self._k("q", queue, "vis"), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def expire_messages(self, queue: str, sent_before: float) -> int:
        return int(self._run("EXPIRE_MESSAGES", queue, _f(sent_before)))

    def queue_backlog(self, queue: str) -> tuple[int, float | None]:
        """``(messages, oldest sent_at)`` of a queue, visible or in flight."""
        key = self._k("q", queue, "sent")
        pipe = self._r.pipeline(transaction=True)
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
        count, first = pipe.execute()
        return int(count), (float(first[0][1]) if first else None)

    # -- streams -----------------------------------------------------------------------
    def put_stream(self, name: str, record: dict[str, Any]) -> None:
        if not self._r.hsetnx(self._k("streams"), name, json.dumps(record)):
            raise ResourceConflictException(f"stream {name} exists")

    def get_stream(self, name: str) -> dict[str, Any] | None:
        return self._hget("streams", name)

    def list_streams(self) -> list[dict[str, Any]]:
        return self._hlist("streams")

    def delete_stream(self, name: str) -> bool:
        record = self.get_stream(name)
        if record is None:
            return False
        return bool(self._run("DELETE_STREAM", name, int(record.get("shards", 1))))

    def put_record(self, stream: str, shard: int, partition_key: str, lane_key: int,
                   data: bytes, arrived_at: float) -> int:
        sequence = int(self._run("PUT_RECORD", stream, shard, partition_key, lane_key, data,
                                 _f(arrived_at)))
        if sequence < 0:
            raise KeyError(stream)
        return sequence

    def read_records(self, stream: str, shard: int, after: int, limit: int,
                     lanes: int = 1, lane: int = 0) -> list[StreamRecord]:
        key = self._k("s", stream, shard)
        records: list[StreamRecord] = []
        start = f"({after}-0"
        while len(records) < limit:
            chunk = limit - len(records) if lanes == 1 else READ_CHUNK
            entries = self._r.xrange(key, start, "+", count=chunk)
            for entry_id, fields in entries:
                if int(fields[b"l"]) % lanes != lane:
                    continue
                records.append(StreamRecord(shard, int(entry_id.split(b"-")[0]),
                                            _s(fields[b"k"]), bytes(fields[b"d"]),
                                            float(fields[b"a"])))
                if len(records) == limit:
                    break
            if len(entries) < chunk:
                break
            start = f"({_s(entries[-1][0])}"
        return records

    def last_sequence(self, stream: str, shard: int) -> int:
        last = self._r.xrevrange(self._k("s", stream, shard), "+", "-", count=1)
        return int(last[0][0].split(b"-")[0]) if last else 0

    def expire_records(self, stream: str, arrived_before: float) -> int:
        return int(self._run("EXPIRE_RECORDS", stream, _f(arrived_before)))

    def stream_backlog(self, stream: str, shard: int, after: int, lanes: int, lane: int
                       ) -> tuple[int, float | None]:
        """``(records, oldest arrival)`` after ``after`` in one shard and lane."""
        records = self.read_records(stream, shard, after, 1 << 62, lanes, lane)
        return len(records), min((r.arrived_at for r in records), default=None)

    # -- asynchronous events ---------------------------------------------------------------
    def add_event(self, event: NewEvent) -> int:
        return int(self._run("ADD_EVENT", event.function, event.request_id, event.payload,
                             _f(event.accepted_at)))

    def load_event(self, event_id: int) -> AsyncEvent | None:
        with self._lock:
            loaded = self._loaded.pop(event_id, None)
        if loaded is not None:
            return loaded
        row = self._r.hgetall(self._k("ev", event_id))
        if not row:
            with self._lock:  # retired by another Runtime: its XACK ended our claim too
                self._claims.pop(event_id, None)
            return None
        return _event(event_id, row)

    def pending_events(self) -> list[tuple[float, int]]:
        ids = [int(i) for i in self._r.zrange(self._k("ev", "all"), 0, -1)]
        pipe = self._r.pipeline(transaction=False)
        for event_id in ids:
            pipe.hget(self._k("ev", event_id), "due_at")
        return [(float(due), event_id) for event_id, due in zip(ids, pipe.execute(), strict=True)
                if due is not None]

    def reschedule_event(self, event_id: int, attempts: int, throttles: int,
                         due_at: float) -> None:
        self._run("RESCHEDULE_EVENT", event_id, attempts, throttles, _f(due_at))
        with self._lock:
            self._claims.pop(event_id, None)
            self._loaded.pop(event_id, None)

    def retire_event(self, event_id: int, outbox: Outbox) -> list[int]:
        ids = self._run("RETIRE_EVENT", event_id, *_outbox_args(outbox))
        with self._lock:
            self._claims.pop(event_id, None)
            self._loaded.pop(event_id, None)
        return [int(i) for i in ids]

    def event_backlog(self) -> dict[str, tuple[int, float]]:
        """Stored events by function: ``(count, oldest accepted_at)``."""
        ids = self._r.zrange(self._k("ev", "all"), 0, -1)
        pipe = self._r.pipeline(transaction=False)
        for event_id in ids:
            pipe.hmget(self._k("ev", _s(event_id)), "function", "accepted_at")
        backlog: dict[str, tuple[int, float]] = {}
        for function, accepted in pipe.execute():
            if function is None:
                continue
            count, oldest = backlog.get(_s(function), (0, float("inf")))
            backlog[_s(function)] = (count + 1, min(oldest, float(accepted)))
        return backlog

    def count_events(self) -> int:
        return int(self._r.zcard(self._k("ev", "all")))

    def claim_events(self, limit: int, wait_s: float) -> list[int]:
        """Events for this Runtime to deliver now, up to ``limit``: due
        retries moved back to the ready stream, new events (waiting up to
        ``wait_s`` for one), and events a Runtime that stopped renewing for
        ``lease_s`` left behind. They stay claimed until retired or
        rescheduled; the store renews the claims."""
        now = time.time()
        self._run("PROMOTE_EVENTS", _f(now), PROMOTE_BATCH)
        if limit <= 0:
            self._closed.wait(wait_s)
            return []
        ready = self._k("ev", "ready")
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        if now - self._reclaimed_at >= self.lease_s / 4:
            self._reclaimed_at = now
            _, reclaimed, *_ = self._r.xautoclaim(ready, GROUP, self.owner,
                                                  int(self.lease_s * 1000), "0-0", count=limit)
            entries += reclaimed
            self._run("FORGET_CONSUMERS", int(self.lease_s * CONSUMER_FORGET_LEASES * 1000), "")
        if len(entries) < limit:
            due = self._r.zrange(self._k("ev", "delayed"), 0, 0, withscores=True)
            if due:
                wait_s = min(wait_s, max(float(due[0][1]) - now, 0.0))
            block = int(wait_s * 1000) if wait_s >= 0.001 else None
            try:
                read = self._r.xreadgroup(GROUP, self.owner, {ready: ">"},
                                          count=limit - len(entries), block=block)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._ensure_group()  # Redis lost its data: start the group again
                read = []
            for _, got in read or []:
                entries += got
        claimed = []
        with self._lock:
            for entry_id, fields in entries:
                if not fields:
                    continue  # deleted while pending: its event was retired or moved
                event_id = int(fields[b"id"])
                self._claims[event_id] = entry_id
                claimed.append(event_id)
        # Read the claimed events in one round trip: their deliveries will ask.
        pipe = self._r.pipeline(transaction=False)
        for event_id in claimed:
            pipe.hgetall(self._k("ev", event_id))
        rows = pipe.execute() if claimed else []
        with self._lock:
            for event_id, row in zip(claimed, rows, strict=True):
                if row:
                    self._loaded[event_id] = _event(event_id, row)
        return claimed

    # -- leases and concurrency slots (several Runtimes) --------------------------------------
    def hold_lease(self, key: str) -> bool:
        """Takes or renews the lease ``key`` for this Runtime; False while
        another holds it. Held leases are renewed until released."""
        held = bool(self._run("HOLD_LEASE", key, self.owner, int(self.lease_s * 1000)))
        with self._lock:
            (self._leases.add if held else self._leases.discard)(key)
        return held

    def release_lease(self, key: str) -> None:
        with self._lock:
            self._leases.discard(key)
        self._run("RELEASE_LEASE", key, self.owner)

    def acquire_slot(self, function: str, limit: int) -> str | None:
        """A concurrency slot for ``function`` against every Runtime's running
        executions: None on success, else "reserved" or "account" (which
        limit was reached)."""
        slot = uuidlib.uuid4().hex
        reason = _s(self._run("ACQUIRE_SLOT", function, slot, _f(time.time()),
                              _f(time.time() + self.lease_s), limit))
        if reason:
            return reason
        with self._lock:
            self._slots.setdefault(function, []).append(slot)
        return None

    def release_slot(self, function: str) -> None:
        with self._lock:
            slots = self._slots.get(function)
            if not slots:
                return
            slot = slots.pop()
            if not slots:
                del self._slots[function]
        self._run("RELEASE_SLOT", function, slot)

    def _renew_loop(self) -> None:
        """Renews this Runtime's claims, leases and slots every third of
        ``lease_s``, so that only a Runtime that stopped loses them."""
        while not self._closed.wait(self.lease_s / 3):
            try:
                self._renew()
            except redis.RedisError as exc:
                log.warning("cannot renew claims and leases in Redis: %s", exc)

    def _renew(self) -> None:
        with self._lock:
            entries = list(self._claims.values())
            leases = list(self._leases)
            slots = [(fn, slot) for fn, held in self._slots.items() for slot in held]
        if entries:
            # XCLAIM to ourselves with JUSTID resets the idle time only.
            self._r.xclaim(self._k("ev", "ready"), GROUP, self.owner, 0, entries, justid=True)
        for key in leases:
            if not self._run("HOLD_LEASE", key, self.owner, int(self.lease_s * 1000)):
                log.warning("lease %s was taken over by another Runtime", key)
                with self._lock:
                    self._leases.discard(key)
        if slots:
            self._run("RENEW_SLOTS", _f(time.time() + self.lease_s),
                      *[part for pair in slots for part in pair])

    # -- event source mappings ---------------------------------------------------------------
    def put_mapping(self, uuid: str, record: dict[str, Any]) -> None:
        self._run("PUT_MAPPING", uuid, json.dumps(record))

    def get_mapping(self, uuid: str) -> dict[str, Any] | None:
        return self._hget("mappings", uuid)

    def list_mappings(self) -> list[dict[str, Any]]:
        order = self._r.zrange(self._k("mappings", "order"), 0, -1)
        if not order:
            return []
        rows = self._r.hmget(self._k("mappings"), order)
        return [json.loads(row) for row in rows if row is not None]

    def delete_mapping(self, uuid: str) -> bool:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._k("cp", uuid))
        pipe.zrem(self._k("mappings", "order"), uuid)
        pipe.hdel(self._k("mappings"), uuid)
        return bool(pipe.execute()[2])

    def get_checkpoints(self, uuid: str) -> dict[tuple[int, int], int]:
        rows = self._r.hgetall(self._k("cp", uuid))
        positions = {}
        for key, sequence in rows.items():
            shard, lane = _s(key).split(":")
            positions[(int(shard), int(lane))] = int(sequence)
        return positions

    def put_checkpoints(self, uuid: str, positions: dict[tuple[int, int], int]) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._k("cp", uuid))
        if positions:
            pipe.hset(self._k("cp", uuid), mapping={
                f"{shard}:{lane}": sequence for (shard, lane), sequence in positions.items()})
        pipe.execute()

    def advance_checkpoint(self, uuid: str, shard: int, lane: int, sequence: int,
                           outbox: Outbox) -> list[int]:
        """As the interface says, and fenced: when this Runtime took the
        shard's lease (``mapping_lease_key``), the checkpoint moves only while
        it still holds it.

        Raises:
            LeaseLost: another Runtime has taken the shard over.
        """
        key = mapping_lease_key(uuid, shard, lane)
        with self._lock:
            fenced = key in self._leases
        try:
            ids = self._run("ADVANCE_CHECKPOINT", uuid, f"{shard}:{lane}", sequence,
                            key if fenced else "", self.owner, *_outbox_args(outbox))
        except ResponseError as exc:
            if "LEASELOST" in str(exc):
                with self._lock:
                    self._leases.discard(key)
                raise LeaseLost(f"mapping {uuid} shard {shard} lane {lane}: another Runtime "
                                "took over its lease; the batch will be processed again "
                                "there") from None
            raise
        return [int(i) for i in ids]

    def close(self) -> None:
        """Gives back what this Runtime holds: claimed events (undelivered, or
        cut short by close) return to the ready stream, leases and slots go."""
        self._closed.set()
        self._renewer.join()
        with self._lock:
            leases = list(self._leases)
            self._leases.clear()
            slots = [(fn, slot) for fn, held in self._slots.items() for slot in held]
            self._slots.clear()
            claims = [part for pair in self._claims.items() for part in pair]
            self._claims.clear()
            self._loaded.clear()
        try:
            if claims:
                self._run("RELEASE_EVENTS", *claims)
            self._run("FORGET_CONSUMERS", int(self.lease_s * CONSUMER_FORGET_LEASES * 1000),
                      self.owner)
            for key in leases:
                self._run("RELEASE_LEASE", key, self.owner)
            for function, slot in slots:
                self._run("RELEASE_SLOT", function, slot)
        except redis.RedisError as exc:
            # They expire, and another Runtime reclaims the events after lease_s.
            log.warning("cannot release claims and leases in Redis: %s", exc)
        self._r.close()
