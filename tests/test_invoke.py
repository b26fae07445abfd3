"""Synchronous invocation (sandbox/invoke/sync.py through Runtime.invoke): warm
reuse, start kinds and reports, payload limits, DryRun, concurrency."""

from __future__ import annotations

import math
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import ACTIONS_SOURCE

from sandbox import InvokeResult, Runtime
from sandbox.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
    ResourceNotFoundException,
    TooManyRequestsException,
)

MIB = 1024 * 1024


# -- warm reuse and start kinds ----------------------------------------------------------
def test_warm_reuse_keeps_module_globals(runtime, actions, start):
    results = [runtime.invoke(actions, {}) for _ in range(3)]
    assert [r.payload["count"] for r in results] == [1, 2, 3]
    assert [r.report["start"] for r in results] == [start, "warm", "warm"]
    assert len({r.report["pid"] for r in results}) == 1
    assert results[0].report["init_duration_ms"] is not None
    assert results[1].report["init_duration_ms"] is None
    assert results[2].report["init_duration_ms"] is None


def test_fresh_environment_does_not_keep_globals(runtime, actions, start):
    first = runtime.invoke(actions, {})
    runtime.invoke(actions, {})
    assert runtime.shutdown_idle(actions) == 1
    assert runtime.stats(actions) == {"idle": 0, "busy": 0}
    r = runtime.invoke(actions, {})
    assert r.payload["count"] == 1
    assert r.report["pid"] != first.report["pid"]
    assert r.report["start"] == start
    assert r.report["init_duration_ms"] is not None


def _init_marker_function(make_function, rt, tmp_path, start):
    """Function "f", whose INIT appends its pid to the returned file and whose
    handler returns its pid (isolation off: it writes a host file)."""
    marker = tmp_path / "inits"
    make_function("f", f"""
        import os
        with open({str(marker)!r}, "a") as f:
            f.write(str(os.getpid()) + "\\n")
        def handler(event, context):
            return os.getpid()
        """, rt=rt, start=start)
    return marker


def test_snapshot_init_runs_once_per_zygote(host_runtime, make_function, tmp_path):
    """INIT (module top level) runs in the zygote; forked environments inherit it."""
    marker = _init_marker_function(make_function, host_runtime, tmp_path, "snapshot")
    pids = []
    for _ in range(3):
        pids.append(host_runtime.invoke("f", {}).payload)
        host_runtime.shutdown_idle("f")
    assert len(set(pids)) == 3
    inits = marker.read_text().split()
    assert len(inits) == 1  # paid once, by the zygote
    assert int(inits[0]) not in pids


def test_cold_init_runs_per_environment(host_runtime, make_function, tmp_path):
    marker = _init_marker_function(make_function, host_runtime, tmp_path, "cold")
    pids = []
    for _ in range(2):
        pids.append(host_runtime.invoke("f", {}).payload)
        host_runtime.shutdown_idle("f")
    assert sorted(int(p) for p in marker.read_text().split()) == sorted(pids)


def test_report_fields(runtime, actions, start):
    r = runtime.invoke(actions, {})
    assert isinstance(r, InvokeResult)
    assert r.status_code == 200
    assert r.executed_version == "$LATEST"
    report = r.report
    assert {"request_id", "duration_ms", "billed_duration_ms", "memory_size_mb",
            "max_memory_used_mb", "init_duration_ms", "start"} <= set(report)
    assert report["request_id"] == r.request_id
    parsed = uuid.UUID(report["request_id"])
    assert str(parsed) == report["request_id"]
    assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert isinstance(report["duration_ms"], float) and report["duration_ms"] >= 0
    assert isinstance(report["billed_duration_ms"], int)
    assert report["billed_duration_ms"] == max(1, math.ceil(report["duration_ms"]))
    assert report["memory_size_mb"] == 128
    assert isinstance(report["max_memory_used_mb"], int)
    assert 1 <= report["max_memory_used_mb"] < 1024
    assert report["start"] == start
    assert isinstance(report["init_duration_ms"], float) and report["init_duration_ms"] > 0
    if start == "snapshot":
        assert isinstance(report["restore_duration_ms"], float)
        assert report["restore_duration_ms"] > 0
    else:
        assert report.get("restore_duration_ms") is None
    warm = runtime.invoke(actions, {}).report
    assert warm["start"] == "warm"
    assert warm["init_duration_ms"] is None
    assert warm.get("restore_duration_ms") is None


