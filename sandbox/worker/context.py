"""The ``context`` object handed to handlers, as Lambda's Python runtime builds it."""

from __future__ import annotations

import os
import time

# typing is not imported at run time: every cold start would pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, identity: dict[str, Any] | None) -> None:
        identity = identity or {}
        self.cognito_identity_id = identity.get("cognitoIdentityId")
        self.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, context: dict[str, Any]) -> None:
        self.client = context.get("client")
        self.custom = context.get("custom")
        self.env = context.get("env")


_function_facts: tuple[str | None, ...] | None = None


def _facts() -> tuple[str | None, ...]:
    """What the environment says about the function, read once per process
    (after a snapshot child has applied its own variables)."""
    global _function_facts
    if _function_facts is None:
        env = os.environ
        _function_facts = tuple(env.get(key) for key in (
            "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_GROUP_NAME",
            "AWS_LAMBDA_LOG_STREAM_NAME"))
    return _function_facts


def forget_function_facts() -> None:
    """Makes the next context read the facts again (a zygote's rehearsal
    read its own, not its children's)."""
    global _function_facts
    _function_facts = None


class LambdaContext:
    """Per-invocation facts; names and types follow awslambdaric's LambdaContext.

    As there, ``memory_limit_in_mb`` is a string read from the environment.
    """

    __slots__ = (
        "aws_request_id", "invoked_function_arn", "client_context", "identity",
        "function_name", "function_version", "memory_limit_in_mb",
        "log_group_name", "log_stream_name", "_deadline_ms",
    )

    def __init__(
        self,
        request_id: str,
        invoked_function_arn: str,
        deadline_ms: float,
        client_context: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.client_context = ClientContext(client_context) if client_context else None
        self.identity = CognitoIdentity(identity)
        (self.function_name, self.function_version, self.memory_limit_in_mb,
         self.log_group_name, self.log_stream_name) = _facts()
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the dispatcher kills this environment."""
        return max(int(self._deadline_ms - time.time() * 1000), 0)

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, "
            f"function_name={self.function_name!r}, "
            f"invoked_function_arn={self.invoked_function_arn!r})"
        )
