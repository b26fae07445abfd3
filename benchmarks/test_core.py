"""Core latency benchmarks: the floors, a peer, and this runtime's three start kinds.

Run (one process, one run)::

    .venv/bin/python -m pytest benchmarks --benchmark-only

Groups:

floor-roundtrip    one framed msgpack request/reply over a socketpair to a forked echo
                   process (client: sandbox.protocol.encode plus minimal reads; echo:
                   minimal code answering a RESULT-shaped frame).
floor-fork-native  sandbox._native.fork_exit_wait(1): C fork + _exit + waitpid, no
                   CPython fork hooks, from this (pytest) process.
floor-os-fork      os.fork() + os._exit(0) + os.waitpid() from this process after it
                   imported the heavy handler's modules. This process also holds pytest,
                   pytest-benchmark and sandbox, so it is bigger than the heavy zygote
                   and its fork is, if anything, slower: a generous floor. The RSS of
                   both is recorded, and a helper interpreter holding only the heavy
                   imports measures the same loop for comparison (extra_info).
peer-python-c      subprocess.run([python, "-c", "import app"]) in examples/noop and
                   examples/heavy: what a cold start costs without this runtime.
warm-*             rt.invoke of a function with an idle live environment.
snapshot-*         rt.invoke right after rt.shutdown_idle(): a fork from the zygote.
cold-*             rt.invoke right after rt.shutdown_idle() of a start="cold" function.

Figures are invoke-to-result wall time in this process; the ratio table is
printed at the end (benchmarks/conftest.py).
"""

from __future__ import annotations

import asyncio  # noqa: F401  the heavy handler's imports, for floor-os-fork
import decimal  # noqa: F401
import email.message  # noqa: F401
import http.client  # noqa: F401
import json  # noqa: F401
import os
import socket
import ssl  # noqa: F401
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import psutil
import pytest

from sandbox import Runtime, _native
from sandbox.bench.cases import recv_exact, start_echo
from sandbox.protocol import HEADER, INVOKE, encode