def test_duration_measures_the_handler(runtime, actions):
    r = runtime.invoke(actions, {"action": "sleep", "seconds": 0.2})
    assert r.function_error is None
    assert 190 <= r.report["duration_ms"] < 900
    assert r.report["billed_duration_ms"] >= 200


def test_memory_size_reported_as_configured(runtime, make_function):
    make_function("f", "def handler(e, c):\n    return 1\n", memory_mb=1024)
    assert runtime.invoke("f", {}).report["memory_size_mb"] == 1024


def test_max_memory_used_grows_with_allocation(runtime, make_function, start):
    make_function("f", """
        def handler(event, context):
            block = bytearray(event["mb"] * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])
            return len(block)
        """, start=start, memory_mb=512)
    small = runtime.invoke("f", {"mb": 1}).report["max_memory_used_mb"]
    big = runtime.invoke("f", {"mb": 80}).report["max_memory_used_mb"]
    assert big >= small + 60


# -- payloads ---------------------------------------------------------------------------
def test_request_over_6_mib_is_rejected(runtime, actions):
    with pytest.raises(RequestTooLargeException) as info:
        runtime.invoke(actions, {"data": "x" * (6 * MIB)})
    assert info.value.code == "RequestTooLargeException"
    assert info.value.http_status == 413
    assert runtime.stats(actions) == {"idle": 0, "busy": 0}  # nothing ran
    with pytest.raises(RequestTooLargeException):
        runtime.invoke(actions, b'"' + b"y" * (6 * MIB) + b'"')


def test_request_at_the_limit_is_accepted(runtime, make_function):
    make_function("f", "def handler(event, context):\n    return len(event)\n",
                  timeout_s=10)
    body = b'"' + b"z" * (6 * MIB - 2) + b'"'
    assert len(body) == 6 * MIB
    r = runtime.invoke("f", body)
    assert r.function_error is None, r.payload
    assert r.payload == 6 * MIB - 2


def test_five_mib_payload_round_trips(runtime, actions):
    data = "q" * (5 * MIB)
    r = runtime.invoke(actions, {"action": "echo", "data": data})
    assert r.function_error is None
    assert r.payload == {"action": "echo", "data": data}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2", "{'single': 'quotes'}", b"\xff\xfe"])
def test_invalid_json_is_invalid_request_content(runtime, actions, body):
    with pytest.raises(InvalidRequestContentException) as info:
        runtime.invoke(actions, body)
    assert info.value.code == "InvalidRequestContentException"
    assert info.value.http_status == 400


def test_unserializable_payload_is_invalid_request_content(runtime, actions):
    with pytest.raises(InvalidRequestContentException):
        runtime.invoke(actions, {"a": object()})


@pytest.mark.parametrize("body, event", [
    (b'{"k": [1, 2]}', {"k": [1, 2]}),
    ('{"k": "v"}', {"k": "v"}),
    (bytearray(b"[1]"), [1]),
    (b"", {}),
    (None, None),
])
def test_json_bytes_and_text_payloads(runtime, make_function, body, event):
    """bytes and str payloads are JSON already; the handler gets them decoded."""
    make_function("echo", "def handler(event, context):\n    return event\n")
    r = runtime.invoke("echo", body) if body is not None else runtime.invoke("echo")
    assert r.function_error is None
    assert r.payload == event


def test_response_over_6_mib_is_a_function_error(runtime, actions):
    r = runtime.invoke(actions, {"action": "huge"})
    assert r.function_error == "Unhandled"
    assert r.payload["errorType"] == "Function.ResponseSizeTooLarge"


