"""Streams with Kinesis semantics (sandbox/services/streams.py) on a real SQLite file."""

from __future__ import annotations

import threading

import pytest

from sandbox import Runtime
from sandbox.errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from sandbox.services.arns import Arns
from sandbox.services.streams import StreamService, lane_key
from sandbox.store import open_store


@pytest.fixture
def streams(tmp_path, store):
    backend = open_store(store, str(tmp_path), False)
    yield StreamService(backend, Arns("eu-west-1", "123456789012"))
    backend.close()


def test_arn_and_sequence_numbers_grow(streams):
    arn = streams.create_stream("clicks", shards=1)
    assert arn == "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks"
    numbers = [streams.put_record(arn, f"r{i}", "key") for i in range(5)]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 5
    assert all(n.isdigit() for n in numbers)
    records = streams.read("clicks", 0, 0, 10)
    assert [r.data for r in records] == [f"r{i}".encode() for i in range(5)]
    assert [r.partition_key for r in records] == ["key"] * 5


def test_a_partition_key_always_maps_to_one_shard_in_order(streams):
    streams.create_stream("s", shards=4)
    for i in range(40):
        streams.put_record("s", str(i).encode(), f"k{i % 8}")
    seen: dict[str, set[int]] = {}
    per_key: dict[str, list[int]] = {}
    for shard in range(4):
        for record in streams.read("s", shard, 0, 100):
            seen.setdefault(record.partition_key, set()).add(shard)
            per_key.setdefault(record.partition_key, []).append(int(record.data))
    assert all(len(shards) == 1 for shards in seen.values())
    assert len({next(iter(s)) for s in seen.values()}) > 1, "keys spread over shards"
    for key, values in per_key.items():
        assert values == sorted(values), key


def test_lanes_split_a_shard_by_partition_key(streams):
    streams.create_stream("s")
    for i in range(20):
        streams.put_record("s", b"x", f"k{i}")
    lanes = [streams.read("s", 0, 0, 100, lanes=3, lane=lane) for lane in range(3)]
    assert sum(len(records) for records in lanes) == 20
    for lane, records in enumerate(lanes):
        assert all(lane_key(r.partition_key) % 3 == lane for r in records)


def test_reads_continue_after_a_position(streams):
    streams.create_stream("s")
    numbers = [int(streams.put_record("s", str(i), "k")) for i in range(6)]
    rest = streams.read("s", 0, numbers[2], 10)
    assert [r.sequence for r in rest] == numbers[3:]
    assert streams.last_sequence("s", 0) == numbers[-1]


def test_concurrent_puts_are_all_stored_once(streams):
    streams.create_stream("s")
    results: list[str] = []
    lock = threading.Lock()

    def put(n):
        for i in range(50):
            number = streams.put_record("s", f"{n}-{i}", "k")
            with lock:
                results.append(number)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 200
    assert len(streams.read("s", 0, 0, 1000)) == 200


def test_bad_input(streams):
    with pytest.raises(InvalidParameterValueException, match="stream name"):
        streams.create_stream("bad/name")
    with pytest.raises(InvalidParameterValueException, match="shards"):
        streams.create_stream("s", shards=0)
    streams.create_stream("s")
    with pytest.raises(ResourceConflictException):
        streams.create_stream("s")
    with pytest.raises(ResourceNotFoundException):
        streams.put_record("missing", b"x", "k")
    with pytest.raises(InvalidParameterValueException, match="partition_key"):
        streams.put_record("s", b"x", "")
    with pytest.raises(InvalidParameterValueException, match="at most"):
        streams.put_record("s", b"x" * (1024 * 1024 + 1), "k")
    with pytest.raises(InvalidParameterValueException, match="region and account"):
        streams.put_record("arn:aws:kinesis:us-east-1:000000000000:stream/s", b"x", "k")


def test_runtime_stream_api_persists(tmp_path, store):
    with Runtime(tmp_path / "state", store=store) as rt:
        arn = rt.create_stream("s", shards=2)
        first = rt.put_record(arn, b"one", "a")
    with Runtime(tmp_path / "state", store=store) as rt:
        second = rt.put_record("s", b"two", "a")
        assert int(second) > int(first)
        with pytest.raises(ResourceConflictException):
            rt.create_stream("s")
