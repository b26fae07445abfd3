"""Permissions on the invocation models (sandbox/iam/delegated.py through the
Runtime): platform calls from asynchronous and polled invocations, the queue
and stream platform operations, destinations and event source mappings
checked against the function's execution role when configured and when used,
and the mappings' service caller against the function's resource-based policy.

Every test runs real Runtimes with real environments; a role's policies are
changed between uses to show that the next use sees them.
"""

from __future__ import annotations

import json
import logging

import pytest
from conftest import make_function, take_messages, take_records, wait_for

from sandbox import Runtime
from sandbox import constants as C
from sandbox.errors import AccessDeniedException, InvalidParameterValueException
from sandbox.iam import service

OTHER = "111122223333"
INVOKE = "lambda:InvokeFunction"
SEND = "sqs:SendMessage"
LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}

# Sends "from <name>" to the queue each record (or event["to"]) names; a
# refused send is reported to the queue "out" instead.
SENDER_SOURCE = """
import base64

from sandbox.client import platform
from sandbox.errors import AccessDeniedException


def _targets(event):
    if "Records" not in event:
        return [event["to"]]
    return [r["body"] if "body" in r else base64.b64decode(r["kinesis"]["data"]).decode()
            for r in event["Records"]]


def handler(event, context):
    for target in _targets(event):
        try:
            platform.send_message(target, "from " + context.function_name)
        except AccessDeniedException as exc:
            platform.send_message("out", "denied: " + str(exc))
    return {}
"""

FAILING_SOURCE = """
def handler(event, context):
    if event.get("fail") or "Records" in event:
        raise ValueError("failed on purpose")
    return {"ok": event}
"""


def allow(action, resource="*"):
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}


def refusal(session, action, resource, reason="no identity-based policy allows"):
    return (f"User: {session} is not authorized to perform: {action} on resource: "
            f"{resource} because {reason} the {action} action")


def session_of(rt, role_name, function):
    return f"arn:aws:sts::{rt.account_id}:assumed-role/{role_name}/{function}"


def started(rt, name):
    try:
        with open(rt.log_path(name)) as log:
            return "START RequestId" in log.read()
    except FileNotFoundError:
        return False


@pytest.fixture
def rt(tmp_path):
    with Runtime(tmp_path / "state", retry_base_delay_s=0.05) as runtime:
        yield runtime


# -- platform calls on every invocation path ------------------------------------------------
def test_platform_calls_are_served_on_async_and_mapping_invocations(rt):
    out, forbidden = rt.create_queue("out"), rt.create_queue("forbidden")
    inbox, stream = rt.create_queue("in"), rt.create_stream("s")
    role = rt.create_role("sender", LAMBDA_TRUST, [
        allow(SEND, out), allow(list(C.QUEUE_MAPPING_ACTIONS), inbox),
        allow(list(C.STREAM_MAPPING_ACTIONS), stream)])
    make_function(rt, "sender", SENDER_SOURCE, role=role)
    for target in ("out", "forbidden"):
        assert rt.invoke("sender", {"to": target}, "Event").status_code == 202
        rt.send_message("in", target)
        rt.put_record("s", target, "k")
    rt.create_event_source_mapping("sender", inbox)
    rt.create_event_source_mapping("sender", stream, starting_position="TRIM_HORIZON")
    assert rt.drain(20)
    denied = "denied: " + refusal(session_of(rt, "sender", "sender"), SEND, forbidden)
    bodies = sorted(m["body"] for m in take_messages(rt, "out", 6))
    assert bodies == sorted(["from sender"] * 3 + [denied] * 3)
    assert rt.get_queue("forbidden")["approximate_number_of_messages"] == 0


OPERATIONS_SOURCE = """
from sandbox.client import platform


def handler(event, context):
    results = []
    for kind, target, data, extra in event["ops"]:
        try:
            if kind == "send":
                results.append(platform.send_message(target, data, extra))
            else:
                results.append(platform.put_record(target, data.encode(), extra))
        except Exception as exc:
            results.append([type(exc).__name__, str(exc)])
    return results
"""


