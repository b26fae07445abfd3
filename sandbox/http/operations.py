"""The Lambda API's operations over a Runtime, transport-free.

Each operation takes a :class:`Call` (path parameters, query, headers, body,
the authenticated caller) and returns a :class:`Reply`; the shapes, paths and
status codes follow botocore's service model of Lambda
(``botocore/data/lambda/2015-03-31/service-2.json``). The route table that
binds them to HTTP is in :mod:`sandbox.http.routes`; the server in
:mod:`sandbox.http.server`. Operations run on worker threads: they may block.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import constants as C
from ..errors import (
    EntityAlreadyExistsException,
    InvalidParameterValueException,
    InvalidRequestContentException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    SandboxError,
)
from ..iam import ROLE_NOT_ASSUMABLE
from .deployment import remove_unused, resolve_code
from .lambda_requests import (
    concurrency_argument,
    invoke_config_arguments,
    invoke_config_shape,
    mapping_arguments,
    mapping_shape,
)
from .metrics import Metrics

log = logging.getLogger("sandbox.http")

# The trust policy of a role created for an unknown Role ARN: Lambda may
# assume it, and it allows nothing else.
LAMBDA_TRUST_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}
_ROLE_ARN = re.compile(r"^arn:aws:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})$")
# A function reference: name, name:qualifier, account:function:name[:qualifier],
# or the full ARN (Lambda accepts each wherever FunctionName goes).
_FUNCTION_REF = re.compile(
    r"^(?:arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):)?(?:(?P<account>\d{12}):function:)?"
    r"(?P<name>[A-Za-z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?$")
_PYTHON_RUNTIME = re.compile(r"^python3\.\d+$")
LIST_MAX_ITEMS = 10_000  # ListFunctions' MaxItems range is 1-10,000 (Lambda API reference)
LIST_DEFAULT_ITEMS = 50
# ListEventSourceMappings: MaxItems 1-10,000, 100 by default; ListFunctionEventInvokeConfigs:
# 1-50, 50 by default (Lambda API reference).
MAPPINGS_DEFAULT_ITEMS = 100
INVOKE_CONFIGS_MAX_ITEMS = 50

# What the server does with each property of CreateFunction and
# UpdateFunctionConfiguration; any other property present is named in a warning.
CREATE_PROPERTIES = frozenset({"FunctionName", "Runtime", "Role", "Handler", "Code",
                               "Description", "Timeout", "MemorySize", "Environment",
                               "PackageType", "Architectures"})
UPDATE_PROPERTIES = frozenset({"Runtime", "Role", "Handler", "Description", "Timeout",
                               "MemorySize", "Environment", "RevisionId"})


@dataclass
class Call:
    """One request, as an operation sees it."""

    params: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    caller: str | None = None  # the authenticated principal's ARN; None: the account root
    request_context: Mapping[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (an empty body is ``{}``).

        Raises:
            InvalidRequestContentException: not a JSON object.
        """
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise InvalidRequestContentException(
                f"Could not parse request body into json: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidRequestContentException("The request body must be a JSON object")
        return value


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any) -> Reply:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json"})


def function_ref(value: str, account_id: str) -> tuple[str, str | None]:
    """A FunctionName parameter as (name, qualifier).

    Raises:
        InvalidParameterValueException: not a name or function ARN.
        ResourceNotFoundException: an ARN of another account.
    """
    match = _FUNCTION_REF.match(value or "")
    if match is None:
        raise InvalidParameterValueException(
            f"1 validation error detected: Value '{value}' at 'functionName' failed to satisfy "
            "constraint: Member must be a function name or function ARN")
    if match["account"] is not None and match["account"] != account_id:
        raise ResourceNotFoundException(f"Function not found: {value}")
    return match["name"], match["qualifier"]


def _shape(config: dict[str, Any]) -> dict[str, Any]:
    """A FunctionConfiguration as the API returns it (Timeout is an integer there)."""
    config = dict(config)
    timeout = config.get("Timeout")
    if isinstance(timeout, float) and timeout.is_integer():
        config["Timeout"] = int(timeout)
    return config


