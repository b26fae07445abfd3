"""An execution environment's life after INIT: READY, then INVOKE after INVOKE.

The environment's stdout and stderr are a memfd the dispatcher reads after
each invocation, so nothing here copies log text; it only flushes.
"""

from __future__ import annotations

import _thread
import json
import os
import resource
import sys
import time

from ..constants import ERROR_MARSHAL, ERROR_RESPONSE_TOO_LARGE, SYNC_PAYLOAD_MAX
from ..errors import ProtocolError
from ..protocol import INVOKE, PROTOCOL_VERSION, READY, RESULT, Channel
from .context import LambdaContext
from .handler import error_document, log_error

# typing is not imported at run time: every cold start would pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .handler import Handler


def _json_default(value: Any) -> Any:
    # The Python runtime serializes Decimal as a number; anything else unknown
    # is a marshalling error. decimal is only looked up if already imported.
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _flush_logs() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _error_payload(document: dict[str, Any]) -> bytes:
    log_error(document)
    return json.dumps(document).encode()


def run_one(handler: Handler, frame: dict[str, Any]) -> dict[str, Any]:
    """Runs one INVOKE frame and returns the RESULT frame."""
    request_id = frame["id"]
    context = LambdaContext(request_id, frame["arn"], frame["deadline_ms"],
                            frame.get("client_context"), frame.get("identity"))
    error_type: str | None = None
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    try:
        result = handler(json.loads(frame["event"]), context)
    except Exception as exc:
        document = error_document(exc, request_id)
        error_type = document["errorType"]
        payload = _error_payload(document)
    else:
        try:
            payload = json.dumps(result, default=_json_default).encode()
        except (TypeError, ValueError) as exc:
            error_type = ERROR_MARSHAL
            payload = _error_payload({"errorMessage": f"Unable to marshal response: {exc}",
                                      "errorType": ERROR_MARSHAL, "requestId": request_id,
                                      "stackTrace": []})
    duration_ms = (time.perf_counter() - start) * 1000.0
    if len(payload) > SYNC_PAYLOAD_MAX:
        error_type = ERROR_RESPONSE_TOO_LARGE
        payload = _error_payload({
            "errorMessage": "Response payload size exceeded maximum allowed payload size "
                            f"({SYNC_PAYLOAD_MAX} bytes).",
            "errorType": ERROR_RESPONSE_TOO_LARGE, "requestId": request_id, "stackTrace": []})
    _flush_logs()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = after.ru_utime + after.ru_stime
    return {
        "t": RESULT, "id": request_id, "payload": payload, "error_type": error_type,
        "duration_ms": duration_ms, "maxrss_kb": after.ru_maxrss,
        "cpu_ms": (cpu_s - before.ru_utime - before.ru_stime) * 1000.0, "cpu_s": cpu_s,
    }


# Platform calls (sandbox/client/platform.py): the channel while a handler
# runs, else None. The lock keeps each call's request and reply together, and
# the RESULT after any call in progress (a thread of the handler may make one).
platform_channel: Channel | None = None
platform_lock = _thread.allocate_lock()


def serve_invocations(channel: Channel, handler: Handler | None,
                      init_error: dict[str, Any] | None, init_ms: float) -> None:
    """Announces READY, then runs invocations until the dispatcher hangs up.

    Returns when the channel closes (SHUTDOWN) or INIT failed; the caller exits
    the process.
    """
    global platform_channel
    _flush_logs()
    channel.send({"t": READY, "v": PROTOCOL_VERSION, "pid": os.getpid(),
                  "init_ms": init_ms, "init_error": init_error})
    if handler is None:
        return
    while True:
        frame = channel.recv()
        if frame is None:
            return
        if frame["t"] != INVOKE:
            raise ProtocolError(f"environment expected an {INVOKE!r} frame, got {frame['t']!r}")
        platform_channel = channel
        result = run_one(handler, frame)
        with platform_lock:
            platform_channel = None
        channel.send(result)


def line_buffered_stdio() -> None:
    """So a print just before a timeout or a crash still reaches the log."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        # A zygote's child is line-buffered already: writing it again would
        # copy the stream's pages from the zygote for nothing.
        if reconfigure is not None and not getattr(stream, "line_buffering", False):
            reconfigure(line_buffering=True)


def exit_environment(code: int = 0) -> NoReturn:
    """Leaves without interpreter finalization: nothing of it is wanted here."""
    _flush_logs()
    os._exit(code)
