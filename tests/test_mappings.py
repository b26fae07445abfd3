"""Event source mappings (sandbox/invoke/mappings.py, pollers.py): validation,
queue and stream pollers, partial batch responses, bisect, retries, record
age, on-failure records, parallelization, scaling, persistence.

The functions record every batch they get in a host file (the Runtime runs
without the isolation steps, so that the handler can write there).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from conftest import make_function, take_records, wait_for

from sandbox import Runtime
from sandbox.errors import InvalidParameterValueException, ResourceNotFoundException
from sandbox.services.streams import lane_key
from sandbox.store import open_store

RECORDER = """
import base64
import json
import os
import time


def _body(record):
    if "body" in record:
        return record["body"]
    return base64.b64decode(record["kinesis"]["data"]).decode()


def _id(record):
    return record["messageId"] if "messageId" in record else record["kinesis"]["sequenceNumber"]


def handler(event, context):
    records = event["Records"]
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "event": event}) + "\\n")
    bodies = [_body(r) for r in records]
    for body in bodies:
        if body.startswith("sleep:"):
            time.sleep(float(body[6:]))
        if body.startswith("respond:"):
            return json.loads(body[8:])
    if "poison" in bodies:
        if os.environ.get("REPORT") == "items":
            return {"batchItemFailures": [{"itemIdentifier": _id(r)}
                                          for r, b in zip(records, bodies) if b == "poison"]}
        raise ValueError("poison in batch")
    return {}
"""


class Recorder:
    """The batches a recording function received."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        text = self.path.read_text()
        # a line still being written (no newline yet) is not a batch yet
        complete = text[:text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line]

    def batches(self) -> list[list[dict]]:
        return [line["event"]["Records"] for line in self.lines()]

    def bodies(self) -> list[list[str]]:
        return [[r["body"] if "body" in r else base64.b64decode(r["kinesis"]["data"]).decode()
                 for r in batch] for batch in self.batches()]

    def wait(self, count: int, timeout: float = 20.0) -> list[list[str]]:
        wait_for(lambda: len(self.lines()) >= count, timeout)
        return self.bodies()


@pytest.fixture
def rt(tmp_path, store):
    with Runtime(tmp_path / "state", store=store, retry_base_delay_s=0.05,
                 isolation=False) as runtime:
        yield runtime


def recording_function(rt: Runtime, tmp_path: Path, name: str = "f", **env: str) -> Recorder:
    path = tmp_path / f"{name}.jsonl"
    make_function(rt, name, RECORDER, timeout_s=10, environment={"RECORD": str(path), **env})
    return Recorder(path)


# -- validation -------------------------------------------------------------------
QUEUE_ERRORS = [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 10_001, "maximum_batching_window_s": 1}, "batch_size"),
    ({"batch_size": 11}, "greater than 0"),
    ({"maximum_batching_window_s": 301}, "maximum_batching_window_s"),
    ({"function_response_types": ["Everything"]}, "ReportBatchItemFailures"),
    ({"starting_position": "TRIM_HORIZON"}, "only to stream"),
    ({"bisect_batch_on_function_error": True}, "only to stream"),
    ({"maximum_retry_attempts": 1}, "only to stream"),
    ({"parallelization_factor": 2}, "only to stream"),
]
STREAM_ERRORS = [
    ({}, "starting_position is required"),
    ({"starting_position": "AT_TIMESTAMP"}, "starting_position"),
    ({"starting_position": "LATEST", "maximum_retry_attempts": -2}, "maximum_retry_attempts"),
    ({"starting_position": "LATEST", "maximum_retry_attempts": 10_001},
     "maximum_retry_attempts"),
    ({"starting_position": "LATEST", "maximum_record_age_s": 59}, "maximum_record_age_s"),
    ({"starting_position": "LATEST", "parallelization_factor": 11}, "parallelization_factor"),
    ({"starting_position": "LATEST", "on_failure": "arn:aws:lambda:us-east-1:000000000000:"
      "function:f"}, "on_failure"),
]


@pytest.mark.parametrize("options, match", QUEUE_ERRORS)
def test_queue_mapping_validation(rt, tmp_path, options, match):
    recording_function(rt, tmp_path)
    arn = rt.create_queue("q")
    with pytest.raises(InvalidParameterValueException, match=match):
        rt.create_event_source_mapping("f", arn, **options)


