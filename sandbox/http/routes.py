"""The route table: Lambda's REST paths (botocore's service model) → operations.

Adding an operation is one :class:`Route` line here and one method on
:class:`~sandbox.http.operations.Operations`. Operations whose feature is not
built yet go in :data:`PENDING` and answer 501 NotImplementedException naming
the feature (none are left: the invocation model's operations, issue 4, are
served).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..constants import API_VERSION, SYNC_PAYLOAD_MAX, ZIP_UPLOAD_MAX
from .operations import Call, Operations, Reply

# Request bodies beyond these are refused before they are read: an invoke
# payload's quota, a base64-encoded zip upload (4/3 of its bytes) plus the
# JSON around it, and small documents for everything else.
INVOKE_BODY_MAX = SYNC_PAYLOAD_MAX
UPLOAD_BODY_MAX = ZIP_UPLOAD_MAX * 4 // 3 + 1024 * 1024
DOCUMENT_BODY_MAX = 1024 * 1024

_FN = f"/{API_VERSION}/functions/{{FunctionName}}"


@dataclass(frozen=True)
class Route:
    """One operation of the Lambda API.

    Attributes:
        method, path: as in the service model (aiohttp path syntax).
        operation: the service model's operation name.
        handler: the Operations method; None for a pending operation.
        action: the IAM action checked before the handler runs (None: the
            handler authorizes, as Invoke does through the Runtime).
        max_body: the largest request body accepted (RequestTooLargeException).
        pending: for an operation not built yet, the feature it waits for.
    """

    method: str
    path: str
    operation: str
    handler: Callable[[Operations, Call], Reply] | None
    action: str | None
    max_body: int = DOCUMENT_BODY_MAX
    pending: str | None = None


def _route(method: str, path: str, operation: str,
           handler: Callable[[Operations, Call], Reply] | None, *, authorize: bool = True,
           max_body: int = DOCUMENT_BODY_MAX) -> Route:
    return Route(method, path, operation, handler,
                 f"lambda:{operation}" if authorize else None, max_body)


_FUNCTION_ROUTES: tuple[Route, ...] = (
    _route("POST", f"{_FN}/invocations", "Invoke", Operations.invoke, authorize=False,
           max_body=INVOKE_BODY_MAX),
    _route("POST", f"/{API_VERSION}/functions", "CreateFunction", Operations.create_function,
           max_body=UPLOAD_BODY_MAX),
    _route("GET", f"/{API_VERSION}/functions", "ListFunctions", Operations.list_functions),
    _route("GET", _FN, "GetFunction", Operations.get_function),
    _route("GET", f"{_FN}/configuration", "GetFunctionConfiguration",
           Operations.get_function_configuration),
    _route("DELETE", _FN, "DeleteFunction", Operations.delete_function),
    _route("PUT", f"{_FN}/code", "UpdateFunctionCode", Operations.update_function_code,
           max_body=UPLOAD_BODY_MAX),
    _route("PUT", f"{_FN}/configuration", "UpdateFunctionConfiguration",
           Operations.update_function_configuration),
    _route("POST", f"{_FN}/policy", "AddPermission", Operations.add_permission),
    _route("DELETE", f"{_FN}/policy/{{StatementId}}", "RemovePermission",
           Operations.remove_permission),
    _route("GET", f"{_FN}/policy", "GetPolicy", Operations.get_policy),
)


_EIC = "/2019-09-25/functions/{FunctionName}/event-invoke-config"
_ESM = f"/{API_VERSION}/event-source-mappings"

# The invocation model (issue 4): reserved concurrency, asynchronous invocation
# configuration, event source mappings.
INVOCATION_MODEL_ROUTES: tuple[Route, ...] = (
    _route("PUT", "/2017-10-31/functions/{FunctionName}/concurrency",
           "PutFunctionConcurrency", Operations.put_function_concurrency),
    _route("GET", "/2019-09-30/functions/{FunctionName}/concurrency",
           "GetFunctionConcurrency", Operations.get_function_concurrency),
    _route("DELETE", "/2017-10-31/functions/{FunctionName}/concurrency",
           "DeleteFunctionConcurrency", Operations.delete_function_concurrency),
    _route("PUT", _EIC, "PutFunctionEventInvokeConfig",
           Operations.put_function_event_invoke_config),
    _route("POST", _EIC, "UpdateFunctionEventInvokeConfig",
           Operations.update_function_event_invoke_config),
    _route("GET", _EIC, "GetFunctionEventInvokeConfig",
           Operations.get_function_event_invoke_config),
    _route("DELETE", _EIC, "DeleteFunctionEventInvokeConfig",
           Operations.delete_function_event_invoke_config),
    _route("GET", f"{_EIC}/list", "ListFunctionEventInvokeConfigs",
           Operations.list_function_event_invoke_configs),
    _route("POST", _ESM, "CreateEventSourceMapping", Operations.create_event_source_mapping),
    _route("GET", _ESM, "ListEventSourceMappings", Operations.list_event_source_mappings),
    _route("GET", f"{_ESM}/{{UUID}}", "GetEventSourceMapping",
           Operations.get_event_source_mapping),
    _route("PUT", f"{_ESM}/{{UUID}}", "UpdateEventSourceMapping",
           Operations.update_event_source_mapping),
    _route("DELETE", f"{_ESM}/{{UUID}}", "DeleteEventSourceMapping",
           Operations.delete_event_source_mapping),
)


def _pending(method: str, path: str, operation: str, feature: str) -> Route:
    return Route(method, path, operation, None, f"lambda:{operation}", pending=feature)


# Operations whose feature is not built yet (each answers 501 naming it); empty
# since issue 4 landed. Entries are made with _pending(method, path, operation, feature).
PENDING: tuple[Route, ...] = ()

ROUTES: tuple[Route, ...] = _FUNCTION_ROUTES + INVOCATION_MODEL_ROUTES
