"""Concurrency (sandbox/invoke/concurrency.py): the Runtime-wide limit,
reserved concurrency, throttling reasons, DryRun."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import ACTIONS_SOURCE, make_function

from sandbox import Runtime
from sandbox.errors import (
    InvalidParameterValueException,
    ResourceNotFoundException,
    TooManyRequestsException,
)
from sandbox.invoke.concurrency import ConcurrencyLimiter, backoff_delay, unreserved_minimum

RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT = "ConcurrentInvocationLimitExceeded"


def test_reserved_and_unreserved_pools():
    limiter = ConcurrencyLimiter(10)
    limiter.set_reserved("r", 2)
    assert limiter.unreserved_capacity == 8
    assert [limiter.try_acquire("r") for _ in range(3)] == [None, None, RESERVED]
    # the reservation is r's alone: others share the 8 left
    assert [limiter.try_acquire("a") for _ in range(8)] == [None] * 8
    assert limiter.try_acquire("b") == ACCOUNT
    limiter.release("a")
    assert limiter.try_acquire("b") is None
    limiter.release("r")
    assert limiter.try_acquire("r") is None


def test_changing_a_reservation_while_running_releases_to_the_right_pool():
    limiter = ConcurrencyLimiter(10)
    assert limiter.try_acquire("f") is None  # from the unreserved pool
    limiter.set_reserved("f", 3)
    limiter.release("f")
    assert [limiter.try_acquire("g") for _ in range(7)] == [None] * 7
    assert limiter.try_acquire("g") == ACCOUNT


def test_reservations_keep_the_unreserved_minimum():
    assert unreserved_minimum(1000) == 100
    assert unreserved_minimum(50) == 5
    limiter = ConcurrencyLimiter(1000)
    limiter.set_reserved("a", 900)
    with pytest.raises(InvalidParameterValueException, match=r"minimum value of \[100\]"):
        limiter.set_reserved("b", 1)
    limiter.set_reserved("a", 899)  # replacing its own reservation is fine
    limiter.set_reserved("b", 1)
    with pytest.raises(InvalidParameterValueException, match="non-negative"):
        limiter.set_reserved("c", -1)


def test_throttle_backoff_is_lambdas_at_the_default_base():
    assert [backoff_delay(60.0, n) for n in range(10)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0]
    assert backoff_delay(0.06, 0) == pytest.approx(0.001)


def test_acquire_waits_for_a_slot():
    limiter = ConcurrencyLimiter(1)
    assert limiter.try_acquire("f") is None
    got = []
    waiter = threading.Thread(target=lambda: got.append(limiter.acquire("f", lambda: False)))
    waiter.start()
    time.sleep(0.05)
    assert got == []
    limiter.release("f")
    waiter.join(5)
    assert got == [True]
    stopped = threading.Event()
    stopped.set()
    assert limiter.acquire("f", stopped.is_set) is False


@pytest.fixture
def rt(tmp_path, store):
    with Runtime(tmp_path / "state", store=store, concurrency_limit=20) as runtime:
        make_function(runtime, "f", ACTIONS_SOURCE, timeout_s=5)
        make_function(runtime, "g", ACTIONS_SOURCE, timeout_s=5)
        yield runtime


def _hold(rt, name, seconds=1.0):
    """Starts a sync invoke that sleeps; returns its thread once it runs."""
    thread = threading.Thread(target=rt.invoke,
                              args=(name, {"action": "sleep", "seconds": seconds}))
    thread.start()
    deadline = time.monotonic() + 10
    while rt.stats(name)["busy"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    return thread


def test_sync_invoke_beyond_reserved_concurrency_is_throttled(rt):
    assert rt.put_function_concurrency("f", 1) == {"ReservedConcurrentExecutions": 1}
    assert rt.get_function_concurrency("f") == {"ReservedConcurrentExecutions": 1}
    thread = _hold(rt, "f")
    with pytest.raises(TooManyRequestsException) as info:
        rt.invoke("f", {})
    assert info.value.message == "Rate Exceeded."
    assert info.value.reason == RESERVED
    assert info.value.http_status == 429
    assert rt.invoke("g", {}).function_error is None  # g uses the unreserved pool
    thread.join(10)
    assert rt.invoke("f", {}).function_error is None


def test_zero_reserved_concurrency_throttles_every_sync_invoke(rt):
    rt.put_function_concurrency("f", 0)
    with pytest.raises(TooManyRequestsException) as info:
        rt.invoke("f", {})
    assert info.value.reason == RESERVED
    rt.delete_function_concurrency("f")
    assert rt.get_function_concurrency("f") == {}
    assert rt.invoke("f", {}).function_error is None


def test_runtime_wide_limit_reason(tmp_path, store):
    with Runtime(tmp_path / "state", store=store, concurrency_limit=1) as rt:
        make_function(rt, "f", ACTIONS_SOURCE, timeout_s=5)
        make_function(rt, "g", ACTIONS_SOURCE, timeout_s=5)
        thread = _hold(rt, "f")
        with pytest.raises(TooManyRequestsException) as info:
            rt.invoke("g", {})
        assert info.value.reason == ACCOUNT
        assert info.value.message == "Rate Exceeded."
        thread.join(10)


def test_reservation_rules_and_persistence(tmp_path, store):
    state = tmp_path / "state"
    with Runtime(state, store=store, concurrency_limit=20) as rt:
        make_function(rt, "f", ACTIONS_SOURCE)
        with pytest.raises(InvalidParameterValueException, match="minimum value"):
            rt.put_function_concurrency("f", 19)
        with pytest.raises(ResourceNotFoundException):
            rt.put_function_concurrency("missing", 1)
        rt.put_function_concurrency("f", 0)
    with Runtime(state, store=store, concurrency_limit=20) as rt:
        assert rt.get_function_concurrency("f") == {"ReservedConcurrentExecutions": 0}
        with pytest.raises(TooManyRequestsException):
            rt.invoke("f", {})
        rt.delete_function("f")
        make_function(rt, "f", ACTIONS_SOURCE)
        assert rt.get_function_concurrency("f") == {}  # deleted with its function
        assert rt.invoke("f", {}).function_error is None


def test_dry_run_runs_nothing(rt):
    result = rt.invoke("f", {"action": "raise"}, invocation_type="DryRun")
    assert result.status_code == 204
    assert result.payload is None
    assert rt.stats("f") == {"idle": 0, "busy": 0}
    with open(rt.log_path("f")) as log:
        assert result.request_id not in log.read()


def test_async_deliveries_count_against_the_limit(tmp_path, store):
    with Runtime(tmp_path / "state", store=store, concurrency_limit=1,
                 retry_base_delay_s=0.05) as rt:
        make_function(rt, "f", ACTIONS_SOURCE, timeout_s=5)
        rt.invoke("f", {"action": "sleep", "seconds": 1}, invocation_type="Event")
        deadline = time.monotonic() + 10
        while rt.stats("f")["busy"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(TooManyRequestsException) as info:
            rt.invoke("f", {})
        assert info.value.reason == ACCOUNT
        assert rt.drain(20)
        assert rt.invoke("f", {}).function_error is None