@pytest.mark.parametrize("options, match", STREAM_ERRORS)
def test_stream_mapping_validation(rt, tmp_path, options, match):
    recording_function(rt, tmp_path)
    arn = rt.create_stream("s")
    with pytest.raises(InvalidParameterValueException, match=match):
        rt.create_event_source_mapping("f", arn, **options)


def test_queue_mapping_accepts_the_stream_options_unset_values(rt, tmp_path):
    recording_function(rt, tmp_path)
    arn = rt.create_queue("q")
    mapping = rt.create_event_source_mapping(
        "f", arn, maximum_retry_attempts=-1, maximum_record_age_s=-1,
        bisect_batch_on_function_error=False, parallelization_factor=1, enabled=False)
    assert "MaximumRetryAttempts" not in rt.get_event_source_mapping(mapping)


def test_mapping_needs_an_existing_function_and_source(rt, tmp_path):
    arn = rt.create_queue("q")
    with pytest.raises(ResourceNotFoundException):
        rt.create_event_source_mapping("missing", arn)
    recording_function(rt, tmp_path)
    with pytest.raises(ResourceNotFoundException):
        rt.create_event_source_mapping("f", "arn:aws:sqs:us-east-1:000000000000:nope")
    with pytest.raises(InvalidParameterValueException):
        rt.create_event_source_mapping("f", rt.function_arn("f"))


def test_defaults_and_crud(rt, tmp_path):
    recording_function(rt, tmp_path)
    queue = rt.create_queue("q")
    stream = rt.create_stream("s")
    q_id = rt.create_event_source_mapping("f", queue, enabled=False)
    s_id = rt.create_event_source_mapping("f", stream, starting_position="LATEST",
                                          enabled=False)
    q_map = rt.get_event_source_mapping(q_id)
    assert q_map["BatchSize"] == 10
    assert q_map["State"] == "Disabled"
    assert q_map["FunctionArn"] == rt.function_arn("f")
    assert q_map["EventSourceArn"] == queue
    assert "StartingPosition" not in q_map and "ParallelizationFactor" not in q_map
    s_map = rt.get_event_source_mapping(s_id)
    assert s_map["BatchSize"] == 100
    assert (s_map["MaximumRetryAttempts"], s_map["MaximumRecordAgeInSeconds"]) == (-1, -1)
    assert s_map["ParallelizationFactor"] == 1
    assert s_map["BisectBatchOnFunctionError"] is False
    assert [m["UUID"] for m in rt.list_event_source_mappings()] == [q_id, s_id]
    assert [m["UUID"] for m in rt.list_event_source_mappings(event_source_arn=stream)] == [s_id]
    assert rt.update_event_source_mapping(q_id, batch_size=5)["BatchSize"] == 5
    with pytest.raises(InvalidParameterValueException, match="only to stream"):
        rt.update_event_source_mapping(q_id, parallelization_factor=2)
    with pytest.raises(InvalidParameterValueException, match="cannot change"):
        rt.update_event_source_mapping(q_id, event_source_arn=stream)
    assert rt.delete_event_source_mapping(q_id)["State"] == "Deleting"
    with pytest.raises(ResourceNotFoundException):
        rt.get_event_source_mapping(q_id)
    assert [m["UUID"] for m in rt.list_event_source_mappings(function="f")] == [s_id]


