"""Throughput of several Runtime processes sharing one Redis.

Run::

    .venv/bin/python -m pytest benchmarks/test_redis_throughput.py --benchmark-only \
        --benchmark-columns=min,median,max,rounds

Groups redis-async appendfsync=always|everysec: EVENTS Event invokes of the
noop function, accepted and delivered by 1, 2 or 3 Runtime processes
(tests/shared_worker.py) on one redis-server with AOF and ``appendfsync
always`` (every acknowledged event on disk: the durable setting) or
``everysec`` (for comparison: up to a second of acknowledged events may be
lost if Redis dies). Each process accepts its share from one thread and delivers its
own events and the others'; a round runs from the start signal until every
event is accepted and retired (Redis holds none). Process start-up is not
timed. events/s (from the median) is in extra_info["per_second"].
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandbox import Runtime

from .conftest import HANDLERS, ROOT

EVENTS = 1800
ROUNDS = 3
WORKER = Path(ROOT) / "tests" / "shared_worker.py"
WAIT_S = 120.0


def _redis_server_class() -> Any:
    """tests/redis_server.py's RedisServer (the tests' own redis-server runner)."""
    spec = importlib.util.spec_from_file_location(
        "redis_server", Path(ROOT) / "tests" / "redis_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RedisServer


@pytest.fixture(scope="module", params=["always", "everysec"])
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    with tempfile.TemporaryDirectory(prefix="sandbox-redis-bench-") as directory:
        instance = _redis_server_class()(Path(directory), appendfsync=request.param)
        try:
            yield instance
        finally:
            instance.stop()


class _Round:
    """N worker processes, started and ready (not timed), released by ``run``."""

    def __init__(self, url: str, processes: int, directory: Path) -> None:
        self.control = directory / "control"
        self.control.mkdir(parents=True)
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        with Runtime(directory / "setup", store=url) as rt:
            rt.create_function("noop", handler="app.handler", code=HANDLERS["noop"])
        share = EVENTS // processes
        self.workers = [subprocess.Popen(
            [sys.executable, str(WORKER), url, str(directory / f"state{i}"), str(self.control),
             "noop", str(i * share), str(share)]) for i in range(processes)]
        self.client = redis.Redis.from_url(url)
        self._wait(lambda: len(list(self.control.glob("ready-*"))) == processes)

    def _wait(self, done: Any) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done():
            if time.monotonic() > deadline or any(w.poll() for w in self.workers):
                raise RuntimeError("a worker failed or the round took too long")
            time.sleep(0.005)

    def _accepted(self) -> int:
        return sum(len(path.read_text().split()) for path in self.control.glob("accepted-*"))

    def run(self) -> None:
        (self.control / "go").touch()
        self._wait(lambda: self._accepted() == EVENTS
                   and self.client.zcard("sandbox:ev:all") == 0)

    def stop(self) -> None:
        (self.control / "stop").touch()
        for worker in self.workers:
            worker.wait(60)
        self.client.close()


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_events_accepted_and_delivered(benchmark: Any, server: Any, tmp_path: Path,
                                       processes: int) -> None:
    benchmark.group = f"redis-async appendfsync={server.appendfsync}"
    rounds: list[_Round] = []

    def setup() -> None:
        if rounds:
            rounds[-1].stop()
        rounds.append(_Round(server.url(), processes, tmp_path / f"round{len(rounds)}"))

    try:
        benchmark.pedantic(lambda: rounds[-1].run(), setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        if rounds:
            rounds[-1].stop()
    benchmark.extra_info["per_second"] = round(EVENTS / benchmark.stats.stats.median)
    benchmark.extra_info["processes"] = processes
    benchmark.extra_info["appendfsync"] = server.appendfsync
