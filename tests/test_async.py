"""Asynchronous invoke (sandbox/invoke/asynchronous.py): durable acceptance,
retries, event age, destinations, dead-letter queue, throttling, resume."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import make_function, take_messages, take_records

from sandbox import Runtime
from sandbox.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
    ResourceNotFoundException,
)
from sandbox.store import open_store
from sandbox.store.base import NewEvent

SOURCE = """
import os
import time


def handler(event, context):
    if "TIMES" in os.environ:
        with open(os.environ["TIMES"], "a") as f:
            f.write(f"{time.time()}\\n")
    action = event.get("action")
    if action == "fail":
        raise RuntimeError(f"failed {event.get('id')}")
    if action == "sleep":
        time.sleep(event["seconds"])
    return {"id": event.get("id"), "request_id": context.aws_request_id}
"""
FAST = 0.05  # retry base delay for tests: 50 ms, then 100 ms
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def rt(tmp_path, store):
    with Runtime(tmp_path / "state", store=store, retry_base_delay_s=FAST) as runtime:
        make_function(runtime, "f", SOURCE)
        runtime.create_queue("ok")
        runtime.create_queue("failed")
        yield runtime


def _arn(rt, queue):
    return rt.arns.queue(queue)


def test_event_is_accepted_with_202_and_delivered_once(rt):
    rt.put_function_event_invoke_config("f", on_success=_arn(rt, "ok"),
                                        on_failure=_arn(rt, "failed"))
    result = rt.invoke("f", {"id": 1}, invocation_type="Event")
    assert result.status_code == 202
    assert result.payload is None
    assert result.function_error is None
    assert rt.drain(20)
    [record] = take_records(rt, "ok", 1)
    assert set(record) == {"version", "timestamp", "requestContext", "requestPayload",
                           "responseContext", "responsePayload"}
    assert record["version"] == "1.0"
    assert TIMESTAMP.match(record["timestamp"])
    assert record["requestContext"] == {
        "requestId": result.request_id, "functionArn": rt.function_arn("f") + ":$LATEST",
        "condition": "Success", "approximateInvokeCount": 1}
    assert record["requestPayload"] == {"id": 1}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"id": 1, "request_id": result.request_id}
    assert take_messages(rt, "failed", 1, timeout=0.2) == []


def test_function_errors_are_retried_twice_then_go_to_on_failure(rt):
    rt.put_function_event_invoke_config("f", on_failure=_arn(rt, "failed"))
    result = rt.invoke("f", {"action": "fail", "id": 7}, invocation_type="Event")
    assert rt.drain(20)
    [record] = take_records(rt, "failed", 1)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["requestId"] == result.request_id
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"] == "failed 7"
    assert record["requestPayload"] == {"action": "fail", "id": 7}


def test_maximum_retry_attempts_zero_means_one_invocation(rt):
    rt.put_function_event_invoke_config("f", maximum_retry_attempts=0,
                                        on_failure=_arn(rt, "failed"))
    rt.invoke("f", {"action": "fail"}, invocation_type="Event")
    assert rt.drain(20)
    [record] = take_records(rt, "failed", 1)
    assert record["requestContext"]["approximateInvokeCount"] == 1


def test_retries_wait_one_then_two_base_delays(tmp_path, store):
    times = tmp_path / "times"
    base = 0.3
    with Runtime(tmp_path / "state", store=store, retry_base_delay_s=base, isolation=False) as rt:
        make_function(rt, "f", SOURCE, environment={"TIMES": str(times)})
        rt.invoke("f", {"action": "fail"}, invocation_type="Event")
        assert rt.drain(20)
    stamps = [float(line) for line in times.read_text().split()]
    assert len(stamps) == 3
    assert stamps[1] - stamps[0] >= base
    assert stamps[2] - stamps[1] >= 2 * base


def test_a_retry_beyond_the_maximum_age_fails_with_event_age_exceeded(tmp_path, store):
    # The default base delay (60 s) puts the first retry past a 60 s maximum age.
    with Runtime(tmp_path / "state", store=store) as rt:
        make_function(rt, "f", SOURCE)
        failed = rt.create_queue("failed")
        rt.put_function_event_invoke_config("f", maximum_event_age_s=60, on_failure=failed)
        rt.invoke("f", {"action": "fail"}, invocation_type="Event")
        [record] = take_records(rt, "failed", 1)
        assert record["requestContext"]["condition"] == "EventAgeExceeded"
        assert record["requestContext"]["approximateInvokeCount"] == 1
        assert record["responseContext"]["functionError"] == "Unhandled"
        assert rt.drain(5)


def test_an_event_older_than_the_maximum_age_never_runs(tmp_path, store):
    state = tmp_path / "state"
    with Runtime(state, store=store) as rt:
        make_function(rt, "f", SOURCE)
        failed = rt.create_queue("failed")
        rt.put_function_event_invoke_config("f", maximum_event_age_s=60, on_failure=failed)
    # An event that waited two minutes (the Runtime was down meanwhile).
    backend = open_store(store, str(state), False)
    backend.add_event(NewEvent("f", "old-request", b'{"id": "old"}', time.time() - 120))
    backend.close()
    with Runtime(state, store=store) as rt:
        [record] = take_records(rt, "failed", 1)
        assert record["requestContext"]["condition"] == "EventAgeExceeded"
        assert record["requestContext"]["approximateInvokeCount"] == 0
        assert record["requestContext"]["requestId"] == "old-request"
        assert "responseContext" not in record and "responsePayload" not in record
        assert rt.drain(5)
        assert "old-request" not in Path(rt.log_path("f")).read_text()


def test_function_destination_receives_the_record_as_an_event(rt):
    make_function(rt, "g", SOURCE.replace('"id": event.get("id")', '"id": event'))
    rt.put_function_event_invoke_config("f", maximum_retry_attempts=0,
                                        on_failure=rt.function_arn("g"))
    rt.put_function_event_invoke_config("g", on_success=_arn(rt, "ok"))
    result = rt.invoke("f", {"action": "fail", "id": 3}, invocation_type="Event")
    assert rt.drain(20)
    [record] = take_records(rt, "ok", 1)
    forwarded = record["requestPayload"]  # what g was invoked with: f's failure record
    assert forwarded["requestContext"]["requestId"] == result.request_id
    assert forwarded["requestContext"]["condition"] == "RetriesExhausted"
    assert forwarded["requestPayload"] == {"action": "fail", "id": 3}
    assert record["requestContext"]["functionArn"] == rt.function_arn("g") + ":$LATEST"


def test_dead_letter_queue_receives_the_bare_event(rt):
    rt.create_queue("dlq")
    rt.put_function_event_invoke_config("f", maximum_retry_attempts=1)
    rt.put_function_dead_letter_config("f", _arn(rt, "dlq"))
    assert rt.get_function_dead_letter_config("f") == {"TargetArn": _arn(rt, "dlq")}
    result = rt.invoke("f", {"action": "fail", "id": 9}, invocation_type="Event")
    assert rt.drain(20)
    [message] = take_messages(rt, "dlq", 1)
    assert json.loads(message["body"]) == {"action": "fail", "id": 9}
    attributes = message["message_attributes"]
    assert attributes["RequestID"]["StringValue"] == result.request_id
    assert attributes["ErrorCode"] == {"DataType": "Number", "StringValue": "200"}
    assert attributes["ErrorMessage"]["StringValue"] == "failed 9"
    rt.put_function_dead_letter_config("f", None)
    assert rt.get_function_dead_letter_config("f") == {}
    with pytest.raises(InvalidParameterValueException, match="queue"):
        rt.put_function_dead_letter_config("f", rt.function_arn("f"))


def test_zero_reserved_concurrency_sends_events_straight_to_the_failure_path(rt):
    rt.create_queue("dlq")
    rt.put_function_dead_letter_config("f", _arn(rt, "dlq"))
    rt.put_function_event_invoke_config("f", on_failure=_arn(rt, "failed"))
    rt.put_function_concurrency("f", 0)
    result = rt.invoke("f", {"id": 5}, invocation_type="Event")
    assert result.status_code == 202
    assert rt.drain(20)
    [record] = take_records(rt, "failed", 1)
    assert record["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in record
    assert len(take_messages(rt, "dlq", 1)) == 1
    assert result.request_id not in Path(rt.log_path("f")).read_text()


def test_throttled_events_wait_for_concurrency(tmp_path, store):
    with Runtime(tmp_path / "state", store=store, retry_base_delay_s=FAST,
                 concurrency_limit=1) as rt:
        make_function(rt, "f", SOURCE)
        ok = rt.create_queue("ok")
        rt.put_function_event_invoke_config("f", on_success=ok)
        sleeper = threading.Thread(
            target=rt.invoke, args=("f", {"action": "sleep", "seconds": 1}))
        sleeper.start()
        deadline = time.monotonic() + 10
        while rt.stats("f")["busy"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        accepted = [rt.invoke("f", {"id": i}, invocation_type="Event") for i in range(3)]
        assert all(r.status_code == 202 for r in accepted)
        sleeper.join(10)
        assert rt.drain(30)
        records = take_records(rt, "ok", 3)
        assert sorted(r["requestPayload"]["id"] for r in records) == [0, 1, 2]
        # a throttle is not an attempt
        assert {r["requestContext"]["approximateInvokeCount"] for r in records} == {1}


def test_deliveries_to_a_slow_function_run_side_by_side(rt):
    # Each environment names itself on its first invocation (all are pid 2).
    make_function(rt, "slow", "import os, time\nNAME = None\n\n"
                  "def handler(event, context):\n"
                  "    global NAME\n"
                  "    NAME = NAME or os.urandom(8).hex()\n"
                  "    time.sleep(0.5)\n"
                  "    return NAME\n", timeout_s=5)
    rt.put_function_event_invoke_config("slow", on_success=_arn(rt, "ok"))
    rt.invoke("slow", {}, invocation_type="Event")  # measured as slow from here on
    assert rt.drain(20)
    for _ in range(4):
        rt.invoke("slow", {}, invocation_type="Event")
    assert rt.drain(20)
    records = take_records(rt, "ok", 5)
    assert len({r["responsePayload"] for r in records[1:]}) >= 2, "no two ran at once"


def test_pending_events_resume_in_a_reopened_runtime(tmp_path, store):
    state = tmp_path / "state"
    with Runtime(state, store=store, retry_base_delay_s=FAST, concurrency_limit=1) as rt:
        make_function(rt, "f", SOURCE, timeout_s=10)
        ok = rt.create_queue("ok")
        rt.put_function_event_invoke_config("f", on_success=ok)
        sleeper = threading.Thread(
            target=rt.invoke, args=("f", {"action": "sleep", "seconds": 5}))
        sleeper.start()
        deadline = time.monotonic() + 10
        while rt.stats("f")["busy"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        ids = [rt.invoke("f", {"id": i}, invocation_type="Event").request_id for i in range(3)]
        assert not rt.drain(0.2)  # throttled: still stored
    sleeper.join(10)
    with Runtime(state, store=store, retry_base_delay_s=FAST) as rt:
        assert rt.drain(30)
        records = take_records(rt, "ok", 3)
        assert sorted(r["requestContext"]["requestId"] for r in records) == sorted(ids)


def test_close_does_not_wait_for_a_retry_minutes_away(tmp_path, store):
    with Runtime(tmp_path / "state", store=store) as rt:  # default base delay: 60 s
        make_function(rt, "f", SOURCE)
        rt.invoke("f", {"action": "fail"}, invocation_type="Event")
        assert not rt.drain(1.0)
        started = time.monotonic()
    assert time.monotonic() - started < 15


def test_event_invoke_config_get_put_delete(rt):
    with pytest.raises(ResourceNotFoundException, match="EventInvokeConfig"):
        rt.get_function_event_invoke_config("f")
    put = rt.put_function_event_invoke_config("f", maximum_retry_attempts=1,
                                              maximum_event_age_s=120,
                                              on_success=_arn(rt, "ok"))
    assert put == rt.get_function_event_invoke_config("f")
    assert put["FunctionArn"] == rt.function_arn("f") + ":$LATEST"
    assert put["MaximumRetryAttempts"] == 1
    assert put["MaximumEventAgeInSeconds"] == 120
    assert put["DestinationConfig"] == {"OnSuccess": {"Destination": _arn(rt, "ok")},
                                        "OnFailure": {}}
    # a put replaces the whole configuration
    again = rt.put_function_event_invoke_config("f")
    assert again["MaximumRetryAttempts"] == 2
    assert again["MaximumEventAgeInSeconds"] == 21600
    assert again["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    rt.delete_function_event_invoke_config("f")
    with pytest.raises(ResourceNotFoundException):
        rt.delete_function_event_invoke_config("f")
    with pytest.raises(ResourceNotFoundException):
        rt.put_function_event_invoke_config("missing")


@pytest.mark.parametrize("kwargs, match", [
    ({"maximum_retry_attempts": 3}, "maximum_retry_attempts"),
    ({"maximum_retry_attempts": -1}, "maximum_retry_attempts"),
    ({"maximum_event_age_s": 59}, "maximum_event_age_s"),
    ({"maximum_event_age_s": 21601}, "maximum_event_age_s"),
    ({"on_success": "not-an-arn"}, "not an ARN"),
    ({"on_failure": "arn:aws:sqs:eu-west-1:000000000000:q"}, "region and account"),
    ({"on_failure": "arn:aws:kinesis:us-east-1:000000000000:stream/s"}, "queue or function"),
])
def test_event_invoke_config_validation(rt, kwargs, match):
    with pytest.raises(InvalidParameterValueException, match=match):
        rt.put_function_event_invoke_config("f", **kwargs)


def test_event_payload_rules(tmp_path, store):
    with Runtime(tmp_path / "state", store=store, async_payload_max=100) as rt:
        make_function(rt, "f", SOURCE)
        with pytest.raises(RequestTooLargeException, match="100 bytes"):
            rt.invoke("f", {"x": "y" * 100}, invocation_type="Event")
        with pytest.raises(InvalidRequestContentException):
            rt.invoke("f", b"{not json", invocation_type="Event")
        with pytest.raises(ResourceNotFoundException):
            rt.invoke("missing", {}, invocation_type="Event")
        assert rt.drain(1)


def test_events_of_a_deleted_function_are_dropped(rt):
    rt.put_function_concurrency("f", 1)
    rt.invoke("f", {"action": "sleep", "seconds": 0.5}, invocation_type="Event")
    rt.delete_function("f")
    assert rt.drain(20)


def test_group_commit_keeps_every_concurrent_event(tmp_path, store):
    backend = open_store(store, str(tmp_path), False)
    ids: list[int] = []
    lock = threading.Lock()

    def accept(n):
        for i in range(100):
            event_id = backend.add_event(NewEvent("f", f"{n}-{i}", b"{}", time.time()))
            with lock:
                ids.append(event_id)

    threads = [threading.Thread(target=accept, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 800
    assert sorted(i for _, i in backend.pending_events()) == sorted(ids)
    backend.close()


def test_close_ends_every_delivery_and_poller_thread(tmp_path, store):
    def ours():
        return [t for t in threading.enumerate()
                if t.name.startswith(("sandbox-async", "sandbox-poller")) and t.is_alive()]

    assert ours() == []
    with Runtime(tmp_path / "state", store=store, retry_base_delay_s=FAST) as rt:
        make_function(rt, "f", SOURCE)
        queue = rt.create_queue("q")
        stream = rt.create_stream("s", shards=2)
        rt.create_event_source_mapping("f", queue)
        rt.create_event_source_mapping("f", stream, starting_position="LATEST",
                                       parallelization_factor=2)
        rt.invoke("f", {}, invocation_type="Event")
        rt.send_message(queue, "x")
        assert rt.drain(20)
        assert len(ours()) >= 6  # a delivery thread, a queue poller, 2 x 2 stream lanes
    assert ours() == []


@pytest.mark.parametrize("options, match", [
    ({"retry_base_delay_s": 0}, "retry_base_delay_s"),
    ({"async_payload_max": 0}, "async_payload_max"),
])
def test_runtime_options_are_checked(tmp_path, options, match, store):
    with pytest.raises(InvalidParameterValueException, match=match):
        Runtime(tmp_path / "state", store=store, **options)


def test_invocation_listeners_hear_of_each_delivery(rt):
    heard = []
    rt.add_invocation_listener(lambda function, source, result: heard.append(
        (function, source, result.function_error)))
    rt.invoke("f", {}, invocation_type="Event")
    assert rt.drain(20)
    assert heard == [("f", "async", None)]
