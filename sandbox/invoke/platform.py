"""Platform calls: what a running function asks of the platform through its
channel, authorized against the function's execution role.

The environment sends a ``PLATFORM_CALL`` frame (``op``, ``params``) while its
invocation runs; the dispatcher thread waiting for that invocation's RESULT
serves it here and answers ``PLATFORM_REPLY`` with ``result`` or ``error``
(``type``, ``message``). The caller is the function's role session
(``arn:aws:sts::<account>:assumed-role/<role>/<function>``); no credentials
ever enter the environment.

:data:`OPERATIONS` maps an operation name to its implementation; each one
authorizes and performs the call: ``lambda:Invoke`` (RequestResponse, Event,
DryRun), ``sqs:SendMessage`` and ``kinesis:PutRecord``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import (
    InvalidParameterValueException,
    ResourceNotFoundException,
    SandboxError,
    ServiceException,
)
from ..protocol import PLATFORM_REPLY

if TYPE_CHECKING:
    from ..api import Runtime
    from ..iam import Principal

# (runtime, caller session, params) -> result document
Operation = Callable[["Runtime", "Principal", dict[str, Any]], dict[str, Any]]
# (PLATFORM_CALL frame, deadline as time.monotonic()) -> PLATFORM_REPLY frame
PlatformHandler = Callable[[dict[str, Any], float], dict[str, Any]]

_FUNCTION_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:([a-z0-9-]+):(\d{12}):function:([A-Za-z0-9_-]+)(?::(.+))?$")


def _target(runtime: Runtime, name: Any) -> tuple[str, str | None]:
    """A function name or ARN (with an optional qualifier) -> (name, qualifier)."""
    if not isinstance(name, str) or not name:
        raise InvalidParameterValueException(f"FunctionName must be a string, got {name!r}")
    match = _FUNCTION_ARN.match(name)
    if match is None:
        return name, None
    region, account, function, qualifier = match.groups()
    if account != runtime.account_id or region != runtime.region:
        raise ResourceNotFoundException(f"Function not found: {name}")
    return function, qualifier


def invoke(runtime: Runtime, session: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """lambda:Invoke: invokes another function as the role session."""
    name, qualifier = _target(runtime, params.get("FunctionName"))
    invocation_type = params.get("InvocationType", "RequestResponse")
    result = runtime.invoke(name, params.get("Payload") or b"{}", invocation_type,
                            qualifier=params.get("Qualifier") or qualifier, caller=session)
    reply: dict[str, Any] = {"StatusCode": result.status_code,
                             "ExecutedVersion": result.executed_version,
                             "Payload": result.raw_payload}
    if result.function_error:
        reply["FunctionError"] = result.function_error
    return reply


SEND_MESSAGE = "sqs:SendMessage"
PUT_RECORD = "kinesis:PutRecord"


def _resource_arn(runtime: Runtime, given: Any, what: str, kind: str) -> str:
    """The ARN of a queue or stream given by name or ARN (which need not exist:
    IAM decides before the service looks)."""
    if not isinstance(given, str) or not given:
        raise InvalidParameterValueException(f"{what} must be a string, got {given!r}")
    return runtime.arns.of(kind, runtime.arns.name_of(given, kind, what))


def send_message(runtime: Runtime, session: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """sqs:SendMessage: ``QueueName`` (name or ARN), ``MessageBody``,
    ``MessageAttributes``; returns ``{"MessageId"}``."""
    arn = _resource_arn(runtime, params.get("QueueName"), "QueueName", "sqs")
    runtime._authorizer.authorize_role(session, SEND_MESSAGE, arn)
    body: Any = params.get("MessageBody")  # the queue service checks it
    message_id = runtime.send_message(arn, body, params.get("MessageAttributes"))
    return {"MessageId": message_id}


def put_record(runtime: Runtime, session: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """kinesis:PutRecord: ``StreamName`` (name or ARN), ``Data`` (bytes),
    ``PartitionKey``; returns ``{"SequenceNumber"}``."""
    arn = _resource_arn(runtime, params.get("StreamName"), "StreamName", "kinesis")
    runtime._authorizer.authorize_role(session, PUT_RECORD, arn)
    data: Any = params.get("Data")  # the stream service checks both
    key: Any = params.get("PartitionKey")
    sequence = runtime.put_record(arn, data, key)
    return {"SequenceNumber": sequence}


# Operation name -> implementation; each authorizes the role session against
# the target's ARN (a function's also against its resource-based policy), then acts.
OPERATIONS: dict[str, Operation] = {
    "lambda:Invoke": invoke,
    SEND_MESSAGE: send_message,
    PUT_RECORD: put_record,
}


class PlatformService:
    """Serves the platform calls of running functions for one Runtime.

    Each call runs on a worker thread so that the invocation that made it
    still times out at its own deadline; a call outliving its caller finishes
    on its own (as a function invoked by a timed-out caller does in Lambda).
    Workers are reused (starting a thread costs more than a warm invoke); there
    are at most as many as the Runtime's concurrency limit, since each call
    belongs to an invocation in flight. :meth:`close` waits for the calls in
    progress.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._workers = ThreadPoolExecutor(max_workers=runtime.concurrency_limit,
                                           thread_name_prefix="platform-call")

    def handler(self, function: str, function_arn: str, role_arn: str | None
                ) -> PlatformHandler:
        """What the sync invoke loop calls for each PLATFORM_CALL of this function."""

        def serve(frame: dict[str, Any], deadline: float) -> dict[str, Any]:
            return self.serve(function, function_arn, role_arn, frame, deadline)

        return serve

    def serve(self, function: str, function_arn: str, role_arn: str | None,
              frame: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Authorizes and performs one call; returns the PLATFORM_REPLY frame.

        Raises:
            TimeoutError: the calling invocation's deadline passed first.
        """
        try:
            call = self._workers.submit(self._perform, function, function_arn, role_arn, frame)
        except RuntimeError:  # shut down: the Runtime is closing
            return error_reply(ServiceException("this Runtime is closed"))
        try:
            return call.result(max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise TimeoutError("the invocation's deadline passed during a platform call") from None

    def _perform(self, function: str, function_arn: str, role_arn: str | None,
                 frame: dict[str, Any]) -> dict[str, Any]:
        try:
            operation = OPERATIONS.get(frame.get("op"))  # type: ignore[arg-type]
            if operation is None:
                raise InvalidParameterValueException(
                    f"unknown platform operation {frame.get('op')!r}; available: "
                    f"{', '.join(sorted(OPERATIONS))}")
            params = frame.get("params")
            if not isinstance(params, dict):
                raise InvalidParameterValueException("platform call params must be a map")
            session = self._runtime._authorizer.role_session(role_arn, function, function_arn)
            return {"t": PLATFORM_REPLY, "result": operation(self._runtime, session, params)}
        except SandboxError as exc:
            return error_reply(exc)
        except Exception as exc:  # the environment gets the fault, the dispatcher carries on
            return error_reply(ServiceException(f"{type(exc).__name__}: {exc}"))

    def close(self) -> None:
        """Waits for calls in progress (their environments are gone by now)
        and ends the worker threads."""
        self._workers.shutdown(wait=True, cancel_futures=True)


def error_reply(exc: SandboxError) -> dict[str, Any]:
    return {"t": PLATFORM_REPLY, "error": {"type": exc.code, "message": exc.message}}


def serve_call(platform: PlatformHandler | None, frame: dict[str, Any],
               deadline: float) -> dict[str, Any]:
    """The reply to one PLATFORM_CALL; an error where no platform is served."""
    if platform is None:
        return error_reply(ServiceException(
            "platform calls are not served on this invocation path"))
    return platform(frame, deadline)