def _warn_unsupported(operation: str, function: str, body: Mapping[str, Any],
                      supported: frozenset[str]) -> list[str]:
    ignored = sorted(key for key, value in body.items()
                     if key not in supported and value not in (None, [], {}, False))
    if ignored:
        log.warning("%s %s: ignoring unsupported properties: %s", operation, function,
                    ", ".join(ignored))
    return ignored


class Operations:
    """The operations of one served Runtime.

    Args:
        runtime: the :class:`sandbox.Runtime`.
        metrics: where invocations are counted.
        strict_roles: refuse a Role ARN that names no defined role (as Lambda
            does) instead of creating a role without permissions.
    """

    def __init__(self, runtime: Any, metrics: Metrics, strict_roles: bool = False) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.strict_roles = strict_roles
        self.packages_dir = os.path.join(runtime.state_dir, "packages")

    # -- helpers ---------------------------------------------------------------------
    def function(self, call: Call) -> tuple[str, str | None]:
        """The function and qualifier a call names (path, then ?Qualifier=)."""
        name, qualifier = function_ref(call.params["FunctionName"], self.runtime.account_id)
        query_qualifier = call.query.get("Qualifier")
        if query_qualifier and qualifier and query_qualifier != qualifier:
            raise InvalidParameterValueException(
                "The derived qualifier from the function name does not match the specified "
                "qualifier.")
        return name, query_qualifier or qualifier

    def _latest_only(self, name: str, qualifier: str | None) -> None:
        if qualifier not in (None, C.LATEST_VERSION):
            raise ResourceNotFoundException(
                f"Function not found: {self.runtime.function_arn(name)}:{qualifier} "
                f"(only {C.LATEST_VERSION} exists)")

    def _check_revision(self, expected: str | None, current: str) -> None:
        if expected is not None and expected != current:
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. Call the "
                "GetFunction/GetAlias API to retrieve the latest Revision Id")

    def _packages(self, name: str) -> str:
        return os.path.join(self.packages_dir, name)

    def resolve_role(self, role_arn: Any, function: str) -> str | None:
        """The execution role for a function: a defined role, or (unless
        strict) a new role with Lambda's trust policy and no permissions.

        Raises:
            InvalidParameterValueException: strict and the role is not
                defined; or the ARN is not a role of this account.
        """
        if role_arn is None:
            return None
        if not isinstance(role_arn, str):
            raise InvalidParameterValueException("Role must be a role ARN string")
        registry = self.runtime._authorizer.registry
        if registry.find_role(role_arn) is not None:
            return role_arn
        if self.strict_roles:
            raise InvalidParameterValueException(
                f"{ROLE_NOT_ASSUMABLE} (no role {role_arn} is defined; define it with "
                "Runtime.create_role, a template or `sandbox roles create`)")
        match = _ROLE_ARN.match(role_arn)
        if match is None or match.group(1) != self.runtime.account_id:
            raise InvalidParameterValueException(
                f"Role must be the ARN of a role in account {self.runtime.account_id} "
                f"(arn:aws:iam::{self.runtime.account_id}:role/NAME), got {role_arn!r}")
        try:
            created = self.runtime.create_role(match.group(2), LAMBDA_TRUST_POLICY, [])
        except EntityAlreadyExistsException:
            created = f"arn:aws:iam::{self.runtime.account_id}:role/{match.group(2)}"
        log.warning("function %s: role %s was not defined; created %s that Lambda may assume "
                    "and that allows nothing else (--strict-roles refuses instead)",
                    function, role_arn, created)
        return str(created)

    # -- Invoke -----------------------------------------------------------------------
    def invoke(self, call: Call) -> Reply:
        name, qualifier = self.function(call)
        invocation_type = call.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        log_type = call.headers.get("X-Amz-Log-Type") or "None"
        if log_type not in ("None", "Tail"):
            raise InvalidParameterValueException(
                f"X-Amz-Log-Type must be None or Tail, got {log_type!r}")
        client_context = _client_context(call.headers.get("X-Amz-Client-Context"))
        try:
            result = self.runtime.invoke(
                name, call.body, invocation_type, client_context=client_context,
                qualifier=qualifier, caller=call.caller, request_context=call.request_context)
        except ResourceNotFoundException:
            raise  # not counted: there is no such function to label
        except SandboxError as exc:
            self.metrics.record_invocation(name, invocation_type, error_code=exc.code)
            raise
        self.metrics.record_invocation(name, invocation_type, result.report,
                                       result.function_error)
        headers = {"X-Amzn-RequestId": result.request_id}
        if result.executed_version:
            headers["X-Amz-Executed-Version"] = result.executed_version
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        if log_type == "Tail" and invocation_type == "RequestResponse":
            tail = result.log_tail.encode()[-C.LOG_TAIL_BYTES:]
            headers["X-Amz-Log-Result"] = base64.b64encode(tail).decode()
        if result.status_code != 200:
            return Reply(result.status_code, b"", headers)
        headers["Content-Type"] = "application/json"
        return Reply(200, result.raw_payload, headers)

    # -- functions ---------------------------------------------------------------------
    def create_function(self, call: Call) -> Reply:
        body = call.json()
        name, _ = function_ref(str(body.get("FunctionName", "")), self.runtime.account_id)
        _check_runtime(body.get("Runtime"))
        if body.get("PackageType", "Zip") != "Zip":
            raise InvalidParameterValueException(
                f"PackageType must be Zip (container images are not supported), got "
                f"{body.get('PackageType')!r}")
        _warn_unsupported("CreateFunction", name, body, CREATE_PROPERTIES)
        if body.get("Publish"):
            log.warning("CreateFunction %s: Publish ignored, only $LATEST exists", name)
        role = self.resolve_role(body.get("Role"), name)
        code = resolve_code(body.get("Code") or {}, self._packages(name))
        try:
            config = self.runtime.create_function(
                name, handler=body.get("Handler"), code=code,
                memory_mb=body.get("MemorySize", C.DEFAULT_MEMORY_MB),
                timeout_s=body.get("Timeout", C.DEFAULT_TIMEOUT_S),
                environment=(body.get("Environment") or {}).get("Variables"),
                description=body.get("Description", ""), role=role)
        except BaseException:
            if code.startswith(self._packages(name) + os.sep):
                remove_unused(self._packages(name), set())
            raise
        return Reply.json(201, _shape(config))

    def get_function(self, call: Call) -> Reply:
        name, qualifier = self.function(call)
        self._latest_only(name, qualifier)
        config = self.runtime.get_function(name)
        # Lambda answers with a presigned S3 URL; here the code is a local directory.
        reply: dict[str, Any] = {"Configuration": _shape(config),
                                 "Code": {"RepositoryType": "Local",
                                          "Location": config.get("CodeUri", "")}}
        concurrency = self.runtime.get_function_concurrency(name)
        if concurrency:  # Lambda leaves Concurrency out when nothing is reserved
            reply["Concurrency"] = concurrency
        return Reply.json(200, reply)

    def get_function_configuration(self, call: Call) -> Reply:
        name, qualifier = self.function(call)
        self._latest_only(name, qualifier)
        return Reply.json(200, _shape(self.runtime.get_function(name)))

    def list_functions(self, call: Call) -> Reply:
        max_items = _max_items(call, LIST_DEFAULT_ITEMS, LIST_MAX_ITEMS)
        marker = call.query.get("Marker")
        functions = [_shape(f) for f in self.runtime.list_functions()]  # sorted by name
        if marker:
            functions = [f for f in functions if f["FunctionName"] > marker]
        page = functions[:max_items]
        reply: dict[str, Any] = {"Functions": page}
        if len(functions) > max_items:
            reply["NextMarker"] = page[-1]["FunctionName"]
        return Reply.json(200, reply)

    def delete_function(self, call: Call) -> Reply:
        name, qualifier = self.function(call)
        self._latest_only(name, qualifier)
        self.runtime.delete_function(name)
        remove_unused(self._packages(name), set())
        return Reply(204)

    def update_function_code(self, call: Call) -> Reply:
        name, _ = self.function(call)
        body = call.json()
        current = self.runtime.get_function(name)
        self._check_revision(body.get("RevisionId"), current["RevisionId"])
        if body.get("Publish"):
            log.warning("UpdateFunctionCode %s: Publish ignored, only $LATEST exists", name)
        code = resolve_code(body, self._packages(name))
        if body.get("DryRun"):
            if code.startswith(self._packages(name) + os.sep):
                remove_unused(self._packages(name), {current["CodeUri"]})
            return Reply.json(200, _shape(current))
        config = self.runtime.update_function(name, code=code)
        # The replaced package stays while invocations that started on it finish.
        remove_unused(self._packages(name), {code, current["CodeUri"]})
        return Reply.json(200, _shape(config))

    def update_function_configuration(self, call: Call) -> Reply:
        name, _ = self.function(call)
        body = call.json()
        current = self.runtime.get_function(name)
        self._check_revision(body.get("RevisionId"), current["RevisionId"])
        _warn_unsupported("UpdateFunctionConfiguration", name, body, UPDATE_PROPERTIES)
        changes: dict[str, Any] = {}
        if "Runtime" in body:
            _check_runtime(body["Runtime"])
        for key, change in (("Handler", "handler"), ("Description", "description"),
                            ("Timeout", "timeout_s"), ("MemorySize", "memory_mb")):
            if key in body:
                changes[change] = body[key]
        if "Environment" in body:
            changes["environment"] = (body["Environment"] or {}).get("Variables") or {}
        if "Role" in body:
            changes["role"] = self.resolve_role(body["Role"], name)
        config = self.runtime.update_function(name, **changes)
        return Reply.json(200, _shape(config))

    # -- permissions ------------------------------------------------------------------
    def add_permission(self, call: Call) -> Reply:
        name, qualifier = self.function(call)
        self._latest_only(name, qualifier)
        body = call.json()
        for required in ("StatementId", "Action", "Principal"):
            if not body.get(required):
                raise InvalidParameterValueException(f"{required} is required")
        if body.get("RevisionId") is not None:
            self._check_revision(body["RevisionId"], self._policy_revision(name))
        if body.get("EventSourceToken") or body.get("FunctionUrlAuthType"):
            raise InvalidParameterValueException(
                "EventSourceToken and FunctionUrlAuthType are not supported (no function URLs)")
        statement = self.runtime.add_permission(
            name, body["StatementId"], body["Action"], body["Principal"],
            source_arn=body.get("SourceArn"), source_account=body.get("SourceAccount"),
            principal_org_id=body.get("PrincipalOrgID"))
        return Reply.json(201, statement)

    def remove_permission(self, call: Call) -> Reply:
        name, qualifier = self.function(call)
        self._latest_only(name, qualifier)
        if call.query.get("RevisionId") is not None:
            self._check_revision(call.query["RevisionId"], self._policy_revision(name))
        self.runtime.remove_permission(name, call.params["StatementId"])
        return Reply(204)

    def get_policy(self, call: Call) -> Reply:
        name, qualifier = self.function(call)
        self._latest_only(name, qualifier)
        return Reply.json(200, self.runtime.get_policy(name))

    # -- reserved concurrency ----------------------------------------------------------
    def _unqualified(self, call: Call) -> str:
        name, qualifier = self.function(call)
        if qualifier is not None:
            raise InvalidParameterValueException(
                "This operation takes an unqualified function name or ARN, got "
                f"{call.params['FunctionName']!r}")
        return name

    def put_function_concurrency(self, call: Call) -> Reply:
        name = self._unqualified(call)
        reserved = concurrency_argument(call.json())
        return Reply.json(200, self.runtime.put_function_concurrency(name, reserved))

    def get_function_concurrency(self, call: Call) -> Reply:
        return Reply.json(200, self.runtime.get_function_concurrency(self._unqualified(call)))

    def delete_function_concurrency(self, call: Call) -> Reply:
        self.runtime.delete_function_concurrency(self._unqualified(call))
        return Reply(204)

    # -- asynchronous invocation configuration ---------------------------------------------
    def _latest(self, call: Call) -> str:
        name, qualifier = self.function(call)
        self._latest_only(name, qualifier)
        return name

    def put_function_event_invoke_config(self, call: Call) -> Reply:
        name = self._latest(call)
        record = self.runtime.put_function_event_invoke_config(
            name, **invoke_config_arguments(call.json()))
        return Reply.json(200, invoke_config_shape(record))

    def update_function_event_invoke_config(self, call: Call) -> Reply:
        name = self._latest(call)
        body = call.json()
        if all(body.get(key) is None for key in ("MaximumRetryAttempts",
                                                 "MaximumEventAgeInSeconds",
                                                 "DestinationConfig")):
            raise InvalidParameterValueException(
                "You must specify at least one of error handling or destination setting.")
        # Lambda updates an existing configuration only (ResourceNotFoundException otherwise).
        current = self.runtime.get_function_event_invoke_config(name)
        record = self.runtime.put_function_event_invoke_config(
            name, **invoke_config_arguments(body, current))
        return Reply.json(200, invoke_config_shape(record))

    def get_function_event_invoke_config(self, call: Call) -> Reply:
        record = self.runtime.get_function_event_invoke_config(self._latest(call))
        return Reply.json(200, invoke_config_shape(record))

    def delete_function_event_invoke_config(self, call: Call) -> Reply:
        self.runtime.delete_function_event_invoke_config(self._latest(call))
        return Reply(204)

    def list_function_event_invoke_configs(self, call: Call) -> Reply:
        name = self._unqualified(call)
        try:  # only $LATEST exists, so a function has at most one
            configs = [invoke_config_shape(self.runtime.get_function_event_invoke_config(name))]
        except ResourceNotFoundException:
            self.runtime.get_function(name)
            configs = []
        page, next_marker = _page(configs, call, INVOKE_CONFIGS_MAX_ITEMS,
                                  INVOKE_CONFIGS_MAX_ITEMS)
        reply: dict[str, Any] = {"FunctionEventInvokeConfigs": page}
        if next_marker:
            reply["NextMarker"] = next_marker
        return Reply.json(200, reply)

    # -- event source mappings ---------------------------------------------------------
    def _mapping(self, record: dict[str, Any]) -> dict[str, Any]:
        return mapping_shape(record, self.runtime.region, self.runtime.account_id)

    def _mapped_function(self, value: Any) -> str:
        name, qualifier = function_ref(str(value or ""), self.runtime.account_id)
        self._latest_only(name, qualifier)
        self.runtime.get_function(name)  # ResourceNotFoundException before the source's errors
        return name

    def create_event_source_mapping(self, call: Call) -> Reply:
        body = call.json()
        source = body.get("EventSourceArn")
        if not isinstance(source, str) or not source:
            raise InvalidParameterValueException(
                "EventSourceArn is required (the ARN of a queue or stream of this runtime)")
        name = self._mapped_function(body.get("FunctionName"))
        options, unsupported = mapping_arguments(body)
        if unsupported:
            raise InvalidParameterValueException(
                f"CreateEventSourceMapping: not supported by this runtime: "
                f"{', '.join(unsupported)}")
        for existing in self.runtime.list_event_source_mappings(name, source):
            raise ResourceConflictException(
                f"An event source mapping with event source ({source}) and function "
                f"({existing['FunctionArn']}) already exists. Please update or delete the "
                f"existing mapping with UUID {existing['UUID']}")
        try:
            uuid = self.runtime.create_event_source_mapping(name, source, **options)
        except ResourceNotFoundException as exc:  # the queue or stream: a bad parameter
            raise InvalidParameterValueException(
                f"EventSourceArn {source}: {exc.message}") from None
        return Reply.json(202, self._mapping(self.runtime.get_event_source_mapping(uuid)))

    def get_event_source_mapping(self, call: Call) -> Reply:
        return Reply.json(200, self._mapping(
            self.runtime.get_event_source_mapping(call.params["UUID"])))

    def list_event_source_mappings(self, call: Call) -> Reply:
        function = call.query.get("FunctionName")
        name = None
        if function:
            name, qualifier = function_ref(function, self.runtime.account_id)
            self._latest_only(name, qualifier)
        mappings = [self._mapping(record) for record in self.runtime.list_event_source_mappings(
            name, call.query.get("EventSourceArn") or None)]
        page, next_marker = _page(mappings, call, MAPPINGS_DEFAULT_ITEMS, LIST_MAX_ITEMS)
        reply: dict[str, Any] = {"EventSourceMappings": page}
        if next_marker:
            reply["NextMarker"] = next_marker
        return Reply.json(200, reply)

    def update_event_source_mapping(self, call: Call) -> Reply:
        body = call.json()
        uuid = call.params["UUID"]
        self.runtime.get_event_source_mapping(uuid)  # an unknown UUID first
        options, unsupported = mapping_arguments(body, update=True)
        if unsupported:
            raise InvalidParameterValueException(
                f"UpdateEventSourceMapping: not supported by this runtime: "
                f"{', '.join(unsupported)}")
        if body.get("FunctionName"):
            options["function"] = self._mapped_function(body["FunctionName"])
        record = self.runtime.update_event_source_mapping(uuid, **options)
        return Reply.json(202, self._mapping(record))

    def delete_event_source_mapping(self, call: Call) -> Reply:
        record = self.runtime.delete_event_source_mapping(call.params["UUID"])
        return Reply.json(202, self._mapping(record))

    def _policy_revision(self, name: str) -> str:
        try:
            return str(self.runtime.get_policy(name)["RevisionId"])
        except ResourceNotFoundException:
            return ""