# -- queue sources -------------------------------------------------------------------
def test_queue_event_shape_and_delete_on_success(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    queue = rt.create_queue("q")
    ids = [rt.send_message("q", f"m{i}", {"k": "v"}) for i in range(3)]
    rt.create_event_source_mapping("f", queue, batch_size=10)
    assert rt.drain(20)
    records = [r for batch in recorder.batches() for r in batch]
    assert sorted(r["messageId"] for r in records) == sorted(ids)
    record = records[0]
    assert set(record) == {"messageId", "receiptHandle", "body", "attributes",
                           "messageAttributes", "md5OfBody", "eventSource", "eventSourceARN",
                           "awsRegion"}
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert set(record["attributes"]) == {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                         "ApproximateFirstReceiveTimestamp"}
    assert record["messageAttributes"] == {"k": {"stringValue": "v", "stringListValues": [],
                                                 "binaryListValues": [], "dataType": "String"}}
    counts = rt.get_queue("q")
    assert counts["approximate_number_of_messages"] == 0
    assert counts["approximate_number_of_messages_not_visible"] == 0


def test_failed_batch_reappears_after_the_visibility_timeout(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    queue = rt.create_queue("q", visibility_timeout_s=1)
    rt.send_message("q", "poison")
    mapping = rt.create_event_source_mapping("f", queue)
    recorder.wait(2)
    rt.delete_event_source_mapping(mapping)
    batches = recorder.batches()
    assert batches[0][0]["messageId"] == batches[1][0]["messageId"]
    assert [b[0]["attributes"]["ApproximateReceiveCount"] for b in batches[:2]] == ["1", "2"]


def test_failed_messages_redrive_to_the_dead_letter_queue(rt, tmp_path):
    recording_function(rt, tmp_path)
    dlq = rt.create_queue("dlq")
    queue = rt.create_queue("q", visibility_timeout_s=1, max_receive_count=2,
                            dead_letter_queue=dlq)
    rt.send_message("q", "poison")
    rt.send_message("q", "fine")
    rt.create_event_source_mapping("f", queue, batch_size=1)
    assert rt.drain(20)
    [dead] = rt.receive_messages("dlq")
    assert dead["body"] == "poison"


def test_report_batch_item_failures_keeps_only_the_failed_messages(rt, tmp_path):
    recorder = recording_function(rt, tmp_path, REPORT="items")
    queue = rt.create_queue("q", visibility_timeout_s=60)
    for body in ("a", "poison", "b"):
        rt.send_message("q", body)
    mapping = rt.create_event_source_mapping("f", queue,
                                             function_response_types=["ReportBatchItemFailures"])
    assert recorder.wait(1)[0] == ["a", "poison", "b"]
    rt.delete_event_source_mapping(mapping)  # returns once the batch is handled
    counts = rt.get_queue("q")
    assert (counts["approximate_number_of_messages"],
            counts["approximate_number_of_messages_not_visible"]) == (0, 1)


@pytest.mark.parametrize("response, remaining", [
    ({"batchItemFailures": []}, 0),
    ({"batchItemFailures": None}, 0),
    ({}, 0),
    ({"batchItemFailures": [{"itemIdentifier": ""}]}, 2),
    ({"batchItemFailures": [{"itemIdentifier": None}]}, 2),
    ({"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, 2),
    ({"batchItemFailures": [{"id": "wrong key"}]}, 2),
])
def test_report_batch_item_failures_edge_cases(rt, tmp_path, response, remaining):
    recorder = recording_function(rt, tmp_path)
    queue = rt.create_queue("q", visibility_timeout_s=60)
    rt.send_message("q", "respond:" + json.dumps(response))
    rt.send_message("q", "other")
    mapping = rt.create_event_source_mapping("f", queue,
                                             function_response_types=["ReportBatchItemFailures"])
    recorder.wait(1)
    rt.delete_event_source_mapping(mapping)
    counts = rt.get_queue("q")
    assert counts["approximate_number_of_messages_not_visible"] == remaining


def test_queue_pollers_scale_up_to_the_functions_concurrency(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    rt.put_function_concurrency("f", 3)
    queue = rt.create_queue("q")
    for _ in range(24):
        rt.send_message("q", "sleep:0.2")
    rt.create_event_source_mapping("f", queue, batch_size=1)
    assert rt.drain(30)
    pids = {line["pid"] for line in recorder.lines()}
    assert len(recorder.lines()) == 24
    assert 2 <= len(pids) <= 3, pids


def test_disabled_mapping_does_not_poll_until_enabled(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    queue = rt.create_queue("q")
    mapping = rt.create_event_source_mapping("f", queue, enabled=False)
    rt.send_message("q", "x")
    time.sleep(0.3)
    assert recorder.lines() == []
    assert rt.update_event_source_mapping(mapping, enabled=True)["State"] == "Enabled"
    assert rt.drain(20)
    assert recorder.bodies() == [["x"]]


# -- stream sources -------------------------------------------------------------------
def test_stream_event_shape_and_order(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    stream = rt.create_stream("s")
    numbers = [rt.put_record("s", f"r{i}", "key") for i in range(5)]
    rt.create_event_source_mapping("f", stream, starting_position="TRIM_HORIZON", batch_size=2)
    assert rt.drain(20)
    assert recorder.bodies() == [["r0", "r1"], ["r2", "r3"], ["r4"]]
    record = recorder.batches()[0][0]
    assert set(record) == {"kinesis", "eventSource", "eventVersion", "eventID", "eventName",
                           "awsRegion", "eventSourceARN"}
    assert set(record["kinesis"]) == {"kinesisSchemaVersion", "partitionKey", "sequenceNumber",
                                      "data", "approximateArrivalTimestamp"}
    assert record["kinesis"]["sequenceNumber"] == numbers[0]
    assert record["kinesis"]["partitionKey"] == "key"
    assert record["eventID"] == f"shardId-000000000000:{numbers[0]}"
    assert record["eventSource"] == "aws:kinesis"
    assert record["eventName"] == "aws:kinesis:record"
    assert record["eventSourceARN"] == stream


def test_latest_skips_older_records_and_checkpoints_persist(tmp_path, store):
    state = tmp_path / "state"
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        recorder = recording_function(rt, tmp_path)
        stream = rt.create_stream("s")
        rt.put_record("s", "before", "k")
        rt.create_event_source_mapping("f", stream, starting_position="LATEST")
        rt.put_record("s", "after", "k")
        assert rt.drain(20)
        assert recorder.bodies() == [["after"]]
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        rt.put_record("s", "reopened", "k")
        assert rt.drain(20)
    assert recorder.bodies() == [["after"], ["reopened"]]


def test_stream_retries_then_on_failure_record(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    stream = rt.create_stream("s")
    failures = rt.create_queue("failures")
    numbers = [rt.put_record("s", body, "k") for body in ("a", "poison", "b")]
    rt.create_event_source_mapping("f", stream, starting_position="TRIM_HORIZON",
                                   maximum_retry_attempts=2, on_failure=failures)
    [record] = take_records(rt, "failures", 1)
    assert rt.drain(20)
    assert recorder.bodies() == [["a", "poison", "b"]] * 3
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"] == rt.function_arn("f")
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["version"] == "1.0"
    info = record["KinesisBatchInfo"]
    assert info["shardId"] == "shardId-000000000000"
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (numbers[0], numbers[2])
    assert info["batchSize"] == 3
    assert info["streamArn"] == stream
    assert set(info) == {"shardId", "startSequenceNumber", "endSequenceNumber",
                         "approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord",
                         "batchSize", "streamArn"}
    # the checkpoint moved past the discarded batch
    rt.put_record("s", "later", "k")
    assert rt.drain(20)
    assert recorder.bodies()[-1] == ["later"]


def test_bisect_isolates_the_bad_record(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    stream = rt.create_stream("s")
    failures = rt.create_queue("failures")
    numbers = [rt.put_record("s", body, "k") for body in ("a", "b", "poison", "c")]
    rt.create_event_source_mapping("f", stream, starting_position="TRIM_HORIZON",
                                   maximum_retry_attempts=0, bisect_batch_on_function_error=True,
                                   on_failure=failures)
    [record] = take_records(rt, "failures", 1)
    assert rt.drain(20)
    assert recorder.bodies() == [["a", "b", "poison", "c"], ["a", "b"], ["poison", "c"],
                                 ["poison"], ["c"]]
    info = record["KinesisBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == numbers[2]


def test_stream_partial_batch_response_retries_from_the_failed_record(rt, tmp_path):
    recorder = recording_function(rt, tmp_path, REPORT="items")
    stream = rt.create_stream("s")
    failures = rt.create_queue("failures")
    numbers = [rt.put_record("s", body, "k") for body in ("a", "b", "poison", "c")]
    rt.create_event_source_mapping("f", stream, starting_position="TRIM_HORIZON",
                                   maximum_retry_attempts=1, on_failure=failures,
                                   function_response_types=["ReportBatchItemFailures"])
    [record] = take_records(rt, "failures", 1)
    assert rt.drain(20)
    assert recorder.bodies() == [["a", "b", "poison", "c"], ["poison", "c"]]
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (numbers[2], numbers[3])
    assert "functionError" not in record["responseContext"]


def test_records_older_than_the_maximum_age_are_discarded(tmp_path, store):
    state = tmp_path / "state"
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        rt.create_stream("s")
    backend = open_store(store, str(state), False)
    old = backend.put_record("s", 0, "k", lane_key("k"), b"old", time.time() - 120)
    backend.close()
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        recorder = recording_function(rt, tmp_path)
        failures = rt.create_queue("failures")
        rt.put_record("s", "new", "k")
        rt.create_event_source_mapping("f", rt.arns.stream("s"), starting_position="TRIM_HORIZON",
                                       maximum_record_age_s=60, on_failure=failures)
        [record] = take_records(rt, "failures", 1)
        assert rt.drain(20)
        assert recorder.bodies() == [["new"]]
        assert record["requestContext"]["condition"] == "RecordAgeExceeded"
        assert record["requestContext"]["approximateInvokeCount"] == 0
        assert int(record["KinesisBatchInfo"]["startSequenceNumber"]) == old


def test_parallelization_factor_keeps_order_per_partition_key(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    stream = rt.create_stream("s")
    for i in range(5):
        for key in range(6):
            rt.put_record("s", f"k{key}:{i}", f"k{key}")
    mapping = rt.create_event_source_mapping("f", stream, starting_position="TRIM_HORIZON",
                                             parallelization_factor=3, batch_size=2)
    assert rt.drain(20)
    seen: dict[str, list[int]] = {}
    for batch in recorder.bodies():
        for body in batch:
            key, i = body.split(":")
            seen.setdefault(key, []).append(int(i))
    assert seen == {f"k{key}": [0, 1, 2, 3, 4] for key in range(6)}
    # a new factor continues from the checkpoints: nothing is processed twice here
    rt.update_event_source_mapping(mapping, parallelization_factor=2)
    rt.put_record("s", "k0:5", "k0")
    assert rt.drain(20)
    assert sum(len(b) for b in recorder.bodies()) == 31


def test_a_deleted_source_stops_nothing_else(tmp_path, store):
    state = tmp_path / "state"
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        recorder = recording_function(rt, tmp_path)
        stream = rt.create_stream("s")
        queue = rt.create_queue("q")
        rt.create_event_source_mapping("f", stream, starting_position="LATEST")
        rt.create_event_source_mapping("f", queue)
        rt.delete_stream("s")
        assert rt.drain(20)
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        rt.delete_queue("q")
        assert rt.drain(20)
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        assert len(rt.list_event_source_mappings()) == 2
        rt.create_queue("q")
        rt.send_message("q", "back")
        assert rt.drain(20)
    assert recorder.bodies() == [["back"]]


def test_batching_window_gathers_messages_that_arrive_within_it(rt, tmp_path):
    recorder = recording_function(rt, tmp_path)
    queue = rt.create_queue("q")
    rt.create_event_source_mapping("f", queue, batch_size=3, maximum_batching_window_s=5)
    for body in ("a", "b", "c"):
        rt.send_message("q", body)
    assert rt.drain(20)
    assert recorder.bodies() == [["a", "b", "c"]]


def test_update_moves_a_mapping_to_another_function(rt, tmp_path):
    first = recording_function(rt, tmp_path, "first")
    second = recording_function(rt, tmp_path, "second")
    queue = rt.create_queue("q")
    mapping = rt.create_event_source_mapping("first", queue)
    rt.send_message("q", "one")
    assert rt.drain(20)
    updated = rt.update_event_source_mapping(mapping, function="second")
    assert updated["FunctionArn"] == rt.function_arn("second")
    rt.send_message("q", "two")
    assert rt.drain(20)
    assert (first.bodies(), second.bodies()) == ([["one"]], [["two"]])


def test_records_past_the_stream_retention_are_gone_without_a_failure_record(tmp_path, store):
    state = tmp_path / "state"
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        rt.create_stream("s", retention_hours=24)
        with pytest.raises(InvalidParameterValueException, match="retention_hours"):
            rt.create_stream("short", retention_hours=23)
    backend = open_store(store, str(state), False)
    backend.put_record("s", 0, "k", lane_key("k"), b"expired", time.time() - 25 * 3600)
    backend.close()
    with Runtime(state, store=store, retry_base_delay_s=0.05, isolation=False) as rt:
        recorder = recording_function(rt, tmp_path)
        failures = rt.create_queue("failures")
        rt.put_record("s", "kept", "k")
        rt.create_event_source_mapping("f", rt.arns.stream("s"), starting_position="TRIM_HORIZON",
                                       on_failure=failures)
        assert rt.drain(20)
        assert recorder.bodies() == [["kept"]]
        assert rt.receive_messages("failures") == []
