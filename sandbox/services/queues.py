"""Queues with SQS semantics over the store.

At-least-once delivery: a received message becomes invisible for the
visibility timeout and reappears unless deleted with its receipt handle.
With a redrive policy, a message received ``max_receive_count`` times moves
to the dead-letter queue on its next receive (as SQS does).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .. import constants as C
from ..errors import (
    InvalidParameterValueException,
    QueueDoesNotExist,
    QueueNameExists,
    ReceiptHandleIsInvalid,
)
from ..store.base import Message, NewMessage, Store
from .arns import Arns

_QUEUE_NAME = re.compile(rf"^[A-Za-z0-9_-]{{1,{C.QUEUE_NAME_MAX}}}$")
# SQS allows #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF.
_INVALID_BODY_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DATA_TYPES = ("String", "Number", "Binary")
# Messages past their retention period are deleted at most this often per queue.
EXPIRY_INTERVAL_S = 1.0


class QueueService:
    """Create, send, receive, delete; long polls wake when messages arrive."""

    def __init__(self, store: Store, arns: Arns) -> None:
        self._store = store
        self._arns = arns
        self._arrived = threading.Condition(threading.Lock())
        self._closed = False
        self._expired_at: dict[str, float] = {}

    # -- queues ---------------------------------------------------------------------
    def create_queue(self, name: str,
                     visibility_timeout_s: int = C.QUEUE_VISIBILITY_TIMEOUT_DEFAULT_S,
                     max_receive_count: int | None = None,
                     dead_letter_queue: str | None = None,
                     message_retention_s: int = C.QUEUE_RETENTION_DEFAULT_S) -> str:
        """Creates a queue (or returns the ARN of an identical one). Messages
        older than ``message_retention_s`` are deleted, received or not.

        Raises:
            InvalidParameterValueException: a bad name, timeout or redrive policy.
            QueueDoesNotExist: the dead-letter queue does not exist.
            QueueNameExists: a queue of this name exists with other attributes.
        """
        if not isinstance(name, str) or not _QUEUE_NAME.match(name):
            raise InvalidParameterValueException(
                f"queue name must be 1-{C.QUEUE_NAME_MAX} letters, digits, '-' or '_', "
                f"got {name!r}")
        _check_int("visibility_timeout_s", visibility_timeout_s, 0,
                   C.QUEUE_VISIBILITY_TIMEOUT_MAX_S)
        _check_int("message_retention_s", message_retention_s, C.QUEUE_RETENTION_MIN_S,
                   C.QUEUE_RETENTION_MAX_S)
        if (max_receive_count is None) != (dead_letter_queue is None):
            raise InvalidParameterValueException(
                "a redrive policy needs both dead_letter_queue and max_receive_count")
        dlq_arn = None
        if dead_letter_queue is not None:
            _check_int("max_receive_count", max_receive_count, 1, C.QUEUE_MAX_RECEIVE_COUNT_MAX)
            dlq_name = self.resolve(dead_letter_queue)
            if dlq_name == name:
                raise InvalidParameterValueException(
                    "a queue cannot be its own dead-letter queue")
            dlq_arn = self._arns.queue(dlq_name)
        record = {"name": name, "arn": self._arns.queue(name),
                  "visibility_timeout_s": visibility_timeout_s,
                  "max_receive_count": max_receive_count, "dead_letter_queue": dlq_arn,
                  "message_retention_s": message_retention_s}
        existing = self._store.get_queue(name)
        if existing is not None:
            if {k: v for k, v in existing.items() if k != "created"} != record:
                raise QueueNameExists(
                    f"A queue already exists with the same name and a different value for "
                    f"attribute(s): {name}")
            return str(existing["arn"])
        record["created"] = time.time()
        self._store.put_queue(name, record)
        return str(record["arn"])

    def delete_queue(self, queue: str) -> None:
        name = self.resolve(queue)
        self._store.delete_queue(name)
        self.notify()

    def get_queue(self, queue: str) -> dict[str, Any]:
        """The queue's attributes, with ApproximateNumberOfMessages(NotVisible)."""
        name = self.resolve(queue)
        record = self._attributes(name)
        self._expire(name, record)
        visible, in_flight = self._store.count_messages(name, time.time())
        return dict(record, approximate_number_of_messages=visible,
                    approximate_number_of_messages_not_visible=in_flight)

    def list_queues(self) -> list[str]:
        return [str(q["arn"]) for q in self._store.list_queues()]

    def resolve(self, queue: str) -> str:
        """The name of an existing queue given by name or ARN.

        Raises:
            QueueDoesNotExist: no such queue.
        """
        name = self._arns.name_of(queue, "sqs", "queue") if isinstance(queue, str) else None
        if name is None or self._store.get_queue(name) is None:
            raise QueueDoesNotExist(f"The specified queue does not exist: {queue!r}")
        return name

    def _expire(self, name: str, record: dict[str, Any]) -> None:
        """Deletes messages past the queue's retention period (at most once a second)."""
        now = time.time()
        if now - self._expired_at.get(name, 0.0) >= EXPIRY_INTERVAL_S:
            self._expired_at[name] = now
            retention = record.get("message_retention_s", C.QUEUE_RETENTION_DEFAULT_S)
            self._store.expire_messages(name, now - retention)

    def _attributes(self, name: str) -> dict[str, Any]:
        record = self._store.get_queue(name)
        if record is None:
            raise QueueDoesNotExist(f"The specified queue does not exist: {name!r}")
        return record

    # -- messages -------------------------------------------------------------------
    def new_message(self, name: str, body: str,
                    attributes: Mapping[str, Any] | None = None) -> NewMessage:
        """A validated message for queue ``name`` (not yet stored)."""
        if not isinstance(body, str):
            raise InvalidParameterValueException(
                f"message body must be a str, got {type(body).__name__}")
        if not body:
            raise InvalidParameterValueException("message body must not be empty")
        size = len(body.encode())
        if size > C.QUEUE_MESSAGE_MAX:
            raise InvalidParameterValueException(
                f"message body must be at most {C.QUEUE_MESSAGE_MAX} bytes, got {size}")
        if _INVALID_BODY_CHARS.search(body):
            raise InvalidParameterValueException(
                "message body contains characters outside the allowed Unicode set")
        return NewMessage(name, str(uuid.uuid4()), body, _message_attributes(attributes),
                          time.time(), self._arns.account_id)

    def send_message(self, queue: str, body: str,
                     attributes: Mapping[str, Any] | None = None) -> str:
        """Appends a message; returns its id once it is durable."""
        message = self.new_message(self.resolve(queue), body, attributes)
        self._store.send_messages([message])
        self.notify()
        return message.message_id

    def receive(self, queue: str, max_messages: int, wait_s: float = 0.0,
                visibility_timeout_s: float | None = None,
                stop: threading.Event | None = None) -> list[Message]:
        """Up to ``max_messages`` messages (no per-call cap: pollers use it),
        waiting up to ``wait_s`` for the first one."""
        name = self.resolve(queue)
        deadline = time.monotonic() + wait_s
        while True:
            record = self._attributes(name)
            self._expire(name, record)
            now = time.time()
            timeout = (record["visibility_timeout_s"] if visibility_timeout_s is None
                       else visibility_timeout_s)
            dlq = record["dead_letter_queue"]
            messages = self._store.receive_messages(
                name, max_messages, now, now + timeout, record["max_receive_count"],
                self._arns.parse(dlq)[1] if dlq else None, _new_receipt_handle)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0 or self._closed or (stop and stop.is_set()):
                return messages
            next_visible = self._store.next_visible_at(name)
            if next_visible is not None:
                remaining = min(remaining, max(next_visible - time.time(), 0.001))
            with self._arrived:
                self._arrived.wait(min(remaining, 1.0))

    def receive_messages(self, queue: str, max_messages: int = C.QUEUE_RECEIVE_MAX,
                         wait_s: float = 0, visibility_timeout_s: int | None = None
                         ) -> list[dict[str, Any]]:
        """SQS ReceiveMessage: at most 10 messages, long-polling up to 20 s.

        Returns:
            dicts with message_id, receipt_handle, body, md5_of_body,
            attributes (ApproximateReceiveCount, SentTimestamp, SenderId,
            ApproximateFirstReceiveTimestamp) and message_attributes.
        """
        _check_int("max_messages", max_messages, 1, C.QUEUE_RECEIVE_MAX)
        if not 0 <= wait_s <= C.QUEUE_WAIT_MAX_S:
            raise InvalidParameterValueException(
                f"wait_s must be 0-{C.QUEUE_WAIT_MAX_S}, got {wait_s!r}")
        if visibility_timeout_s is not None:
            _check_int("visibility_timeout_s", visibility_timeout_s, 0,
                       C.QUEUE_VISIBILITY_TIMEOUT_MAX_S)
        return [{
            "message_id": m.message_id, "receipt_handle": m.receipt_handle, "body": m.body,
            "md5_of_body": md5_of_body(m.body), "attributes": system_attributes(m),
            "message_attributes": m.attributes,
        } for m in self.receive(queue, max_messages, wait_s, visibility_timeout_s)]

    def delete_message(self, queue: str, receipt_handle: str) -> None:
        """Deletes a received message. A handle of a message already deleted
        (or received again since) deletes nothing, as in SQS.

        Raises:
            ReceiptHandleIsInvalid: the handle was never issued by this runtime.
        """
        name = self.resolve(queue)
        if not isinstance(receipt_handle, str) or not receipt_handle.startswith("rh-"):
            raise ReceiptHandleIsInvalid(
                f"The input receipt handle is invalid: {receipt_handle!r}")
        self._store.delete_messages(name, [receipt_handle])

    def delete_batch(self, name: str, receipt_handles: list[str]) -> int:
        return self._store.delete_messages(name, receipt_handles)

    def change_visibility(self, name: str, receipt_handle: str, timeout_s: float) -> bool:
        ok = self._store.change_visibility(name, receipt_handle, time.time() + timeout_s)
        self.notify()
        return ok

    def depth(self, name: str) -> tuple[int, int]:
        """``(visible, in_flight)`` message counts."""
        record = self._store.get_queue(name)
        if record is not None:
            self._expire(name, record)
        return self._store.count_messages(name, time.time())

    def notify(self) -> None:
        """Wakes long polls: messages were written (also by an outbox)."""
        with self._arrived:
            self._arrived.notify_all()

    def close(self) -> None:
        self._closed = True
        self.notify()


