"""Exceptions raised by the sandbox API, named after Lambda's error codes.

Every exception here derives from :class:`SandboxError` and carries ``code``
(Lambda's error type, as its HTTP API would put in ``x-amzn-ErrorType``) and
``http_status``. A function's own failure is *not* an exception: it comes back
as an invocation result with ``function_error="Unhandled"``, as in Lambda.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: a request to the sandbox could not be carried out."""

    code = "ServiceException"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServiceException(SandboxError):
    """The runtime itself failed (an environment could not be started, ...)."""


class ResourceNotFoundException(SandboxError):
    """The named function (or other resource) does not exist."""

    code = "ResourceNotFoundException"
    http_status = 404


class ResourceConflictException(SandboxError):
    """The resource already exists, or is in a state that forbids the call."""

    code = "ResourceConflictException"
    http_status = 409


class InvalidParameterValueException(SandboxError):
    """A parameter is out of range or malformed; the message names it."""

    code = "InvalidParameterValueException"
    http_status = 400


class InvalidRequestContentException(SandboxError):
    """The request body is not valid JSON."""

    code = "InvalidRequestContentException"
    http_status = 400


class RequestTooLargeException(SandboxError):
    """The invocation payload exceeds the limit for its invocation type."""

    code = "RequestTooLargeException"
    http_status = 413


class TooManyRequestsException(SandboxError):
    """A concurrency limit was reached; synchronous invokes are not queued."""

    code = "TooManyRequestsException"
    http_status = 429

    def __init__(self, message: str, reason: str = "ConcurrentInvocationLimitExceeded") -> None:
        super().__init__(message)
        self.reason = reason


class ProtocolError(SandboxError):
    """A peer sent a malformed, truncated or oversized frame.

    The channel it came on is closed; the dispatcher and zygotes carry on.
    """


# -- permissions (sandbox/iam) --------------------------------------------------------
class AccessDeniedException(SandboxError):
    """The caller may not perform the action on the resource.

    The message names who, what and which resource, and why, in IAM's words:
    "User: <arn> is not authorized to perform: <action> on resource: <arn>
    because no resource-based policy allows the <action> action".
    """

    code = "AccessDeniedException"
    http_status = 403


class MalformedPolicyDocumentException(SandboxError):
    """A policy document is not valid IAM policy JSON; the message names the
    element at fault (IAM's error code is MalformedPolicyDocument)."""

    code = "MalformedPolicyDocument"
    http_status = 400


class PolicyLengthExceededException(SandboxError):
    """A function's resource-based policy would exceed its size limit."""

    code = "PolicyLengthExceededException"
    http_status = 400


class EntityAlreadyExistsException(SandboxError):
    """An IAM user or role of that name exists (IAM's EntityAlreadyExists)."""

    code = "EntityAlreadyExists"
    http_status = 409


class NoSuchEntityException(SandboxError):
    """No IAM user or role of that name exists (IAM's NoSuchEntity)."""

    code = "NoSuchEntity"
    http_status = 404


def error_class(code: str) -> type[SandboxError]:
    """The exception class for an error code (SandboxError when unknown), so an
    error that crossed a process boundary is raised as what it was."""
    for cls in _all_subclasses(SandboxError):
        if cls.code == code:
            return cls
    return SandboxError


def _all_subclasses(cls: type[SandboxError]) -> list[type[SandboxError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found
class QueueDoesNotExist(ResourceNotFoundException):
    """SQS: the named queue does not exist."""

    code = "AWS.SimpleQueueService.NonExistentQueue"


class QueueNameExists(ResourceConflictException):
    """SQS: a queue of this name exists with other attributes."""

    code = "QueueAlreadyExists"


class ReceiptHandleIsInvalid(InvalidParameterValueException):
    """SQS: the receipt handle was not issued by this queue."""

    code = "ReceiptHandleIsInvalid"


# -- interfaces (sandbox/http): request authentication, as AWS's front door sends it --
class UnrecognizedClientException(SandboxError):
    """The request's access key is not one the server knows."""

    code = "UnrecognizedClientException"
    http_status = 403


class InvalidSignatureException(SandboxError):
    """The request's SigV4 signature does not match, or it has expired."""

    code = "InvalidSignatureException"
    http_status = 403


class IncompleteSignatureException(SandboxError):
    """The Authorization header is present but malformed (a missing part)."""

    code = "IncompleteSignatureException"
    http_status = 403


class MissingAuthenticationTokenException(SandboxError):
    """The request carries no Authorization header at all."""

    code = "MissingAuthenticationTokenException"
    http_status = 403


class UnsupportedMediaTypeException(SandboxError):
    """The request body's content type is not one the operation accepts."""

    code = "UnsupportedMediaTypeException"
    http_status = 415


class PreconditionFailedException(SandboxError):
    """The RevisionId given does not match the resource's current revision."""

    code = "PreconditionFailedException"
    http_status = 412


class UnknownOperationException(SandboxError):
    """No Lambda operation has the request's method and path."""

    code = "UnknownOperationException"
    http_status = 404


class NotImplementedOperationException(SandboxError):
    """A Lambda operation this build does not serve yet (its feature is not built)."""

    code = "NotImplementedException"
    http_status = 501
