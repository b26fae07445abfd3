"""Throughput of the invocation models.

Run::

    .venv/bin/python -m pytest benchmarks/test_throughput.py --benchmark-only \
        --benchmark-columns=min,median,max,rounds

Groups (each round's figure per second is in extra_info, from the median):

async-accept      rt.invoke(..., invocation_type="Event") in a loop, BATCH events a round,
                  from one thread and from four (group commit); every event is
                  acknowledged only after its row committed, while the Runtime's
                  delivery threads run the noop function for the events already accepted.
                  The *-fsync variants use Runtime(fsync_commits=True): an fsync per
                  commit, shared by concurrent callers.
async-delivered   BATCH events accepted from one thread and delivered to the noop function:
                  from the first accept until drain() returns (end-to-end events/s).
mapping-records   records consumed by an event source mapping (noop function): BATCH
                  messages of a queue (batch size 100, 1 s window) or BATCH records of a
                  one-shard stream (batch size 100), from enabling the mapping until
                  drain() returns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import Runtime

from .conftest import HANDLERS

BATCH = 2000
ROUNDS = 5


def _runtime(**options: Any) -> Iterator[Runtime]:
    with Runtime(cpu_follows_memory=False, **options) as runtime:
        runtime.create_function("noop", handler="app.handler", code=HANDLERS["noop"])
        assert runtime.invoke("noop", {}).function_error is None
        yield runtime


@pytest.fixture(scope="module")
def rt() -> Iterator[Runtime]:
    yield from _runtime()


@pytest.fixture(scope="module")
def rt_fsync() -> Iterator[Runtime]:
    yield from _runtime(fsync_commits=True)


def _per_second(benchmark: Any, items: int) -> None:
    benchmark.extra_info["per_second"] = round(items / benchmark.stats.stats.median)


def _drained(rt: Runtime) -> None:
    assert rt.drain(120)


def _accept(benchmark: Any, rt: Runtime, threads: int) -> None:
    def accept_share() -> None:
        for i in range(BATCH // threads):
            rt.invoke("noop", {"i": i}, invocation_type="Event")

    def accept() -> None:
        if threads == 1:
            accept_share()
            return
        workers = [threading.Thread(target=accept_share) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    benchmark.pedantic(accept, setup=lambda: _drained(rt), rounds=ROUNDS, iterations=1)
    _per_second(benchmark, BATCH)
    _drained(rt)


@pytest.mark.benchmark(group="async-accept")
def test_accept_one_thread(benchmark: Any, rt: Runtime) -> None:
    _accept(benchmark, rt, 1)


@pytest.mark.benchmark(group="async-accept")
def test_accept_four_threads(benchmark: Any, rt: Runtime) -> None:
    _accept(benchmark, rt, 4)


@pytest.mark.benchmark(group="async-accept-fsync")
def test_accept_one_thread_fsync(benchmark: Any, rt_fsync: Runtime) -> None:
    _accept(benchmark, rt_fsync, 1)


@pytest.mark.benchmark(group="async-accept-fsync")
def test_accept_sixteen_threads_fsync(benchmark: Any, rt_fsync: Runtime) -> None:
    _accept(benchmark, rt_fsync, 16)


@pytest.mark.benchmark(group="async-delivered")
def test_accept_and_deliver(benchmark: Any, rt: Runtime) -> None:
    def accept_and_deliver() -> None:
        for i in range(BATCH):
            rt.invoke("noop", {"i": i}, invocation_type="Event")
        assert rt.drain(120)

    benchmark.pedantic(accept_and_deliver, setup=lambda: _drained(rt), rounds=ROUNDS,
                       iterations=1)
    _per_second(benchmark, BATCH)


@pytest.mark.benchmark(group="mapping-records")
def test_queue_mapping(benchmark: Any, rt: Runtime) -> None:
    queue = rt.create_queue("bench-queue")
    mapping = rt.create_event_source_mapping("noop", queue, batch_size=100,
                                             maximum_batching_window_s=1, enabled=False)

    def fill() -> None:
        rt.update_event_source_mapping(mapping, enabled=False)
        for i in range(BATCH):
            rt.send_message(queue, f"message {i}")

    def consume() -> None:
        rt.update_event_source_mapping(mapping, enabled=True)
        assert rt.drain(120)

    benchmark.pedantic(consume, setup=fill, rounds=ROUNDS, iterations=1)
    _per_second(benchmark, BATCH)
    rt.delete_event_source_mapping(mapping)


@pytest.mark.benchmark(group="mapping-records")
def test_stream_mapping(benchmark: Any, rt: Runtime) -> None:
    stream = rt.create_stream("bench-stream")
    mapping = rt.create_event_source_mapping("noop", stream, batch_size=100,
                                             starting_position="TRIM_HORIZON", enabled=False)

    def fill() -> None:
        rt.update_event_source_mapping(mapping, enabled=False)
        for i in range(BATCH):
            rt.put_record(stream, f"record {i}", str(i))

    def consume() -> None:
        rt.update_event_source_mapping(mapping, enabled=True)
        assert rt.drain(120)

    benchmark.pedantic(consume, setup=fill, rounds=ROUNDS, iterations=1)
    _per_second(benchmark, BATCH)
    rt.delete_event_source_mapping(mapping)
