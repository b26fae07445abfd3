"""Sweeps of ``sandbox bench``: how latency and memory scale.

* concurrency 1→64: threads invoking one no-op function at once, each with
  its own warm environment; throughput and latency per level.
* registered functions 1→1,000: warm latency of one function while n are
  registered (the others are never started: a zygote each would not fit).
* payload 0→6 MiB: warm latency of a JSON string event of each size.
* idle memory: USS/PSS of idle environments (psutil) against the RSS of a
  fresh interpreter that imported the same handler, and how many idle
  environments fit a memory budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from ..api import Runtime
from ..constants import SYNC_PAYLOAD_MAX
from ..errors import ServiceException
from .cases import HANDLERS, HEAVY_MODULES
from .stats import Summary

# A handler that sleeps for event["hold"] seconds: concurrent invocations of it
# each get their own environment.
HOLD_SOURCE = """\
import time


def handler(event, context):
    if isinstance(event, dict) and event.get("hold"):
        time.sleep(event["hold"])
    return None
"""
HEAVY_HOLD_SOURCE = "".join(f"import {m}  # noqa: F401\n" for m in HEAVY_MODULES) + HOLD_SOURCE
MIB = 2**20


@dataclass(frozen=True)
class SweepConfig:
    concurrency: tuple[int, ...]
    concurrency_s: float  # measured time per level
    functions: tuple[int, ...]
    function_invokes: int
    payloads: tuple[int, ...]  # event sizes in bytes
    payload_rounds: int
    idle_envs: int
    budget_mb: int

    @property
    def steps(self) -> int:
        """Progress steps: one per level of each sweep, plus two for memory."""
        return len(self.concurrency) + len(self.functions) + len(self.payloads) + 2


QUICK = SweepConfig(concurrency=(1, 4, 16, 64), concurrency_s=0.4,
                    functions=(1, 10, 100, 1000), function_invokes=100,
                    payloads=(0, 1024, 64 * 1024, MIB, SYNC_PAYLOAD_MAX), payload_rounds=4,
                    idle_envs=4, budget_mb=1024)
FULL = SweepConfig(concurrency=(1, 2, 4, 8, 16, 32, 64), concurrency_s=2.0,
                   functions=(1, 10, 100, 1000), function_invokes=1000,
                   payloads=(0, 1024, 64 * 1024, MIB, 4 * MIB, SYNC_PAYLOAD_MAX),
                   payload_rounds=20, idle_envs=8, budget_mb=1024)


def write_code(rt: Runtime, name: str, source: str) -> str:
    """A code directory under the Runtime's state dir with ``source`` as app.py."""
    code = os.path.join(rt.state_dir, "code", name)
    os.makedirs(code, exist_ok=True)
    with open(os.path.join(code, "app.py"), "w") as file:
        file.write(source)
    return code


def _ok(result: Any) -> None:
    if result.function_error is not None:
        raise ServiceException(f"sweep invocation failed: {result.payload}")


def run_sweeps(config: SweepConfig, advance: Callable[[str], None] | None = None
               ) -> dict[str, Any]:
    """Runs every sweep on fresh Runtimes (all closed on return)."""
    step = advance or (lambda label: None)
    with Runtime(cpu_follows_memory=False, idle_timeout_s=3600) as rt:
        code = write_code(rt, "hold", HOLD_SOURCE)
        rt.create_function("sweep", handler="app.handler", code=code)
        _ok(rt.invoke("sweep", {}))
        results: dict[str, Any] = {
            "concurrency": concurrency_sweep(rt, "sweep", config, step),
            "payload": payload_sweep(rt, "sweep", config, step),
        }
        results["memory"] = memory_sweep(rt, config, step)
    results["functions"] = functions_sweep(config, step)
    return results