def _max_items(call: Call, default: int, maximum: int) -> int:
    try:
        max_items = int(call.query.get("MaxItems", default))
    except ValueError:
        max_items = 0
    if not 1 <= max_items <= maximum:
        raise InvalidParameterValueException(
            f"MaxItems must be 1-{maximum}, got {call.query.get('MaxItems')!r}")
    return max_items


def _page(items: list[Any], call: Call, default: int, maximum: int) -> tuple[list[Any], str | None]:
    """One page of ``items`` after ?Marker= (an offset this server handed out),
    and the NextMarker (None on the last page)."""
    max_items = _max_items(call, default, maximum)
    marker = call.query.get("Marker") or "0"
    if not marker.isdigit():
        raise InvalidParameterValueException(f"Marker {marker!r} was not given by this server")
    start = int(marker)
    end = start + max_items
    return items[start:end], (str(end) if end < len(items) else None)


def _check_runtime(runtime: Any) -> None:
    if runtime is not None and not (isinstance(runtime, str) and _PYTHON_RUNTIME.match(runtime)):
        raise InvalidParameterValueException(
            f"Runtime must be python3.x (this runtime runs Python {C.RUNTIME_NAME[6:]} "
            f"handlers), got {runtime!r}")


def _client_context(header: str | None) -> dict[str, Any] | None:
    """X-Amz-Client-Context: base64 of a JSON object, at most 3,583 bytes."""
    if not header:
        return None
    if len(header) > C.CLIENT_CONTEXT_MAX:
        raise InvalidParameterValueException(
            f"Client context must be at most {C.CLIENT_CONTEXT_MAX} bytes, got {len(header)}")
    try:
        value = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        raise InvalidRequestContentException(
            "Client context must be a valid Base64-encoded JSON object.") from None
    if not isinstance(value, dict):
        raise InvalidRequestContentException(
            "Client context must be a valid Base64-encoded JSON object.")
    return value