def md5_of_body(body: str) -> str:
    return hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()


def system_attributes(m: Message) -> dict[str, str]:
    """SQS's system attributes of a received message (milliseconds as strings)."""
    return {
        "ApproximateReceiveCount": str(m.receive_count),
        "SentTimestamp": str(int(m.sent_at * 1000)),
        "SenderId": m.sender_id,
        "ApproximateFirstReceiveTimestamp": str(int(m.first_received_at * 1000)),
    }


def _new_receipt_handle() -> str:
    return "rh-" + os.urandom(24).hex()


def _check_int(what: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterValueException(f"{what} must be an integer {low}-{high}, "
                                             f"got {value!r}")


def _message_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """SQS MessageAttributes: ``{name: {"DataType", "StringValue"|"BinaryValue"}}``;
    a plain str value is shorthand for a String attribute."""
    if not attributes:
        return {}
    result: dict[str, Any] = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not name or len(name) > 256:
            raise InvalidParameterValueException(
                f"message attribute names must be 1-256 characters, got {name!r}")
        if isinstance(value, str):
            value = {"DataType": "String", "StringValue": value}
        if not isinstance(value, Mapping) or str(value.get("DataType", "")).split(".")[0] \
                not in _DATA_TYPES:
            raise InvalidParameterValueException(
                f"message attribute {name!r} needs a DataType of String, Number or Binary")
        if ("StringValue" in value) == ("BinaryValue" in value):
            raise InvalidParameterValueException(
                f"message attribute {name!r} needs exactly one of StringValue and BinaryValue")
        value = dict(value)
        binary = value.get("BinaryValue")
        if isinstance(binary, bytes | bytearray):
            # Stored and handed to functions base64-encoded, as SQS's JSON API does.
            value["BinaryValue"] = base64.b64encode(binary).decode()
        elif "BinaryValue" in value and not isinstance(binary, str):
            raise InvalidParameterValueException(
                f"message attribute {name!r}: BinaryValue must be bytes or base64 text")
        result[name] = value
    if len(result) > 10:
        raise InvalidParameterValueException("a message may have at most 10 attributes")
    return result
