"""The platform, as a running function reaches it.

Usable inside a handler only: each call goes over the environment's channel to
the dispatcher, which authorizes it against the function's execution role and
performs it. The environment holds no credentials; a refusal raises
:class:`sandbox.errors.AccessDeniedException` here, with IAM's wording::

    from sandbox.client import platform

    def handler(event, context):
        reply = platform.invoke("other-function", {"x": 1})
        platform.invoke("audit", {"x": 1}, invocation_type="Event")
        platform.send_message("orders", "a body")
        platform.put_record("clicks", b"data", "partition-key")
        return reply["Payload"]

Other errors are raised as the exception the call produced (for instance
``ResourceNotFoundException``). Calls are possible while the function
handles an invocation (from any of its threads; they are serialized), not
during INIT nor after the handler returned.
"""

from __future__ import annotations

import json

# typing is not imported at run time: every cold start would pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def call(operation: str, **params: Any) -> dict[str, Any]:
    """Performs one platform operation (e.g. "lambda:Invoke") and returns its result.

    Raises:
        AccessDeniedException: the function's role may not do it.
        SandboxError: (a subclass named after the error code) the call failed.
        RuntimeError: not inside an execution environment handling an invocation.
    """
    from ..errors import ProtocolError, error_class
    from ..protocol import PLATFORM_CALL, PLATFORM_REPLY
    from ..worker import invoke_loop

    with invoke_loop.platform_lock:
        channel = invoke_loop.platform_channel
        if channel is None:
            raise RuntimeError("sandbox.client.platform works only in a function's execution "
                               "environment while it handles an invocation")
        channel.send({"t": PLATFORM_CALL, "op": operation, "params": params})
        reply = channel.recv()
    if reply is None:
        raise ProtocolError("the dispatcher closed the channel during a platform call")
    if reply.get("t") != PLATFORM_REPLY:
        raise ProtocolError(f"expected a {PLATFORM_REPLY!r} frame, got {reply.get('t')!r}")
    error = reply.get("error")
    if error is not None:
        raise error_class(error["type"])(error["message"])
    result: dict[str, Any] = reply["result"]
    return result


def invoke(function_name: str, payload: Any = None,
           invocation_type: str = "RequestResponse",
           qualifier: str | None = None) -> dict[str, Any]:
    """Invokes a function (its name or ARN) as this function's execution role.

    Returns:
        ``{"StatusCode", "ExecutedVersion", "Payload"}`` plus ``"FunctionError"``
        when the invoked function failed; ``Payload`` is its decoded JSON
        result (its error document when it failed), None for Event and DryRun.
    """
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    params: dict[str, Any] = {"FunctionName": function_name, "Payload": body,
                              "InvocationType": invocation_type}
    if qualifier is not None:
        params["Qualifier"] = qualifier
    result = call("lambda:Invoke", **params)
    raw = result.get("Payload")
    result["Payload"] = json.loads(raw) if raw else None
    return result


def send_message(queue: str, body: str,
                 attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sends a message to a queue (its name or ARN) as this function's
    execution role (``sqs:SendMessage`` on the queue's ARN).

    ``attributes`` are SQS message attributes (a str value meaning a String one).

    Returns:
        ``{"MessageId"}`` once the message is durable.
    """
    params: dict[str, Any] = {"QueueName": queue, "MessageBody": body}
    if attributes is not None:
        params["MessageAttributes"] = attributes
    return call("sqs:SendMessage", **params)


def put_record(stream: str, data: bytes | str, partition_key: str) -> dict[str, Any]:
    """Appends a record to a stream (its name or ARN) as this function's
    execution role (``kinesis:PutRecord`` on the stream's ARN).

    Returns:
        ``{"SequenceNumber"}`` once the record is durable.
    """
    return call("kinesis:PutRecord", StreamName=stream, Data=data, PartitionKey=partition_key)