def concurrency_sweep(rt: Runtime, name: str, config: SweepConfig,
                      step: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for level in config.concurrency:
        latencies, elapsed = _concurrent_invokes(rt, name, level, config.concurrency_s)
        summary = Summary.of_seconds(latencies)
        rows.append({"concurrency": level, "invocations": len(latencies),
                     "throughput_per_s": len(latencies) / elapsed,
                     "p50_ms": summary.p50, "p90_ms": summary.p90, "p99_ms": summary.p99,
                     "max_ms": summary.max})
        step(f"concurrency {level}")
    return rows


def _concurrent_invokes(rt: Runtime, name: str, level: int,
                        duration_s: float) -> tuple[list[float], float]:
    """``level`` threads invoking ``name`` back to back for ``duration_s``, each
    after one untimed invoke (a warm environment per thread). Returns every
    latency (seconds) and the elapsed time."""
    latencies: list[list[float]] = [[] for _ in range(level)]
    starts = threading.Barrier(level + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(mine: list[float]) -> None:
        try:
            _ok(rt.invoke(name, {}))
            starts.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                result = rt.invoke(name, {})
                mine.append(time.perf_counter() - t0)
                _ok(result)
        except BaseException as exc:  # reported once every thread is joined
            errors.append(exc)
            starts.abort()

    threads = [threading.Thread(target=worker, args=(mine,), daemon=True)
               for mine in latencies]
    for thread in threads:
        thread.start()
    try:
        starts.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    if not errors:
        time.sleep(duration_s)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise ServiceException(f"concurrency sweep at {level}: {errors[0]!r}")
    return [t for mine in latencies for t in mine], elapsed


def payload_sweep(rt: Runtime, name: str, config: SweepConfig,
                  step: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for size in config.payloads:
        # A JSON string of exactly `size` bytes; 0 is the empty body ({}).
        body = b'"' + b"x" * (size - 2) + b'"' if size >= 2 else b""
        _ok(rt.invoke(name, body))
        times = []
        for _ in range(config.payload_rounds):
            t0 = time.perf_counter()
            result = rt.invoke(name, body)
            times.append(time.perf_counter() - t0)
            _ok(result)
        summary = Summary.of_seconds(times)
        rows.append({"bytes": size, "p50_ms": summary.p50, "p99_ms": summary.p99,
                     "max_ms": summary.max,
                     "mib_per_s": size / MIB / (summary.p50 / 1000.0) if size else None})
        step(f"payload {size} B")
    return rows


def functions_sweep(config: SweepConfig, step: Callable[[str], None]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Runtime(cpu_follows_memory=False, idle_timeout_s=3600) as rt:
        registered = 0
        for level in config.functions:
            t0 = time.perf_counter()
            while registered < level:
                rt.create_function(f"f{registered}", handler="app.handler",
                                   code=HANDLERS["noop"])
                registered += 1
            create_s = time.perf_counter() - t0
            _ok(rt.invoke("f0", {}))
            times = []
            for _ in range(config.function_invokes):
                t0 = time.perf_counter()
                result = rt.invoke("f0", {})
                times.append(time.perf_counter() - t0)
                _ok(result)
            summary = Summary.of_seconds(times)
            rows.append({"functions": level, "p50_ms": summary.p50, "p90_ms": summary.p90,
                         "p99_ms": summary.p99, "create_ms_each":
                         create_s * 1000.0 / max(level - (rows[-1]["functions"] if rows else 0),
                                                 1)})
            step(f"functions {level}")
    return rows


# -- memory --------------------------------------------------------------------------


def _environment_processes(code: str) -> tuple[psutil.Process | None, list[psutil.Process]]:
    """The zygote (our child, or the base zygote's) and environments (its
    children) whose cwd is ``code``: snapshot children share the zygote's
    command line and cwd, so the zygote is the one whose parent is not one."""
    found: dict[int, psutil.Process] = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.cwd() == code and "sandbox.worker.zygote" in " ".join(child.cmdline()):
                found[child.pid] = child
        except psutil.Error:
            continue
    zygote = next((p for p in found.values() if p.ppid() not in found), None)
    if zygote is None:
        return None, []
    return zygote, zygote.children()


def cold_interpreter_memory(code: str, python: str = sys.executable) -> dict[str, float]:
    """RSS/USS/PSS in MiB of a fresh interpreter that imported ``code``'s app."""
    script = ("import app, sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); "
              "sys.stdin.read()")
    proc = subprocess.Popen([python, "-c", script], cwd=code, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline() != b"ready\n":
            raise ServiceException("the cold interpreter did not start")
        info = psutil.Process(proc.pid).memory_full_info()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return {"rss_mb": info.rss / MIB, "uss_mb": info.uss / MIB, "pss_mb": info.pss / MIB}


def _hold(rt: Runtime, name: str, seconds: float) -> None:
    _ok(rt.invoke(name, {"hold": seconds}))


def memory_sweep(rt: Runtime, config: SweepConfig,
                 step: Callable[[str], None]) -> dict[str, Any]:
    """Idle environments of a no-op and of a heavy handler against a cold interpreter."""
    out: dict[str, Any] = {"budget_mb": config.budget_mb}
    for handler, source in (("noop", HOLD_SOURCE), ("heavy", HEAVY_HOLD_SOURCE)):
        name = f"idle-{handler}"
        code = write_code(rt, name, source)
        rt.create_function(name, handler="app.handler", code=code)
        # A first start (forked from the zygote tree) boots the function's
        # zygote; the environments measured are forked from that.
        _hold(rt, name, 0.0)
        rt.wait_zygote_boot(name)
        rt.shutdown_idle(name, wait=True)
        threads = [threading.Thread(target=_hold, args=(rt, name, 0.3))
                   for _ in range(config.idle_envs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.1)  # let the environments settle into their idle wait
        zygote, envs = _environment_processes(code)
        if zygote is None or not envs:
            raise ServiceException(f"idle environments of {name} not found")
        infos = [env.memory_full_info() for env in envs]
        zygote_info = zygote.memory_full_info()
        uss = sum(i.uss for i in infos) / len(infos) / MIB
        pss = sum(i.pss for i in infos) / len(infos) / MIB
        cold = cold_interpreter_memory(code)
        zygote_rss = zygote_info.rss / MIB
        fit = int(max(config.budget_mb - zygote_rss, 0) // uss) if uss else None
        out[handler] = {
            "idle_envs": len(envs), "env_uss_mb": uss, "env_pss_mb": pss,
            "env_rss_mb": sum(i.rss for i in infos) / len(infos) / MIB,
            "zygote_rss_mb": zygote_rss, "zygote_pss_mb": zygote_info.pss / MIB,
            "cold_interpreter": cold,
            "uss_over_cold_rss": uss / cold["rss_mb"],
            "envs_fit_budget": fit,
            "cold_interpreters_fit_budget": int(config.budget_mb // cold["rss_mb"]),
        }
        rt.shutdown_idle(name, wait=True)
        step(f"memory {handler}")
    return out
