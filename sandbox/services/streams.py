"""Streams with Kinesis semantics over the store.

A record goes to the shard its partition key hashes to (MD5, as Kinesis maps
keys onto shards' hash-key ranges); records are ordered per shard by
sequence number. Sequence numbers are decimal strings, as in Kinesis.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from typing import Any

from .. import constants as C
from ..errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from ..store.base import Store, StreamRecord
from .arns import Arns

_STREAM_NAME = re.compile(rf"^[A-Za-z0-9_.-]{{1,{C.STREAM_NAME_MAX}}}$")
# Kinesis shards split the 128-bit hash-key space into equal ranges.
_HASH_SPACE = 1 << 128
SHARDS_MAX = 64
# Records past their retention period are deleted at most this often per stream.
EXPIRY_INTERVAL_S = 1.0


def shard_id(shard: int) -> str:
    """Kinesis's shard id, e.g. ``shardId-000000000000``."""
    return f"shardId-{shard:012d}"


def sequence_number(sequence: int) -> str:
    """The sequence as Kinesis writes it: a decimal string (zero-padded, so
    that string order is numeric order)."""
    return f"{sequence:056d}"


def lane_key(partition_key: str) -> int:
    """A stable 31-bit hash of a partition key: records with equal keys land
    in the same lane of a parallelized shard, and so stay in order."""
    return int.from_bytes(hashlib.md5(partition_key.encode(), usedforsecurity=False)
                          .digest()[:4], "big") & 0x7FFFFFFF


class StreamService:
    """Create streams and put records; readers wait for new records."""

    def __init__(self, store: Store, arns: Arns) -> None:
        self._store = store
        self._arns = arns
        self._arrived = threading.Condition(threading.Lock())
        self._closed = False
        self._expired_at: dict[str, float] = {}

    def create_stream(self, name: str, shards: int = 1,
                      retention_hours: int = C.STREAM_RETENTION_DEFAULT_H) -> str:
        """Creates a stream of ``shards`` shards; returns its ARN. Records
        older than ``retention_hours`` are deleted, read or not.

        Raises:
            InvalidParameterValueException: a bad name or shard count.
            ResourceConflictException: the stream exists (ResourceInUseException in Kinesis).
        """
        if not isinstance(name, str) or not _STREAM_NAME.match(name):
            raise InvalidParameterValueException(
                f"stream name must be 1-{C.STREAM_NAME_MAX} letters, digits, '.', '-' or '_',"
                f" got {name!r}")
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= SHARDS_MAX:
            raise InvalidParameterValueException(
                f"shards must be an integer 1-{SHARDS_MAX}, got {shards!r}")
        if (isinstance(retention_hours, bool) or not isinstance(retention_hours, int)
                or not C.STREAM_RETENTION_MIN_H <= retention_hours <= C.STREAM_RETENTION_MAX_H):
            raise InvalidParameterValueException(
                f"retention_hours must be an integer {C.STREAM_RETENTION_MIN_H}-"
                f"{C.STREAM_RETENTION_MAX_H}, got {retention_hours!r}")
        if self._store.get_stream(name) is not None:
            raise ResourceConflictException(f"Stream {name} under account "
                                            f"{self._arns.account_id} already exists.")
        arn = self._arns.stream(name)
        self._store.put_stream(name, {"name": name, "arn": arn, "shards": shards,
                                      "retention_hours": retention_hours,
                                      "created": time.time()})
        return arn

    def delete_stream(self, stream: str) -> None:
        self._store.delete_stream(self.resolve(stream))
        self.notify()

    def describe(self, stream: str) -> dict[str, Any]:
        name = self.resolve(stream)
        record = self._store.get_stream(name)
        assert record is not None
        return record

    def list_streams(self) -> list[str]:
        return [str(s["arn"]) for s in self._store.list_streams()]

    def resolve(self, stream: str) -> str:
        """The name of an existing stream given by name or ARN.

        Raises:
            ResourceNotFoundException: no such stream.
        """
        name = self._arns.name_of(stream, "kinesis", "stream") if isinstance(stream, str) else None
        if name is None or self._store.get_stream(name) is None:
            raise ResourceNotFoundException(f"Stream {stream} not found")
        return name

    def put_record(self, stream: str, data: bytes | str, partition_key: str) -> str:
        """Appends a record to the shard of ``partition_key``; returns its
        sequence number once durable."""
        name = self.resolve(stream)
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, bytes | bytearray):
            raise InvalidParameterValueException(
                f"data must be bytes or str, got {type(data).__name__}")
        if len(data) > C.STREAM_RECORD_MAX:
            raise InvalidParameterValueException(
                f"data must be at most {C.STREAM_RECORD_MAX} bytes, got {len(data)}")
        if not isinstance(partition_key, str) or not 1 <= len(partition_key) <= C.PARTITION_KEY_MAX:
            raise InvalidParameterValueException(
                f"partition_key must be 1-{C.PARTITION_KEY_MAX} characters, got {partition_key!r}")
        record = self._store.get_stream(name)
        assert record is not None
        digest = int.from_bytes(hashlib.md5(partition_key.encode(),
                                            usedforsecurity=False).digest(), "big")
        shard = digest * record["shards"] // _HASH_SPACE
        sequence = self._store.put_record(name, shard, partition_key, lane_key(partition_key),
                                          bytes(data), time.time())
        self.notify()
        return sequence_number(sequence)

    def read(self, name: str, shard: int, after: int, limit: int, lanes: int = 1,
             lane: int = 0) -> list[StreamRecord]:
        """Records after sequence ``after`` in one lane of a shard, in order;
        records past the retention period are gone first (as in Kinesis, a
        reader behind them moves on to the oldest record left)."""
        now = time.time()
        if now - self._expired_at.get(name, 0.0) >= EXPIRY_INTERVAL_S:
            self._expired_at[name] = now
            record = self._store.get_stream(name)
            if record is not None:
                hours = record.get("retention_hours", C.STREAM_RETENTION_DEFAULT_H)
                self._store.expire_records(name, now - hours * 3600.0)
        return self._store.read_records(name, shard, after, limit, lanes, lane)

    def last_sequence(self, name: str, shard: int) -> int:
        return self._store.last_sequence(name, shard)

    def wait(self, timeout_s: float) -> None:
        """Sleeps until a record is put (or ``timeout_s`` passes, or close())."""
        with self._arrived:
            if not self._closed:
                self._arrived.wait(timeout_s)

    def notify(self) -> None:
        with self._arrived:
            self._arrived.notify_all()

    def close(self) -> None:
        self._closed = True
        self.notify()
