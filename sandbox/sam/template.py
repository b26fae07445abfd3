"""SAM templates → functions and roles of a Runtime.

Supported: ``AWS::Serverless::Function`` (``FunctionName``, ``Handler``,
``Runtime`` python3.x, ``CodeUri`` (a local directory, relative to the
template), ``InlineCode``, ``MemorySize``, ``Timeout``, ``Description``,
``Environment.Variables``, ``Role`` or ``Policies`` (inline policy documents),
``ReservedConcurrentExecutions``, ``EventInvokeConfig`` and ``Events`` of type
SQS and Kinesis (translated into Lambda API requests by :mod:`.events`,
recorded in ``TemplateResult.requests`` and applied with the same mapping of
Lambda's parameters the HTTP API uses), ``AWS::SQS::Queue`` and
``AWS::Kinesis::Stream`` (created as the Runtime's built-in queues and
streams), ``AWS::IAM::Role`` (``AssumeRolePolicyDocument``, ``Policies``),
``Globals`` (``Function``), ``Parameters`` (``Default`` or overrides), and the
intrinsics ``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::Join``, ``Fn::Select``,
``Fn::Split``. A function's implicit role (no ``Role``) gets, as SAM gives
it, the permissions its event sources and destinations need.

Everything else present is named in a :class:`TemplateWarning`, never
dropped silently.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import constants as C
from ..errors import (
    EntityAlreadyExistsException,
    InvalidParameterValueException,
    ResourceConflictException,
    SandboxError,
)
from ..http.lambda_requests import (
    concurrency_argument,
    invoke_config_arguments,
    mapping_arguments,
)
from .events import concurrency_request, event_requests, invoke_config_request
from .loader import read_template

FUNCTION = "AWS::Serverless::Function"
ROLE = "AWS::IAM::Role"
LAMBDA_TRUST_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}

QUEUE = "AWS::SQS::Queue"
STREAM = "AWS::Kinesis::Stream"

FUNCTION_PROPERTIES = frozenset({
    "FunctionName", "Handler", "Runtime", "CodeUri", "InlineCode", "MemorySize", "Timeout",
    "Description", "Environment", "Role", "Policies", "ReservedConcurrentExecutions",
    "EventInvokeConfig", "Events"})
QUEUE_PROPERTIES = frozenset({"QueueName", "VisibilityTimeout", "MessageRetentionPeriod",
                              "RedrivePolicy"})
STREAM_PROPERTIES = frozenset({"Name", "ShardCount", "RetentionPeriodHours"})
_PYTHON_RUNTIME = re.compile(r"^python3\.\d+$")
_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


class TemplateWarning(UserWarning):
    """A template property or resource that is not applied (the message names it)."""


@dataclass
class TemplateResult:
    """What a template defined: function names by logical id, role ARNs by
    logical id, and the warnings given."""

    functions: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Lambda API requests (operation, parameters) made for the invocation-model
    # properties (Events, EventInvokeConfig, ReservedConcurrentExecutions), as applied.
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class _Template:
    def __init__(self, runtime: Any, document: dict[str, Any], base_dir: str,
                 parameters: Mapping[str, str] | None) -> None:
        self.runtime = runtime
        self.document = document
        self.base_dir = base_dir
        self.resources: dict[str, Any] = document["Resources"]
        self.result = TemplateResult()
        self.parameters = self._parameters(parameters or {})
        self.names: dict[str, str] = {}  # logical id → physical name

    # -- warnings ----------------------------------------------------------------------
    def warn(self, message: str) -> None:
        self.result.warnings.append(message)
        warnings.warn(message, TemplateWarning, stacklevel=4)

    # -- parameters and intrinsics --------------------------------------------------------
    def _parameters(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, spec in (self.document.get("Parameters") or {}).items():
            if name in overrides:
                values[name] = overrides[name]
            elif isinstance(spec, dict) and "Default" in spec:
                values[name] = spec["Default"]
            else:
                raise InvalidParameterValueException(
                    f"template parameter {name} has no Default and no value was given")
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise InvalidParameterValueException(
                f"parameter overrides name parameters the template does not have: "
                f"{', '.join(unknown)}")
        return values

    def _pseudo(self, name: str) -> Any:
        pseudo = {"AWS::Region": self.runtime.region, "AWS::AccountId": self.runtime.account_id,
                  "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
                  "AWS::StackName": "sandbox", "AWS::NoValue": None}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return self._physical(name)
        raise InvalidParameterValueException(f"template: Ref to unknown name {name!r}")

    def _physical(self, logical: str) -> str:
        resource = self.resources[logical]
        kind = resource.get("Type")
        if kind == FUNCTION:
            props = resource.get("Properties") or {}
            name = props.get("FunctionName", logical)
            return str(self.resolve(name)) if not isinstance(name, str) else name
        name_property = {QUEUE: "QueueName", STREAM: "Name"}.get(kind)
        if name_property is not None:
            name = (resource.get("Properties") or {}).get(name_property, logical)
            return str(self.resolve(name)) if not isinstance(name, str) else name
        return logical  # a role's name: the logical id

    def _get_att(self, logical: str, attribute: str) -> Any:
        resource = self.resources.get(logical)
        if resource is None:
            raise InvalidParameterValueException(f"template: GetAtt of unknown resource {logical}")
        kind = resource.get("Type")
        if attribute == "Arn" and kind == FUNCTION:
            return self.runtime.function_arn(self._physical(logical))
        if attribute == "Arn" and kind == ROLE:
            return f"arn:aws:iam::{self.runtime.account_id}:role/{self._physical(logical)}"
        if attribute == "Arn" and kind == QUEUE:
            return self.runtime.arns.queue(self._physical(logical))
        if attribute == "QueueName" and kind == QUEUE:
            return self._physical(logical)
        if attribute == "Arn" and kind == STREAM:
            return self.runtime.arns.stream(self._physical(logical))
        raise InvalidParameterValueException(
            f"template: GetAtt {logical}.{attribute} is not supported for {kind}")

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function evaluated."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self._pseudo(str(arg))
            if key == "Fn::GetAtt":
                parts = arg.split(".", 1) if isinstance(arg, str) else self.resolve(arg)
                return self._get_att(str(parts[0]), str(parts[1]))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                separator, items = self.resolve(arg)
                return str(separator).join(str(item) for item in items)
            if key == "Fn::Select":
                index, items = self.resolve(arg)
                return items[int(index)]
            if key == "Fn::Split":
                separator, text = self.resolve(arg)
                return str(text).split(str(separator))
            if key.startswith("Fn::") or key == "Condition":
                raise InvalidParameterValueException(
                    f"template: intrinsic function {key} is not supported")
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, variables = arg, {}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attribute = name.split(".", 1)
                return str(self._get_att(logical, attribute))
            return str(self._pseudo(name))

        return _SUB_VARIABLE.sub(substitute, str(text)).replace("${!", "${")

    # -- resources ---------------------------------------------------------------------
    def apply(self) -> TemplateResult:
        for section in sorted(set(self.document) - {"AWSTemplateFormatVersion", "Transform",
                                                    "Description", "Globals", "Parameters",
                                                    "Resources", "Outputs", "Metadata"}):
            self.warn(f"template section {section} is not supported and was ignored")
        globals_ = self.document.get("Globals") or {}
        for section in sorted(set(globals_) - {"Function"}):
            self.warn(f"Globals.{section} is not supported and was ignored")
        function_globals = globals_.get("Function") or {}
        queues = []
        for logical, resource in self.resources.items():
            kind = resource.get("Type") if isinstance(resource, dict) else None
            if kind == ROLE:
                self._role(logical, resource.get("Properties") or {})
            elif kind == QUEUE:
                queues.append((logical, self.resolve(dict(resource.get("Properties") or {}))))
            elif kind == STREAM:
                self._stream(logical, self.resolve(dict(resource.get("Properties") or {})))
            elif kind != FUNCTION:
                self.warn(f"resource {logical} of type {kind} is not supported and was ignored")
        # Dead-letter queues before the queues whose RedrivePolicy names them.
        for logical, props in sorted(queues, key=lambda item: "RedrivePolicy" in item[1]):
            self._queue(logical, props)
        for logical, resource in self.resources.items():
            if isinstance(resource, dict) and resource.get("Type") == FUNCTION:
                properties = merge_globals(function_globals, resource.get("Properties") or {})
                self._function(logical, properties)
        return self.result

    def _role(self, logical: str, properties: Mapping[str, Any]) -> None:
        props = self.resolve(dict(properties))
        name = props.get("RoleName", logical)
        trust = props.get("AssumeRolePolicyDocument")
        if trust is None:
            raise InvalidParameterValueException(
                f"resource {logical}: AssumeRolePolicyDocument is required")
        policies = [p["PolicyDocument"] for p in props.get("Policies") or []]
        for key in sorted(set(props) - {"RoleName", "AssumeRolePolicyDocument", "Policies"}):
            self.warn(f"resource {logical}: property {key} is not supported and was ignored")
        self.result.roles[logical] = self._put_role(name, trust, policies)

    def _queue(self, logical: str, props: Mapping[str, Any]) -> None:
        for key in sorted(set(props) - QUEUE_PROPERTIES):
            self.warn(f"resource {logical}: property {key} is not supported and was ignored")
        redrive = props.get("RedrivePolicy") or {}
        options: dict[str, Any] = {
            "visibility_timeout_s": _number(props.get("VisibilityTimeout",
                                                      C.QUEUE_VISIBILITY_TIMEOUT_DEFAULT_S), int),
            "message_retention_s": _number(props.get("MessageRetentionPeriod",
                                                     C.QUEUE_RETENTION_DEFAULT_S), int)}
        if redrive:
            options["dead_letter_queue"] = redrive.get("deadLetterTargetArn")
            options["max_receive_count"] = _number(redrive.get("maxReceiveCount"), int)
        name = self._physical(logical)
        try:
            self.runtime.create_queue(name, **options)
        except ResourceConflictException:
            self.warn(f"resource {logical}: queue {name} exists with other attributes; "
                      "it was kept as it is")
        except SandboxError as exc:
            raise InvalidParameterValueException(f"resource {logical}: {exc.message}") from None

    def _stream(self, logical: str, props: Mapping[str, Any]) -> None:
        for key in sorted(set(props) - STREAM_PROPERTIES):
            self.warn(f"resource {logical}: property {key} is not supported and was ignored")
        name = self._physical(logical)
        try:
            self.runtime.create_stream(
                name, _number(props.get("ShardCount", 1), int),
                _number(props.get("RetentionPeriodHours", C.STREAM_RETENTION_DEFAULT_H), int))
        except ResourceConflictException:
            pass  # applying the template again: the stream and its records stay
        except SandboxError as exc:
            raise InvalidParameterValueException(f"resource {logical}: {exc.message}") from None

    def _put_role(self, name: str, trust: Any, policies: list[Any]) -> str:
        try:
            return str(self.runtime.create_role(name, trust, policies))
        except EntityAlreadyExistsException:
            arn = f"arn:aws:iam::{self.runtime.account_id}:role/{name}"
            self.runtime.update_role(arn, trust, policies)
            return arn

    def _function(self, logical: str, properties: Mapping[str, Any]) -> None:
        props = self.resolve(dict(properties))
        name = props.get("FunctionName", logical)
        unsupported = sorted(set(props) - FUNCTION_PROPERTIES)
        if unsupported:
            self.warn(f"function {logical}: unsupported properties ignored: "
                      f"{', '.join(unsupported)}")
        runtime_name = props.get("Runtime")
        if runtime_name is not None and not _PYTHON_RUNTIME.match(str(runtime_name)):
            raise InvalidParameterValueException(
                f"function {logical}: Runtime must be python3.x, got {runtime_name!r}")
        handler = props.get("Handler")
        if not handler:
            raise InvalidParameterValueException(f"function {logical}: Handler is required")
        code = self._code(logical, name, props)
        requests = self._requests(logical, name, props)
        role = props.get("Role")
        if role is None:
            role = self._function_role(logical, props.get("Policies"), requests)
        elif props.get("Policies"):
            self.warn(f"function {logical}: Policies ignored because Role is given")
        environment = {k: _env_string(v) for k, v in
                       ((props.get("Environment") or {}).get("Variables") or {}).items()}
        config = {"handler": handler, "code": code,
                  "memory_mb": _number(props.get("MemorySize", C.DEFAULT_MEMORY_MB), int),
                  "timeout_s": _number(props.get("Timeout", C.DEFAULT_TIMEOUT_S), float),
                  "environment": environment, "description": props.get("Description", ""),
                  "role": role}
        if any(f["FunctionName"] == name for f in self.runtime.list_functions()):
            self.runtime.update_function(name, **config)
        else:
            self.runtime.create_function(name, **config)
        self.result.functions[logical] = name
        for operation, params in requests:
            try:
                self._apply_request(logical, name, operation, params)
            except SandboxError as exc:
                raise InvalidParameterValueException(
                    f"function {logical}: {operation}: {exc.message}") from None
        self.result.requests += requests

    def _apply_request(self, logical: str, name: str, operation: str,
                       params: Mapping[str, Any]) -> None:
        """One Lambda API request of the invocation model, made on the Runtime
        (a mapping that exists for the same function and source is updated)."""
        if operation == "PutFunctionConcurrency":
            self.runtime.put_function_concurrency(name, concurrency_argument(params))
        elif operation == "PutFunctionEventInvokeConfig":
            self.runtime.put_function_event_invoke_config(name, **invoke_config_arguments(params))
        elif operation == "CreateEventSourceMapping":
            source = params["EventSourceArn"]
            existing = self.runtime.list_event_source_mappings(name, source)
            options, unsupported = mapping_arguments(params, update=bool(existing))
            if unsupported:
                self.warn(f"function {logical}: event source {source}: unsupported properties "
                          f"ignored: {', '.join(unsupported)}")
            if existing:
                self.runtime.update_event_source_mapping(existing[0]["UUID"], **options)
            else:
                self.runtime.create_event_source_mapping(name, source, **options)
        else:  # pragma: no cover - events.py makes only the operations above
            raise InvalidParameterValueException(f"no such operation {operation}")

    def _requests(self, logical: str, name: str, props: Mapping[str, Any]
                  ) -> list[tuple[str, dict[str, Any]]]:
        """The invocation-model properties as Lambda API requests (warning
        about what they leave out)."""
        requests: list[tuple[str, dict[str, Any]]] = []
        notes: list[str] = []
        if "Events" in props:
            found, notes = event_requests(logical, name, props["Events"])
            requests += found
        if "EventInvokeConfig" in props:
            found, more = invoke_config_request(logical, name, props["EventInvokeConfig"])
            requests += found
            notes += more
        if "ReservedConcurrentExecutions" in props:
            requests += concurrency_request(name, props["ReservedConcurrentExecutions"])
        for note in notes:
            self.warn(note)
        return requests

    def _code(self, logical: str, name: str, props: Mapping[str, Any]) -> str:
        inline = props.get("InlineCode")
        if inline is not None:
            directory = os.path.join(self.runtime.state_dir, "packages", name, "inline")
            os.makedirs(directory, exist_ok=True)
            module = str(props["Handler"]).rsplit(".", 1)[0]
            with open(os.path.join(directory, f"{module}.py"), "w", encoding="utf-8") as file:
                file.write(str(inline))
            return directory
        code_uri = props.get("CodeUri", ".")
        if not isinstance(code_uri, str) or code_uri.startswith("s3://"):
            raise InvalidParameterValueException(
                f"function {logical}: CodeUri must be a local directory, got {code_uri!r}")
        directory = os.path.normpath(os.path.join(self.base_dir, code_uri))
        if not os.path.isdir(directory):
            raise InvalidParameterValueException(
                f"function {logical}: CodeUri {code_uri!r} is not a directory "
                f"(looked for {directory})")
        return directory

    def _function_role(self, logical: str, policies: Any,
                       requests: list[tuple[str, dict[str, Any]]]) -> str:
        """SAM's implicit role: Lambda may assume it; inline Policies apply, and
        (as SAM adds them) what its event sources and destinations need."""
        documents = []
        needed = _request_permissions(requests)
        if needed:
            documents.append({"Version": "2012-10-17", "Statement": needed})
        for policy in policies if isinstance(policies, list) else (
                [policies] if policies else []):
            if isinstance(policy, dict) and "Statement" in policy:
                documents.append({"Version": "2012-10-17", **policy})
            else:
                self.warn(f"function {logical}: policy {policy!r} is not supported (managed "
                          "policies and SAM policy templates are not); give a policy document")
        arn = self._put_role(f"{logical}Role", LAMBDA_TRUST_POLICY, documents)
        self.result.roles[f"{logical}Role"] = arn
        return arn


def _request_permissions(requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Statements allowing what the requests' sources and destinations need:
    SAM's SQSPollerPolicy / KinesisStreamReadPolicy and destination policies."""
    statements = []
    for operation, params in requests:
        targets: list[tuple[Any, str]] = []
        if operation == "CreateEventSourceMapping":
            targets.append((params["EventSourceArn"], "source"))
        destinations = params.get("DestinationConfig") or {}
        targets += [(d.get("Destination"), "destination") for d in destinations.values()
                    if isinstance(d, Mapping)]
        for arn, role in targets:
            service = arn.split(":")[2] if isinstance(arn, str) and arn.count(":") >= 5 else ""
            if role == "source" and service in ("sqs", "kinesis"):
                actions = list(C.QUEUE_MAPPING_ACTIONS if service == "sqs"
                               else C.STREAM_MAPPING_ACTIONS)
            elif role == "destination" and service in C.DESTINATION_ACTIONS:
                actions = [C.DESTINATION_ACTIONS[service]]
            else:
                continue
            statements.append({"Effect": "Allow", "Action": actions, "Resource": arn})
    return statements


def merge_globals(globals_: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: a function's own value wins for scalars, maps are
    merged (the function's keys win), lists are concatenated (Globals first)."""
    merged = copy.deepcopy(dict(globals_))
    for key, value in properties.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and not _intrinsic(value):
            merged[key] = merge_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = current + list(value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _intrinsic(value: Mapping[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)) in ("Ref", "Condition") or any(
        key.startswith("Fn::") for key in value)


def _number(value: Any, kind: type) -> Any:
    """A number from a template (parameters of type Number arrive as strings)."""
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            return value  # validation names the property and the value
    return value


def _env_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def apply_template(runtime: Any, path: str | os.PathLike[str],
                   parameters: Mapping[str, str] | None = None) -> TemplateResult:
    """Creates (or updates) the template's roles and functions in ``runtime``.

    Args:
        parameters: values for the template's Parameters (else their Default).
    Returns:
        What was defined, and the warnings (also issued as TemplateWarning).
    Raises:
        InvalidParameterValueException: naming the resource and property at fault.
    """
    document = read_template(path)
    base_dir = os.path.dirname(os.path.abspath(os.fspath(path)))
    return _Template(runtime, document, base_dir, parameters).apply()