def test_send_message_and_put_record_are_authorized_against_the_role(rt):
    queue, other_queue = rt.create_queue("q"), rt.create_queue("other")
    stream, other_stream = rt.create_stream("s"), rt.create_stream("t")
    role = rt.create_role("writer", LAMBDA_TRUST, [
        allow(SEND, [queue, rt.arns.queue("miss*")]), allow("kinesis:PutRecord", stream)])
    make_function(rt, "writer", OPERATIONS_SOURCE, role=role)
    ops = [["send", "q", "by name", {"k": "v"}], ["send", queue, "by arn", None],
           ["send", "other", "x", None], ["send", "missing", "x", None],
           ["send", "q", "", None],
           ["put", "s", "one", "key"], ["put", stream, "two", "key"], ["put", "t", "x", "key"]]
    results = rt.invoke("writer", {"ops": ops}).payload
    session = session_of(rt, "writer", "writer")
    assert set(results[0]) == {"MessageId"} and set(results[1]) == {"MessageId"}
    assert results[2] == ["AccessDeniedException", refusal(session, SEND, other_queue)]
    assert results[3][0] == "QueueDoesNotExist"  # authorized first, then looked up
    assert results[4] == ["InvalidParameterValueException", "message body must not be empty"]
    assert results[5]["SequenceNumber"] < results[6]["SequenceNumber"]
    assert results[7] == ["AccessDeniedException",
                          refusal(session, "kinesis:PutRecord", other_stream)]
    messages = {m["message_id"]: m for m in take_messages(rt, "q", 2)}
    assert messages[results[0]["MessageId"]]["body"] == "by name"
    assert messages[results[0]["MessageId"]]["message_attributes"]["k"]["StringValue"] == "v"
    assert messages[results[1]["MessageId"]]["body"] == "by arn"
    assert [r.data for r in rt._streams.read("s", 0, 0, 10)] == [b"one", b"two"]
    assert rt._streams.read("t", 0, 0, 10) == []
    # The role's policies are read at each call.
    rt.update_role(role, policies=[])
    again = rt.invoke("writer", {"ops": ops[:1] + ops[5:6]}).payload
    assert [r[0] for r in again] == ["AccessDeniedException"] * 2


EVENT_CALLER_SOURCE = """
from sandbox.client import platform
from sandbox.errors import AccessDeniedException


def handler(event, context):
    try:
        return platform.invoke(event["name"], {"n": 1}, invocation_type="Event")
    except AccessDeniedException as exc:
        return {"denied": str(exc)}
"""


def test_an_event_invoke_from_a_handler(rt):
    done = rt.create_queue("done")
    role = rt.create_role("caller", LAMBDA_TRUST, [allow(INVOKE, rt.function_arn("target"))])
    make_function(rt, "caller", EVENT_CALLER_SOURCE, role=role)
    make_function(rt, "target", FAILING_SOURCE)
    make_function(rt, "other", FAILING_SOURCE)
    rt.put_function_event_invoke_config("target", on_success=done)
    reply = rt.invoke("caller", {"name": "target"}).payload
    assert reply == {"StatusCode": 202, "ExecutedVersion": None, "Payload": None}
    assert rt.drain(20)
    [record] = take_records(rt, "done", 1)
    assert record["requestPayload"] == {"n": 1}
    assert record["responsePayload"] == {"ok": {"n": 1}}
    denied = rt.invoke("caller", {"name": "other"}).payload
    assert denied == {"denied": refusal(session_of(rt, "caller", "caller"), INVOKE,
                                        rt.function_arn("other"))}
    assert rt.drain(1)  # nothing was queued
    assert not started(rt, "other")


