"""Lambda-style log lines and the per-function log files under the state dir."""

from __future__ import annotations

import datetime
import math
import os
from typing import Any

from .constants import LATEST_VERSION, LOG_TAIL_BYTES


class FunctionLog:
    """Append-only log file of one function; each invocation is one write(2),
    so concurrent invocations never interleave their blocks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        """Appends ``data``; a no-op once closed (an invocation that outlived
        its function's deletion or the Runtime's close)."""
        if self._fd < 0:
            return
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def timestamp() -> str:
    """UTC time as Lambda prints it in log lines."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def billed_ms(duration_ms: float) -> int:
    """Lambda bills by the millisecond, rounding up, with a minimum of 1 ms."""
    return max(1, math.ceil(duration_ms))


def report_line(report: dict[str, Any]) -> str:
    fields = [
        f"REPORT RequestId: {report['request_id']}",
        f"Duration: {report['duration_ms']:.2f} ms",
        f"Billed Duration: {report['billed_duration_ms']} ms",
        f"Memory Size: {report['memory_size_mb']} MB",
        f"Max Memory Used: {report['max_memory_used_mb']} MB",
    ]
    if report.get("init_duration_ms") is not None:
        fields.append(f"Init Duration: {report['init_duration_ms']:.2f} ms")
    if report.get("restore_duration_ms") is not None:
        fields.append(f"Restore Duration: {report['restore_duration_ms']:.2f} ms")
    if report.get("status") not in (None, "ok", "error"):
        fields.append(f"Status: {report['status']}")
    # isolate-style facts after Lambda's own fields, where there are any
    if report.get("exit_code") is not None:
        fields.append(f"Exit Code: {report['exit_code']}")
    if report.get("signal") is not None:
        fields.append(f"Signal: {report['signal']}")
    if report.get("oom_killed"):
        fields.append("Killed By: oom")
    elif report.get("killed_by_sandbox"):
        fields.append("Killed By: sandbox")
    if report.get("cpu_time_ms") is not None:
        fields.append(f"CPU Time: {report['cpu_time_ms']:.2f} ms")
    fields.append(f"Start: {report['start']}")
    return "\t".join(fields)


def invocation_block(request_id: str, output: bytes, report: dict[str, Any]) -> bytes:
    """START, the function's output, END and REPORT, as one block of bytes."""
    if output and not output.endswith(b"\n"):
        output += b"\n"
    return b"".join((
        f"START RequestId: {request_id} Version: {LATEST_VERSION}\n".encode(),
        output,
        f"END RequestId: {request_id}\n{report_line(report)}\n".encode(),
    ))


def tail(block: bytes, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log block, as text."""
    return block[-limit:].decode("utf-8", "replace")
