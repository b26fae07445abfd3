"""Destinations: Lambda's invocation records, and writing them to a queue or
to a function (as an asynchronous event), inside the caller's transaction,
once the function's execution role may (sandbox/iam/delegated.py)."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from .. import constants as C
from ..errors import InvalidParameterValueException, SandboxError
from ..iam.delegated import DelegatedChecks
from ..services.arns import Arns
from ..services.queues import QueueService
from ..store.base import NewEvent, Outbox
from .ids import new_request_id

log = logging.getLogger("sandbox.invoke")


def iso_timestamp(at: float | None = None) -> str:
    """``2019-11-14T18:16:05.568Z``: the timestamp format of invocation records."""
    moment = datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def decode_payload(raw: bytes | None) -> Any:
    """A payload as the record carries it: parsed JSON (raw text if not JSON)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def check_destination(arns: Arns, arn: str | None, what: str) -> str | None:
    """A destination ARN for the invocation models: a queue or a function.

    Raises:
        InvalidParameterValueException: not a local queue or function ARN.
    """
    if arn is None:
        return None
    service, _ = arns.parse(arn, what)
    if service not in ("sqs", "lambda"):
        raise InvalidParameterValueException(
            f"{what} must be a queue or function ARN, got {arn!r}")
    return arn


class Destinations:
    """Turns records into outbox entries for their destination ARN."""

    def __init__(self, arns: Arns, queues: QueueService,
                 function_exists: Callable[[str], bool], checks: DelegatedChecks) -> None:
        self._arns = arns
        self._queues = queues
        self._function_exists = function_exists
        self.checks = checks  # also what configuring a destination checks

    def add(self, outbox: Outbox, function: str, arn: str, body: str,
            attributes: dict[str, Any] | None = None) -> None:
        """Adds ``body`` for ``arn`` to ``outbox``, as ``function`` delivers it.

        A destination that does not exist, refuses the record, or that the
        function's execution role may not use (now: a changed policy counts at
        once) loses the record with a warning, as Lambda's failed delivery does
        (its DestinationDeliveryFailures metric: "permissions errors"); the
        work the record reports is still retired."""
        try:
            service, name = self._arns.parse(arn, "destination")
            self.checks.destination(function, arn)
            if service == "sqs":
                outbox.messages.append(
                    self._queues.new_message(self._queues.resolve(name), body, attributes))
            elif service == "lambda" and self._function_exists(name):
                outbox.events.append(NewEvent(name, new_request_id(), body.encode(),
                                              time.time()))
            else:
                raise InvalidParameterValueException(f"destination {arn} does not exist")
        except SandboxError as exc:
            log.warning("destination record for %s dropped: %s", arn, exc.message)


def invocation_record(function_arn: str, request_id: str, condition: str,
                      invoke_count: int, request_payload: bytes,
                      response: tuple[str | None, bytes] | None) -> dict[str, Any]:
    """Lambda's record of an asynchronous invocation (destinations).

    ``response`` is ``(function_error, payload)`` of the last invocation, or
    None when the function was never invoked (its record then has no
    responseContext and no responsePayload).
    """
    record: dict[str, Any] = {
        "version": C.DESTINATION_RECORD_VERSION,
        "timestamp": iso_timestamp(),
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function_arn}:{C.LATEST_VERSION}",
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": decode_payload(request_payload),
    }
    if response is not None:
        error, payload = response
        context: dict[str, Any] = {"statusCode": 200, "executedVersion": C.LATEST_VERSION}
        if error is not None:
            context["functionError"] = error
        record["responseContext"] = context
        record["responsePayload"] = decode_payload(payload)
    return record