# -- destinations ----------------------------------------------------------------------------
def test_async_destinations_need_the_role_when_configured_and_when_used(rt, caplog):
    ok, failed, dlq = rt.create_queue("ok"), rt.create_queue("failed"), rt.create_queue("dlq")
    role = rt.create_role("worker", LAMBDA_TRUST, [allow(SEND, ok)])
    make_function(rt, "f", FAILING_SOURCE, role=role)
    session = session_of(rt, "worker", "f")
    with pytest.raises(InvalidParameterValueException) as info:
        rt.put_function_event_invoke_config("f", on_success=ok, on_failure=failed)
    assert str(info.value) == (f"The destination ARN {failed} is invalid. "
                               f"({refusal(session, SEND, failed)})")
    with pytest.raises(InvalidParameterValueException) as info:
        rt.put_function_dead_letter_config("f", dlq)
    assert str(info.value).startswith("The provided execution role does not have "
                                      "permissions to call SendMessage on SQS (User: ")
    assert rt.get_function_dead_letter_config("f") == {}
    everything = [allow(SEND, [ok, failed, dlq])]
    rt.update_role(role, policies=everything)
    rt.put_function_event_invoke_config("f", maximum_retry_attempts=0, on_success=ok,
                                        on_failure=failed)
    rt.put_function_dead_letter_config("f", dlq)
    rt.invoke("f", {"n": 1}, "Event")
    rt.invoke("f", {"fail": 1}, "Event")
    assert rt.drain(20)
    assert [r["requestPayload"] for r in take_records(rt, "ok", 1)] == [{"n": 1}]
    assert [r["requestPayload"] for r in take_records(rt, "failed", 1)] == [{"fail": 1}]
    assert [m["body"] for m in take_messages(rt, "dlq", 1)] == ['{"fail": 1}']
    # Permission taken away: the records are dropped with a warning, the events retired.
    rt.update_role(role, policies=[])
    with caplog.at_level(logging.WARNING, logger="sandbox.invoke"):
        rt.invoke("f", {"n": 2}, "Event")
        rt.invoke("f", {"fail": 2}, "Event")
        assert rt.drain(20)
    for queue in (ok, failed, dlq):
        assert f"destination record for {queue} dropped: {refusal(session, SEND, queue)}" \
            in caplog.text
        assert take_messages(rt, queue.rsplit(":", 1)[1], 1, timeout=0.2) == []
    # ... and given back, the next event's records arrive.
    rt.update_role(role, policies=everything)
    rt.invoke("f", {"n": 3}, "Event")
    assert rt.drain(20)
    assert [r["requestPayload"] for r in take_records(rt, "ok", 1)] == [{"n": 3}]


def test_a_function_destination_needs_the_role_and_the_targets_policy(rt, caplog):
    seen = rt.create_queue("seen")
    dest_arn, other_arn = rt.function_arn("dest"), rt.function_arn("other")
    role = rt.create_role("worker", LAMBDA_TRUST, [allow(INVOKE, dest_arn)])
    make_function(rt, "f", FAILING_SOURCE, role=role)
    make_function(rt, "dest", FAILING_SOURCE)
    make_function(rt, "other", FAILING_SOURCE)
    rt.put_function_event_invoke_config("dest", on_success=seen)
    with pytest.raises(InvalidParameterValueException, match="The destination ARN .* is invalid"):
        rt.put_function_event_invoke_config("f", on_success=other_arn)
    rt.put_function_event_invoke_config("f", on_success=dest_arn)
    rt.invoke("f", {"n": 1}, "Event")
    assert rt.drain(20)
    [record] = take_records(rt, "seen", 1)
    assert record["requestPayload"]["requestContext"]["functionArn"] == \
        rt.function_arn("f") + ":$LATEST"
    # The destination's own policy denies the role: configuring and delivering fail.
    deny = {"Version": "2012-10-17", "Statement": [{
        "Sid": "no-worker", "Effect": "Deny", "Principal": {"AWS": role}, "Action": INVOKE,
        "Resource": dest_arn}]}
    rt._iam._store_function_policy("dest", deny)
    with pytest.raises(InvalidParameterValueException, match="explicit deny in a resource"):
        rt.put_function_event_invoke_config("f", on_success=dest_arn)
    with caplog.at_level(logging.WARNING, logger="sandbox.invoke"):
        rt.invoke("f", {"n": 2}, "Event")
        assert rt.drain(20)
    assert refusal(session_of(rt, "worker", "f"), INVOKE, dest_arn).split(" because")[0] \
        in caplog.text
    assert take_messages(rt, "seen", 1, timeout=0.2) == []
    rt._iam.delete_function_policy("dest")
    rt.invoke("f", {"n": 3}, "Event")
    assert rt.drain(20)
    [record] = take_records(rt, "seen", 1)
    assert record["requestPayload"]["requestPayload"] == {"n": 3}


