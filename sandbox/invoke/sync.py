"""Synchronous invocation (RequestResponse): the caller waits, nothing retries.

A function error is a result, not an exception: ``function_error`` is
"Unhandled" and ``payload`` is the error document, as in Lambda. The
invocation's deadline kills the whole environment: its cgroup (descendants
included) and its process group.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from typing import Any

from ..constants import (
    ERROR_OUT_OF_MEMORY,
    ERROR_TIMEOUT,
    FUNCTION_ERROR_UNHANDLED,
    LATEST_VERSION,
)
from ..environments import Environment, FunctionPool, InitFailed
from ..environments.pool import exit_document
from ..errors import ProtocolError
from ..limits.host import CPU_BACKSTOP_S
from ..logs import FunctionLog, billed_ms, invocation_block, tail, timestamp
from ..protocol import INVOKE, PLATFORM_CALL, RESULT
from .platform import PlatformHandler, serve_call

# After a kill, how long to wait for the zygote's report of the exit.
EXIT_REPORT_WAIT_S = 1.0

# Adaptive spinning: for a function that usually answers within SPIN_MAX_S,
# the waiting thread polls its channel instead of sleeping, which saves the
# scheduler's sleep and cross-CPU wake-up (about half of a warm invoke's
# latency on a 2-core machine). One core is always left to the environments,
# so at most cpu_count - 1 threads spin at once, and none on a single CPU.
SPIN_MAX_S = 100e-6
_spin_slots = threading.BoundedSemaphore(max((os.cpu_count() or 1) - 1, 1))
SPIN_ENABLED = (os.cpu_count() or 1) > 1
# An environment that has used half its RLIMIT_CPU backstop is retired after
# its invocation, so a busy warm environment never meets the backstop.
CPU_RETIRE_S = CPU_BACKSTOP_S / 2
# Weight of the newest round trip in a function's moving average.
RTT_WEIGHT = 0.2


_UNDECODED: Any = object()


class InvokeResult:
    """What an invocation returned.

    Attributes:
        status_code: 200 for RequestResponse (also when the function failed),
            202 for Event, 204 for DryRun.
        payload: the handler's return value decoded from JSON, or the error
            document when ``function_error`` is set; None for Event and DryRun.
        function_error: None, or "Unhandled" when the function failed.
        log_tail: the last 4 KiB of this invocation's log block, as text.
        report: request_id, duration_ms, billed_duration_ms, memory_size_mb,
            max_memory_used_mb, init_duration_ms (None when warm),
            restore_duration_ms (snapshot starts), start, status, and which
            environment ran it: environment_id and pid (the host's number of
            its process; inside, in its own pid namespace, it is pid 2).
        raw_payload: ``payload`` as the JSON bytes the function produced.
    """

    __slots__ = ("status_code", "raw_payload", "function_error", "log_tail", "report",
                 "request_id", "executed_version", "_payload")

    def __init__(self, status_code: int, raw_payload: bytes, function_error: str | None,
                 log_tail: str, report: dict[str, Any] | None, request_id: str,
                 executed_version: str | None = LATEST_VERSION) -> None:
        self.status_code = status_code
        self.raw_payload = raw_payload
        self.function_error = function_error
        self.log_tail = log_tail
        self.report = report
        self.request_id = request_id
        self.executed_version = executed_version
        self._payload = _UNDECODED

    @property
    def payload(self) -> Any:
        """Decoded on first access: callers that pass the bytes on never pay."""
        if self._payload is _UNDECODED:
            self._payload = json.loads(self.raw_payload) if self.raw_payload else None
        return self._payload

    def __repr__(self) -> str:
        return (f"InvokeResult(status_code={self.status_code}, "
                f"function_error={self.function_error!r}, request_id={self.request_id!r}, "
                f"raw_payload={self.raw_payload[:200]!r})")


def _new_report(request_id: str, start: str, **fields: Any) -> dict[str, Any]:
    """A report with every isolate-style fact at its "nothing happened" value."""
    report: dict[str, Any] = {
        "request_id": request_id, "start": start, "init_duration_ms": None,
        "restore_duration_ms": None, "wall_time_ms": None, "cpu_time_ms": None,
        "oom_killed": False, "killed_by_sandbox": False, "exit_code": None, "signal": None,
    }
    report.update(fields)
    return report


def _mb(kilobytes: int) -> int:
    return max(1, math.ceil(kilobytes / 1024))


def _finish(log: FunctionLog, pool: FunctionPool, request_id: str, payload: bytes,
            error: bool, output: bytes, report: dict[str, Any]) -> InvokeResult:
    report["billed_duration_ms"] = billed_ms(report["duration_ms"])
    report["memory_size_mb"] = pool.config.memory_mb
    block = invocation_block(request_id, output, report)
    log.write(block)
    return InvokeResult(200, payload, FUNCTION_ERROR_UNHANDLED if error else None,
                        tail(block), report, request_id)


def _init_failure(log: FunctionLog, pool: FunctionPool, request_id: str,
                  failure: InitFailed) -> InvokeResult:
    document = dict(failure.document)
    document.setdefault("requestId", request_id)
    out_of_memory = document.get("errorType") == ERROR_OUT_OF_MEMORY
    report = _new_report(
        request_id, failure.start_kind, duration_ms=failure.init_ms or 0.0,
        max_memory_used_mb=pool.config.memory_mb if out_of_memory else 0,
        init_duration_ms=failure.init_ms, status="oom" if out_of_memory else "init_error",
        oom_killed=out_of_memory)
    return _finish(log, pool, request_id, json.dumps(document).encode(), True,
                   failure.output, report)


def invoke(pool: FunctionPool, log: FunctionLog, request_id: str, event: bytes, arn: str,
           client_context: dict[str, Any] | None = None,
           identity: dict[str, Any] | None = None,
           platform: PlatformHandler | None = None) -> InvokeResult:
    """Runs one synchronous invocation of ``event`` (JSON bytes).

    ``platform`` serves the calls the function makes through its channel
    while it runs (sandbox/invoke/platform.py)."""
    try:
        env = pool.acquire(request_id)
    except InitFailed as failure:
        return _init_failure(log, pool, request_id, failure)
    first = env.invocations == 0
    env.invocations += 1
    timeout_s = pool.config.timeout_s
    started = time.monotonic()
    reply = None
    try:
        env.channel.send({
            "t": INVOKE, "id": request_id, "event": event, "arn": arn,
            "deadline_ms": time.time() * 1000.0 + timeout_s * 1000.0,
            "client_context": client_context, "identity": identity,
        })
        spinning = (SPIN_ENABLED and pool.rtt_s < SPIN_MAX_S
                    and _spin_slots.acquire(blocking=False))
        try:
            reply = env.channel.recv(started + timeout_s, SPIN_MAX_S if spinning else 0.0)
        finally:
            if spinning:
                _spin_slots.release()
        # -- platform calls: served while the invocation runs, within its deadline --
        while reply is not None and reply["t"] == PLATFORM_CALL:
            env.channel.send(serve_call(platform, reply, started + timeout_s))
            reply = env.channel.recv(started + timeout_s)
        pool.rtt_s += RTT_WEIGHT * (time.monotonic() - started - pool.rtt_s)
        if reply is not None and (reply["t"] != RESULT or reply.get("id") != request_id):
            raise ProtocolError(f"environment answered {reply['t']!r} for another request")
        status = "ok" if reply is not None else "crashed"
    except TimeoutError:
        status = "timeout"
    except (OSError, ProtocolError):
        status = "crashed"
    report = _new_report(
        request_id, env.start_kind, init_duration_ms=env.init_ms if first else None,
        restore_duration_ms=env.restore_ms if first else None,
        wall_time_ms=(time.monotonic() - started) * 1000.0,
        environment_id=env.env_id, pid=env.pid)
    if reply is not None and status == "ok":
        output = env.take_output()
        env.cpu_s = reply["cpu_s"]
        cgroup = env.cgroup
        peak = cgroup.peak_bytes() if cgroup is not None else None
        pool.release(env, reusable=True, retire=env.cpu_s > CPU_RETIRE_S)
        error = reply["error_type"] is not None
        report.update(
            duration_ms=reply["duration_ms"], cpu_time_ms=reply["cpu_ms"],
            max_memory_used_mb=_mb(peak // 1024 if peak is not None else reply["maxrss_kb"]),
            status="error" if error else "ok")
        return _finish(log, pool, request_id, reply["payload"], error, output, report)
    return _environment_failure(log, pool, env, request_id, status, started, report)


def _environment_failure(log: FunctionLog, pool: FunctionPool, env: Environment,
                         request_id: str, status: str, started: float,
                         report: dict[str, Any]) -> InvokeResult:
    """The deadline passed, or the environment died: it is killed (descendants
    in its cgroup too) and discarded."""
    env.kill_all()
    record = env.wait_exit(EXIT_REPORT_WAIT_S)
    cgroup = env.cgroup
    out_of_memory = cgroup is not None and cgroup.oom_kills() > 0
    peak = cgroup.peak_bytes() if cgroup is not None else None
    output = env.take_output()
    pool.release(env, reusable=False)
    timeout_s = pool.config.timeout_s
    if record is not None and record.status is not None and status != "timeout":
        if os.WIFSIGNALED(record.status):
            report["signal"] = os.WTERMSIG(record.status)
            status = "signal"
        elif os.WIFEXITED(record.status):
            report["exit_code"] = os.WEXITSTATUS(record.status)
            status = "exit"
    if out_of_memory:
        status = "oom"
        report["oom_killed"] = True
    if status == "timeout":
        report["killed_by_sandbox"] = True
        message = f"Task timed out after {timeout_s:.2f} seconds"
        output += f"{timestamp()} {request_id} {message}\n".encode()
        document = {"errorMessage": f"RequestId: {request_id} Error: {message}",
                    "errorType": ERROR_TIMEOUT, "stackTrace": []}
        duration_ms = timeout_s * 1000.0
    else:
        document = exit_document(record, request_id, out_of_memory)
        output += f"{document['errorMessage']}\n{document['errorType']}\n".encode()
        duration_ms = (time.monotonic() - started) * 1000.0
    if out_of_memory:
        used_mb = pool.config.memory_mb  # the OOM killer acts at the limit
    elif peak is not None:
        used_mb = _mb(peak // 1024)
    else:
        used_mb = _mb(record.maxrss_kb) if record else 0
    report.update(duration_ms=duration_ms, status=status, max_memory_used_mb=used_mb,
                  cpu_time_ms=(record.utime_s + record.stime_s) * 1000.0 if record else None)
    return _finish(log, pool, request_id, json.dumps(document).encode(), True, output, report)