# Rounds per benchmark: the whole run stays well under 90 s on 2 cores.
ROUNDS: dict[str, Any] = {
    "roundtrip": 5000,
    "fork": 500,
    "peer": {"noop": 20, "heavy": 15},
    "warm": 5000,
    "snapshot": 300,
    "cold": {"noop": 25, "heavy": 25},
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
HANDLERS = {"noop": os.path.join(EXAMPLES, "noop"), "heavy": os.path.join(EXAMPLES, "heavy")}
HEAVY_IMPORTS = "import asyncio, email.message, http.client, decimal, json, ssl"


def _rss_mb(pid: int | None = None) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


# -- floor-roundtrip ------------------------------------------------------------------


@pytest.fixture
def echo_socket() -> Iterator[socket.socket]:
    """The client end of a socketpair whose other end a forked echo process serves."""
    ours, pid = start_echo()
    try:
        yield ours
    finally:
        ours.close()
        os.waitpid(pid, 0)


def _invoke_frame() -> dict[str, Any]:
    """The shape and size of the INVOKE frame sync.invoke sends for a no-op event."""
    return {"t": INVOKE, "id": str(uuid.uuid4()), "event": b"{}",
            "arn": "arn:aws:lambda:us-east-1:000000000000:function:noop-snapshot",
            "deadline_ms": time.time() * 1000.0 + 3000.0, "client_context": None,
            "identity": None}


@pytest.mark.benchmark(group="floor-roundtrip")
def test_floor_roundtrip(benchmark: Any, echo_socket: socket.socket) -> None:
    """Client: sandbox.protocol.encode, sendall, exact reads, msgpack.unpackb; the
    frame is encoded in every round, as the dispatcher does."""
    frame = _invoke_frame()
    sock = echo_socket

    def roundtrip() -> dict[str, Any] | None:
        sock.sendall(encode(frame))
        head = recv_exact(sock, HEADER.size)
        assert head is not None
        body = recv_exact(sock, HEADER.unpack(head)[0])
        assert body is not None
        return msgpack.unpackb(body, raw=False)

    reply = benchmark.pedantic(roundtrip, rounds=ROUNDS["roundtrip"], warmup_rounds=100)
    assert reply is not None and reply["id"] == frame["id"]
    benchmark.extra_info["request_bytes"] = len(encode(frame))


# -- fork floors ------------------------------------------------------------------------


@pytest.mark.benchmark(group="floor-fork-native")
def test_floor_fork_native(benchmark: Any) -> None:
    benchmark.pedantic(_native.fork_exit_wait, args=(1,), rounds=ROUNDS["fork"],
                       warmup_rounds=20)
    c_timed = _native.fork_exit_wait(ROUNDS["fork"])
    benchmark.extra_info["c_timed_median_us"] = round(statistics.median(c_timed) * 1e6, 1)
    benchmark.extra_info["process_rss_mb"] = _rss_mb()


def _os_fork() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


CLEAN_FORK_SCRIPT = f"""
{HEAVY_IMPORTS}
import os, statistics, sys, time
def once():
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - t0
for _ in range(20):
    once()
times = [once() for _ in range({ROUNDS["fork"]})]
rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
print(statistics.median(times), rss, len(sys.modules))
"""


@pytest.mark.benchmark(group="floor-os-fork")
def test_floor_os_fork(benchmark: Any) -> None:
    benchmark.pedantic(_os_fork, rounds=ROUNDS["fork"], warmup_rounds=20)
    benchmark.extra_info["process_rss_mb"] = _rss_mb()
    benchmark.extra_info["process_modules"] = len(sys.modules)
    out = subprocess.run([sys.executable, "-c", CLEAN_FORK_SCRIPT], capture_output=True,
                         text=True, check=True).stdout.split()
    benchmark.extra_info["clean_interpreter_median_us"] = round(float(out[0]) * 1e6, 1)
    benchmark.extra_info["clean_interpreter_rss_mb"] = round(int(out[1]) / 2**20, 1)
    benchmark.extra_info["clean_interpreter_modules"] = int(out[2])


# -- peer: a fresh interpreter importing the handler module ----------------------------


@pytest.mark.benchmark(group="peer-python-c")
@pytest.mark.parametrize("kind", ["noop", "heavy"])
def test_peer_python_c(benchmark: Any, kind: str) -> None:
    argv = [sys.executable, "-c", "import app"]
    cwd = HANDLERS[kind]

    def spawn() -> int:
        return subprocess.run(argv, cwd=cwd, check=True).returncode

    benchmark.pedantic(spawn, rounds=ROUNDS["peer"][kind], warmup_rounds=2)


# -- this runtime ------------------------------------------------------------------------


def _invoker(rt: Runtime, name: str, starts: list[str],
             reports: list[dict[str, Any]]) -> Callable[[], None]:
    """The measured call: one invoke, recording its start kind (a list append)."""
    invoke = rt.invoke

    def target() -> None:
        result = invoke(name, {})
        report = result.report
        if report is None or result.function_error is not None:
            raise AssertionError(f"{name} failed: {result.payload}")
        starts.append(report["start"])
        reports.append(report)

    return target


def _retirer(rt: Runtime, name: str) -> Callable[[], None]:
    # The retired environment's SIGTERM and reaping must not overlap a measured round.
    def setup() -> None:
        rt.shutdown_idle(name, wait=True)
        assert rt.stats(name)["idle"] == 0

    return setup


def _summarize(benchmark: Any, starts: list[str], reports: list[dict[str, Any]],
               expected: str) -> None:
    kinds = sorted(set(starts))
    benchmark.extra_info["start_kinds"] = ",".join(kinds)
    assert kinds == [expected], f"expected only {expected!r} starts, got {starts}"
    for key in ("duration_ms", "restore_duration_ms", "init_duration_ms"):
        values = [r[key] for r in reports if r.get(key) is not None]
        if values:
            benchmark.extra_info[f"reported_{key}_median"] = round(statistics.median(values), 3)


@pytest.mark.benchmark(group="warm-noop")
def test_warm_noop(benchmark: Any, runtime: Runtime, functions: Any) -> None:
    _bench_warm(benchmark, runtime, functions.snapshot["noop"])


@pytest.mark.benchmark(group="warm-heavy")
def test_warm_heavy(benchmark: Any, runtime: Runtime, functions: Any) -> None:
    _bench_warm(benchmark, runtime, functions.snapshot["heavy"])


def _bench_warm(benchmark: Any, rt: Runtime, name: str) -> None:
    rt.invoke(name, {})  # an idle environment exists from here on
    starts: list[str] = []
    reports: list[dict[str, Any]] = []
    benchmark.pedantic(_invoker(rt, name, starts, reports), rounds=ROUNDS["warm"],
                       warmup_rounds=100)
    _summarize(benchmark, starts, reports, "warm")


@pytest.mark.benchmark(group="snapshot-noop")
def test_snapshot_noop(benchmark: Any, runtime: Runtime, functions: Any) -> None:
    _bench_new_env(benchmark, runtime, functions.snapshot["noop"], "snapshot",
                   ROUNDS["snapshot"])


@pytest.mark.benchmark(group="snapshot-heavy")
def test_snapshot_heavy(benchmark: Any, runtime: Runtime, functions: Any) -> None:
    _bench_new_env(benchmark, runtime, functions.snapshot["heavy"], "snapshot",
                   ROUNDS["snapshot"])
    zygotes = [p for p in psutil.Process().children()
               if "function" in p.cmdline() and p.cwd() == HANDLERS["heavy"]]
    if zygotes:
        benchmark.extra_info["heavy_zygote_rss_mb"] = _rss_mb(zygotes[0].pid)


@pytest.mark.benchmark(group="cold-noop")
def test_cold_noop(benchmark: Any, runtime: Runtime, functions: Any) -> None:
    _bench_new_env(benchmark, runtime, functions.cold["noop"], "cold", ROUNDS["cold"]["noop"])


@pytest.mark.benchmark(group="cold-heavy")
def test_cold_heavy(benchmark: Any, runtime: Runtime, functions: Any) -> None:
    _bench_new_env(benchmark, runtime, functions.cold["heavy"], "cold",
                   ROUNDS["cold"]["heavy"])


def _bench_new_env(benchmark: Any, rt: Runtime, name: str, kind: str, rounds: int) -> None:
    starts: list[str] = []
    reports: list[dict[str, Any]] = []
    benchmark.pedantic(_invoker(rt, name, starts, reports), setup=_retirer(rt, name),
                       rounds=rounds, warmup_rounds=2)
    _summarize(benchmark, starts, reports, kind)
    rt.shutdown_idle(name)