# -- event source mappings -------------------------------------------------------------------
def test_mappings_need_the_roles_permissions_when_configured(rt):
    queue, stream, failures = rt.create_queue("q"), rt.create_stream("s"), rt.create_queue("fq")
    partial = rt.create_role("partial", LAMBDA_TRUST, [
        allow("sqs:ReceiveMessage", queue), allow(list(C.STREAM_MAPPING_ACTIONS), stream)])
    full = rt.create_role("full", LAMBDA_TRUST, [allow(list(C.QUEUE_MAPPING_ACTIONS), queue)])
    make_function(rt, "f", FAILING_SOURCE, role=partial)
    make_function(rt, "g", FAILING_SOURCE, role=full)
    make_function(rt, "no-role", FAILING_SOURCE)
    with pytest.raises(InvalidParameterValueException) as info:
        rt.create_event_source_mapping("f", queue)
    assert str(info.value) == (
        "The provided execution role does not have permissions to call DeleteMessage on SQS "
        f"({refusal(session_of(rt, 'partial', 'f'), 'sqs:DeleteMessage', queue)})")
    with pytest.raises(InvalidParameterValueException,
                       match="^The provided execution role does not have permissions to call "
                             "DescribeStream on Kinesis"):
        rt.create_event_source_mapping("g", stream, starting_position="LATEST")
    with pytest.raises(InvalidParameterValueException, match="call SendMessage on SQS"):
        rt.create_event_source_mapping("f", stream, starting_position="LATEST",
                                       on_failure=failures)
    mapping = rt.create_event_source_mapping("g", queue)
    with pytest.raises(InvalidParameterValueException, match="call DeleteMessage on SQS"):
        rt.update_event_source_mapping(mapping, function="f")
    assert rt.get_event_source_mapping(mapping)["FunctionArn"] == rt.function_arn("g")
    stream_mapping = rt.create_event_source_mapping("f", stream, starting_position="LATEST")
    with pytest.raises(InvalidParameterValueException, match="call SendMessage on SQS"):
        rt.update_event_source_mapping(stream_mapping, on_failure=failures)
    rt.update_role(partial, policies=[allow(list(C.STREAM_MAPPING_ACTIONS), stream),
                                      allow(SEND, failures)])
    rt.update_event_source_mapping(stream_mapping, on_failure=failures)
    # A function without a role (the local default): nothing to check.
    rt.create_event_source_mapping("no-role", stream, starting_position="LATEST",
                                   on_failure=failures)
    rt.put_function_event_invoke_config("no-role", on_success=failures)
    assert len(rt.list_event_source_mappings()) == 3


def test_a_mapping_whose_role_loses_its_permission_backs_off_until_restored(rt, caplog):
    inbox, out = rt.create_queue("in"), rt.create_queue("out")
    reading = allow(list(C.QUEUE_MAPPING_ACTIONS), inbox)
    role = rt.create_role("reader", LAMBDA_TRUST, [reading, allow(SEND, out)])
    make_function(rt, "f", SENDER_SOURCE, role=role)
    with caplog.at_level(logging.WARNING, logger="sandbox.invoke"):
        mapping = rt.create_event_source_mapping("f", inbox)
        poller = rt._mappings._pollers[mapping]
        rt.update_role(role, policies=[allow(SEND, out)])
        assert wait_for(lambda: poller._denials >= 1, 10)
        rt.send_message("in", "out")
        polls = poller._denials
        assert wait_for(lambda: poller._denials >= polls + 3, 10)
    # Nothing was read; the mapping stays enabled (as Lambda keeps polling).
    assert rt.get_queue("in")["approximate_number_of_messages"] == 1
    assert rt.get_event_source_mapping(mapping)["State"] == "Enabled"
    assert not started(rt, "f")
    assert caplog.text.count(f"mapping {mapping}: cannot read {inbox}") == 1
    assert refusal(session_of(rt, "reader", "f"), "sqs:ReceiveMessage", inbox) in caplog.text
    rt.update_role(role, policies=[reading, allow(SEND, out)])
    assert rt.drain(20)
    assert [m["body"] for m in take_messages(rt, "out", 1)] == ["from f"]


