"""Queues with SQS semantics (sandbox/services/queues.py) through the Runtime API."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from sandbox import Runtime
from sandbox.errors import (
    InvalidParameterValueException,
    QueueDoesNotExist,
    QueueNameExists,
    ReceiptHandleIsInvalid,
)
from sandbox.store import open_store
from sandbox.store.base import NewMessage


@pytest.fixture
def rt(tmp_path, store):
    with Runtime(tmp_path / "state", store=store) as runtime:
        yield runtime


def test_create_send_receive_delete(rt):
    arn = rt.create_queue("jobs")
    assert arn == "arn:aws:sqs:us-east-1:000000000000:jobs"
    assert rt.list_queues() == [arn]
    message_id = rt.send_message("jobs", "hello", {"kind": "greeting"})
    [message] = rt.receive_messages("jobs")
    assert message["message_id"] == message_id
    assert message["body"] == "hello"
    assert message["md5_of_body"] == hashlib.md5(b"hello").hexdigest()
    assert message["attributes"]["ApproximateReceiveCount"] == "1"
    assert message["attributes"]["SenderId"] == "000000000000"
    assert int(message["attributes"]["SentTimestamp"]) <= int(
        message["attributes"]["ApproximateFirstReceiveTimestamp"])
    assert message["message_attributes"] == {
        "kind": {"DataType": "String", "StringValue": "greeting"}}
    # invisible while received
    assert rt.receive_messages("jobs") == []
    rt.delete_message("jobs", message["receipt_handle"])
    assert rt.get_queue("jobs")["approximate_number_of_messages_not_visible"] == 0


def test_binary_message_attributes_are_base64(rt):
    rt.create_queue("q")
    rt.send_message("q", "x", {"blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"}})
    [message] = rt.receive_messages("q")
    assert message["message_attributes"] == {
        "blob": {"DataType": "Binary", "BinaryValue": "AP8="}}


def test_queue_is_addressed_by_name_or_arn(rt):
    arn = rt.create_queue("q")
    rt.send_message(arn, "by arn")
    assert [m["body"] for m in rt.receive_messages(arn)] == ["by arn"]


def test_oldest_first_and_at_most_ten(rt):
    rt.create_queue("q")
    for i in range(12):
        rt.send_message("q", str(i))
    first = rt.receive_messages("q", max_messages=10)
    assert [m["body"] for m in first] == [str(i) for i in range(10)]
    assert [m["body"] for m in rt.receive_messages("q")] == ["10", "11"]
    with pytest.raises(InvalidParameterValueException, match="max_messages"):
        rt.receive_messages("q", max_messages=11)


def test_unacknowledged_message_reappears_after_visibility_timeout(rt):
    rt.create_queue("q", visibility_timeout_s=1)
    rt.send_message("q", "again")
    [first] = rt.receive_messages("q")
    assert rt.receive_messages("q") == []
    [second] = rt.receive_messages("q", wait_s=5)  # long poll until it is visible again
    assert second["message_id"] == first["message_id"]
    assert second["attributes"]["ApproximateReceiveCount"] == "2"
    assert second["receipt_handle"] != first["receipt_handle"]
    # the old handle no longer deletes it; the new one does
    rt.delete_message("q", first["receipt_handle"])
    assert rt.get_queue("q")["approximate_number_of_messages_not_visible"] == 1
    rt.delete_message("q", second["receipt_handle"])
    assert rt.get_queue("q")["approximate_number_of_messages_not_visible"] == 0


def test_redrive_to_dead_letter_queue_after_max_receive_count(rt):
    dlq = rt.create_queue("dlq")
    rt.create_queue("q", visibility_timeout_s=0, max_receive_count=2, dead_letter_queue=dlq)
    message_id = rt.send_message("q", "poison")
    assert len(rt.receive_messages("q")) == 1
    assert len(rt.receive_messages("q")) == 1
    assert rt.receive_messages("q") == []  # third receive: it moved
    [dead] = rt.receive_messages("dlq")
    assert dead["message_id"] == message_id
    assert dead["body"] == "poison"
    assert dead["attributes"]["ApproximateReceiveCount"] == "1"


def test_long_poll_wakes_when_a_message_arrives(rt):
    rt.create_queue("q")
    got = []
    waiter = threading.Thread(target=lambda: got.extend(rt.receive_messages("q", wait_s=10)))
    waiter.start()
    time.sleep(0.1)
    rt.send_message("q", "wake")
    waiter.join(10)
    assert [m["body"] for m in got] == ["wake"]


def test_messages_survive_reopen(tmp_path, store):
    with Runtime(tmp_path / "state", store=store) as rt:
        rt.create_queue("q")
        rt.send_message("q", "durable")
    with Runtime(tmp_path / "state", store=store) as rt:
        assert [m["body"] for m in rt.receive_messages("q")] == ["durable"]


def test_create_is_idempotent_for_equal_attributes(rt):
    arn = rt.create_queue("q", visibility_timeout_s=5)
    assert rt.create_queue("q", visibility_timeout_s=5) == arn
    with pytest.raises(QueueNameExists):
        rt.create_queue("q", visibility_timeout_s=6)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "bad name"}, "queue name"),
    ({"name": "x" * 81}, "queue name"),
    ({"name": "q", "visibility_timeout_s": -1}, "visibility_timeout_s"),
    ({"name": "q", "visibility_timeout_s": 43_201}, "visibility_timeout_s"),
    ({"name": "q", "max_receive_count": 3}, "both"),
    ({"name": "q", "dead_letter_queue": "dlq", "max_receive_count": 0}, "max_receive_count"),
])
def test_bad_queue_parameters(rt, kwargs, match):
    rt.create_queue("dlq")
    with pytest.raises(InvalidParameterValueException, match=match):
        rt.create_queue(**kwargs)


def test_missing_queue_and_bad_input(rt):
    with pytest.raises(QueueDoesNotExist):
        rt.send_message("nope", "x")
    with pytest.raises(QueueDoesNotExist):
        rt.create_queue("q", max_receive_count=1, dead_letter_queue="nope")
    rt.create_queue("q")
    with pytest.raises(InvalidParameterValueException, match="empty"):
        rt.send_message("q", "")
    with pytest.raises(InvalidParameterValueException, match="at most"):
        rt.send_message("q", "x" * (1024 * 1024 + 1))
    with pytest.raises(InvalidParameterValueException, match="str"):
        rt.send_message("q", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterValueException, match="DataType"):
        rt.send_message("q", "x", {"a": {"StringValue": "no type"}})
    with pytest.raises(ReceiptHandleIsInvalid):
        rt.delete_message("q", "made-up")
    with pytest.raises(InvalidParameterValueException, match="wait_s"):
        rt.receive_messages("q", wait_s=21)


def test_delete_queue_removes_messages(rt):
    rt.create_queue("q")
    rt.send_message("q", "x")
    rt.delete_queue("q")
    with pytest.raises(QueueDoesNotExist):
        rt.receive_messages("q")
    rt.create_queue("q")
    assert rt.receive_messages("q") == []


def test_messages_past_the_retention_period_are_deleted(tmp_path, store):
    state = tmp_path / "state"
    with Runtime(state, store=store) as rt:
        rt.create_queue("q", message_retention_s=60)
        with pytest.raises(InvalidParameterValueException, match="message_retention_s"):
            rt.create_queue("short", message_retention_s=59)
    backend = open_store(store, str(state), False)
    backend.send_messages([NewMessage("q", "old-id", "old", {}, time.time() - 120)])
    backend.close()
    with Runtime(state, store=store) as rt:
        rt.send_message("q", "new")
        assert [m["body"] for m in rt.receive_messages("q")] == ["new"]
        assert rt.get_queue("q")["approximate_number_of_messages_not_visible"] == 1