def test_dry_run_runs_nothing(runtime, make_function, tmp_path):
    marker = tmp_path / "ran"
    make_function("f", f"""
        open({str(marker)!r}, "a").write("init\\n")
        def handler(event, context):
            open({str(marker)!r}, "a").write("invoke\\n")
            return 1
        """, start="snapshot")
    r = runtime.invoke("f", {"x": 1}, invocation_type="DryRun")
    assert r.status_code == 204
    assert r.payload is None
    assert r.function_error is None
    assert not marker.exists()
    assert runtime.stats("f") == {"idle": 0, "busy": 0}
    assert "START" not in Path(runtime.log_path("f")).read_text()


def test_request_ids_are_unique_uuid4(runtime, actions):
    ids = [runtime.invoke(actions, {}, invocation_type="DryRun").request_id for _ in range(500)]
    assert len(set(ids)) == 500
    for rid in ids[:50]:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_dry_run_still_validates(runtime, actions):
    with pytest.raises(RequestTooLargeException):
        runtime.invoke(actions, {"data": "x" * (6 * MIB)}, invocation_type="DryRun")
    with pytest.raises(ResourceNotFoundException):
        runtime.invoke("nope", {}, invocation_type="DryRun")


def test_unknown_invocation_type(runtime, actions):
    with pytest.raises(InvalidParameterValueException, match="invocation_type"):
        runtime.invoke(actions, {}, invocation_type="Bogus")


def test_qualifier(runtime, actions):
    assert runtime.invoke(actions, {}, qualifier="$LATEST").function_error is None
    with pytest.raises(ResourceNotFoundException):
        runtime.invoke(actions, {}, qualifier="7")


def test_invoke_unknown_function(runtime):
    with pytest.raises(ResourceNotFoundException) as info:
        runtime.invoke("missing", {})
    assert info.value.http_status == 404
    assert "missing" in str(info.value)


# -- concurrency ------------------------------------------------------------------------
def _invoke_all(rt, name, events):
    results: list[InvokeResult | BaseException | None] = [None] * len(events)

    def run(i):
        try:
            results[i] = rt.invoke(name, events[i])
        except BaseException as exc:  # reported by the assertions below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(events))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_invokes_run_in_parallel(runtime, make_function, start):
    make_function("sleepy", """
        import os, time
        def handler(event, context):
            time.sleep(1)
            return os.getpid()
        """, start=start, timeout_s=5)
    started = time.monotonic()
    results = _invoke_all(runtime, "sleepy", [{}] * 6)
    elapsed = time.monotonic() - started
    assert all(isinstance(r, InvokeResult) and r.function_error is None for r in results), results
    assert len({r.report["pid"] for r in results}) == 6, "six distinct environments"
    assert elapsed < 2.5, f"6 x 1 s took {elapsed:.2f} s: not parallel"
    assert {r.report["start"] for r in results} == {start}
    assert runtime.stats("sleepy") == {"idle": 6, "busy": 0}
    # all six are now warm and get reused
    again = _invoke_all(runtime, "sleepy", [{}] * 6)
    assert {r.report["start"] for r in again} == {"warm"}
    assert {r.payload for r in again} == {r.payload for r in results}


def test_concurrency_limit(tmp_path, start):
    with Runtime(tmp_path / "state", concurrency_limit=1) as rt:
        code = tmp_path / "code"
        code.mkdir()
        (code / "app.py").write_text(ACTIONS_SOURCE)
        rt.create_function("f", "app.handler", code, start=start, timeout_s=5)
        rt.create_function("g", "app.handler", code, start=start, timeout_s=5)
        results = []
        thread = threading.Thread(
            target=lambda: results.append(rt.invoke("f", {"action": "sleep", "seconds": 1})))
        thread.start()
        deadline = time.monotonic() + 5
        while rt.stats("f")["busy"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert rt.stats("f")["busy"] == 1
        with pytest.raises(TooManyRequestsException) as info:
            rt.invoke("f", {})
        assert info.value.code == "TooManyRequestsException"
        assert info.value.http_status == 429
        with pytest.raises(TooManyRequestsException):  # the limit is across functions
            rt.invoke("g", {})
        thread.join(10)
        assert results and results[0].function_error is None
        # the slot is free again
        assert rt.invoke("f", {}).function_error is None