def test_a_stream_mappings_on_failure_destination_is_checked_when_used(rt, caplog):
    stream, failures = rt.create_stream("s"), rt.create_queue("failures")
    reading = allow(list(C.STREAM_MAPPING_ACTIONS), stream)
    role = rt.create_role("reader", LAMBDA_TRUST, [reading, allow(SEND, failures)])
    make_function(rt, "f", FAILING_SOURCE, role=role)
    rt.create_event_source_mapping("f", stream, starting_position="TRIM_HORIZON",
                                   maximum_retry_attempts=0, on_failure=failures)
    rt.put_record("s", "first", "k")
    [record] = take_records(rt, "failures", 1)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert rt.drain(20)
    rt.update_role(role, policies=[reading])
    with caplog.at_level(logging.WARNING, logger="sandbox.invoke"):
        rt.put_record("s", "second", "k")
        assert rt.drain(20)  # the batch is discarded and the checkpoint moves on
    assert f"destination record for {failures} dropped" in caplog.text
    assert take_messages(rt, "failures", 1, timeout=0.2) == []


def test_mapping_invocations_need_no_statement_but_an_explicit_deny_refuses(rt, caplog):
    inbox, out = rt.create_queue("in"), rt.create_queue("out")
    role = rt.create_role("reader", LAMBDA_TRUST, [
        allow(list(C.QUEUE_MAPPING_ACTIONS), inbox), allow(SEND, out)])
    make_function(rt, "f", SENDER_SOURCE, role=role)
    # A policy exists, with no statement for the queue's service: mappings still run.
    rt.add_permission("f", "other-account", INVOKE, OTHER)
    sqs = service("sqs.amazonaws.com", source_arn=inbox, source_account=rt.account_id)
    with pytest.raises(AccessDeniedException):  # as a direct caller, SQS would be refused
        rt.invoke("f", {"to": "out"}, caller=sqs)
    mapping = rt.create_event_source_mapping("f", inbox)
    rt.send_message("in", "out")
    assert rt.drain(20)
    assert [m["body"] for m in take_messages(rt, "out", 1)] == ["from f"]
    policy = json.loads(rt.get_policy("f")["Policy"])
    policy["Statement"].append({
        "Sid": "no-queue", "Effect": "Deny", "Principal": {"Service": "sqs.amazonaws.com"},
        "Action": INVOKE, "Resource": rt.function_arn("f"),
        "Condition": {"ArnLike": {"AWS:SourceArn": inbox}}})
    rt._iam._store_function_policy("f", policy)
    with caplog.at_level(logging.WARNING, logger="sandbox.invoke"):
        rt.send_message("in", "out")
        assert wait_for(lambda: "explicit deny in a resource-based policy" in caplog.text, 10)
    assert f"mapping {mapping}: invoke of f failed: User: sqs.amazonaws.com is not " \
           "authorized" in caplog.text
    assert take_messages(rt, "out", 1, timeout=0.2) == []
    policy["Statement"].pop()
    rt._iam._store_function_policy("f", policy)
    assert rt.drain(20)
    assert [m["body"] for m in take_messages(rt, "out", 1)] == ["from f"]



def test_a_deleted_role_refuses_like_a_denial(rt, caplog):
    ok = rt.create_queue("ok")
    role = rt.create_role("worker", LAMBDA_TRUST, [allow(SEND, ok)])
    make_function(rt, "f", FAILING_SOURCE, role=role)
    rt.put_function_event_invoke_config("f", on_success=ok)
    rt.delete_role(role)
    with pytest.raises(InvalidParameterValueException, match="cannot be found"):
        rt.put_function_dead_letter_config("f", ok)
    with caplog.at_level(logging.WARNING, logger="sandbox.invoke"):
        rt.invoke("f", {"n": 1}, "Event")
        assert rt.drain(20)
    assert f"destination record for {ok} dropped" in caplog.text
    assert take_messages(rt, "ok", 1, timeout=0.2) == []
