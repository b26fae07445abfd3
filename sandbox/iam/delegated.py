"""The checks Lambda makes when it acts for a function rather than being
called: delivering records to the function's destinations (asynchronous
OnSuccess/OnFailure, its dead-letter queue, a stream mapping's on-failure
queue) and polling the sources of its event source mappings.

As in Lambda, each needs the function's execution role: ``sqs:SendMessage``
on a queue destination, ``lambda:InvokeFunction`` on a function destination
(whose own resource-based policy is also evaluated, with the role session as
caller), :data:`constants.QUEUE_MAPPING_ACTIONS` or
:data:`constants.STREAM_MAPPING_ACTIONS` on a mapping's source. Each is
checked when configured (a refusal is Lambda's InvalidParameterValueException)
and again at every use (a refusal is an AccessDeniedException the caller turns
into a dropped record or a backed-off poll), with the role's policies as they
are at that moment.

A function without an execution role cannot exist in Lambda; here it can.
Its destinations and mappings work unchecked (there is no role to check),
while it may make no platform call (see :mod:`sandbox.invoke.platform`).

Lambda invokes a function for its event source mappings without a statement
in the function's resource-based policy; the caller of those invocations is
the source's service principal (``sqs.amazonaws.com``, with the source ARN and
account), and only an explicit Deny for it in that policy refuses them.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import constants as C
from ..errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    NoSuchEntityException,
    ResourceNotFoundException,
)
from .authorizer import Authorizer
from .principals import Principal, service

# What a role check raises for a refusal: IAM's denial, or the role is gone.
_REFUSALS = (AccessDeniedException, NoSuchEntityException)

# The service principal that reads each kind of mapping source.
SOURCE_SERVICES = {"sqs": "sqs.amazonaws.com", "kinesis": "kinesis.amazonaws.com"}
# How Lambda's configuration errors name a service ("... to call ReceiveMessage on SQS").
_SERVICE_TITLES = {"sqs": "SQS", "kinesis": "Kinesis", "lambda": "Lambda", "sns": "SNS",
                   "events": "EventBridge"}

# function name -> (function ARN, execution role ARN or None); None when no such function
FunctionIdentity = Callable[[str], "tuple[str, str | None] | None"]


def service_of(arn: str) -> str:
    """The service of an ARN ("sqs", "kinesis", "lambda")."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise InvalidParameterValueException(f"not an ARN: {arn!r}")
    return parts[2]


class DelegatedChecks:
    """Role checks for destinations and event source mappings, against the
    registry's current roles and policies."""

    def __init__(self, authorizer: Authorizer, identity: FunctionIdentity) -> None:
        self._authorizer = authorizer
        self._identity = identity

    # -- at use ----------------------------------------------------------------------
    def destination(self, function: str, arn: str) -> None:
        """May ``function`` deliver a record to destination ``arn`` now?

        Raises:
            AccessDeniedException: its role may not perform the destination's
                action, or a function destination's policy refuses the session.
        """
        session = self._session(function)
        if session is None:
            return
        kind = service_of(arn)
        action = C.DESTINATION_ACTIONS.get(kind)
        if action is None:
            raise InvalidParameterValueException(f"{arn} is not a destination Lambda supports")
        self._authorizer.authorize_role(session, action, arn)
        if kind == "lambda":
            target = arn.split(":", 6)[6]
            self._authorizer.authorize_invoke(session, target, arn)

    def mapping_source(self, function: str, source_arn: str) -> None:
        """May ``function``'s role read the mapping's source now (every action
        Lambda needs for that kind of source)?

        Raises:
            AccessDeniedException: naming the first action its role lacks.
        """
        session = self._session(function)
        if session is None:
            return
        for action in _mapping_actions(source_arn):
            self._authorizer.authorize_role(session, action, source_arn)

    def mapping_invoke(self, function: str, source_arn: str) -> Principal:
        """The caller of a mapping's invocation of ``function``: the source's
        service principal; refused only by an explicit Deny in the function's
        resource-based policy. Returns that caller.

        Raises:
            AccessDeniedException: the function's policy denies it explicitly.
        """
        function_arn = self._function_arn(function)
        caller = service(SOURCE_SERVICES[service_of(source_arn)], source_arn=source_arn,
                         source_account=self._authorizer.account_id)
        self._authorizer.refuse_explicit_deny(caller, function, function_arn)
        return caller

    # -- when configured ---------------------------------------------------------------------
    def configure_destination(self, function: str, arn: str,
                              invalid_destination_wording: bool = False) -> None:
        """:meth:`destination`, for PutFunctionEventInvokeConfig (which words
        its refusal "The destination ARN ... is invalid.", as Lambda does),
        a dead-letter config or a mapping's on-failure destination.

        Raises:
            InvalidParameterValueException: Lambda's wording, then IAM's.
        """
        try:
            self.destination(function, arn)
        except _REFUSALS as exc:
            if invalid_destination_wording:
                raise InvalidParameterValueException(
                    f"The destination ARN {arn} is invalid. ({exc.message})") from None
            raise _no_permission(C.DESTINATION_ACTIONS[service_of(arn)], exc) from None

    def configure_mapping(self, function: str, source_arn: str) -> None:
        """:meth:`mapping_source` for CreateEventSourceMapping and
        UpdateEventSourceMapping.

        Raises:
            InvalidParameterValueException: "The provided execution role does
                not have permissions to call ReceiveMessage on SQS", then IAM's words.
        """
        session = self._session(function)
        if session is None:
            return
        for action in _mapping_actions(source_arn):
            try:
                self._authorizer.authorize_role(session, action, source_arn)
            except _REFUSALS as exc:
                raise _no_permission(action, exc) from None

    # -- internals -----------------------------------------------------------------------------
    def _function_arn(self, function: str) -> str:
        found = self._identity(function)
        if found is None:
            raise ResourceNotFoundException(f"Function not found: {function}")
        return found[0]

    def _session(self, function: str) -> Principal | None:
        """The function's role session; None when it has no role."""
        found = self._identity(function)
        if found is None:
            raise ResourceNotFoundException(f"Function not found: {function}")
        function_arn, role = found
        if role is None:
            return None
        return self._authorizer.role_session(role, function, function_arn)


def _no_permission(action: str, exc: AccessDeniedException | NoSuchEntityException
                   ) -> InvalidParameterValueException:
    kind, _, operation = action.partition(":")
    return InvalidParameterValueException(
        f"The provided execution role does not have permissions to call {operation} on "
        f"{_SERVICE_TITLES.get(kind, kind)} ({exc.message})")


def _mapping_actions(source_arn: str) -> tuple[str, ...]:
    kind = service_of(source_arn)
    if kind == "sqs":
        return C.QUEUE_MAPPING_ACTIONS
    if kind == "kinesis":
        return C.STREAM_MAPPING_ACTIONS
    raise InvalidParameterValueException(f"{source_arn} is not a queue or stream ARN")
