"""SAM templates → functions and roles of a Runtime.

Supported: ``AWS::Serverless::Function`` (``FunctionName``, ``Handler``,
``Runtime`` python3.x, ``CodeUri`` (a local directory, relative to the
template), ``InlineCode``, ``MemorySize``, ``Timeout``, ``Description``,
``Environment.Variables``, ``Role`` or ``Policies`` (inline policy documents)),
``AWS::IAM::Role`` (``AssumeRolePolicyDocument``, ``Policies``), ``Globals``
(``Function``), ``Parameters`` (``Default`` or overrides), and the intrinsics
``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::Join``, ``Fn::Select``,
``Fn::Split``.

Everything else present is named in a :class:`TemplateWarning`, never
dropped silently. The properties that need the asynchronous invocation
model (``ReservedConcurrentExecutions``, ``EventInvokeConfig``, ``Events`` of
type SQS/Kinesis, queue and stream resources) are in :data:`PENDING_PROPERTIES`
and :data:`PENDING_RESOURCES`, each warned about with the feature it waits
for; the properties are translated into Lambda API requests
(``TemplateResult.requests``, :mod:`.events`) that the Runtime applies once
it has those operations.
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
from ..errors import EntityAlreadyExistsException, InvalidParameterValueException
from .events import concurrency_request, event_requests, invoke_config_request
from .loader import read_template

FUNCTION = "AWS::Serverless::Function"
ROLE = "AWS::IAM::Role"
LAMBDA_TRUST_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}

FUNCTION_PROPERTIES = frozenset({
    "FunctionName", "Handler", "Runtime", "CodeUri", "InlineCode", "MemorySize", "Timeout",
    "Description", "Environment", "Role", "Policies"})
# Properties understood but not applied in this build, and what they wait for.
PENDING_PROPERTIES = {
    "ReservedConcurrentExecutions": "reserved concurrency (issue 4)",
    "EventInvokeConfig": "asynchronous invocation (issue 4)",
    "Events": "event source mappings (issue 4)",
}
PENDING_RESOURCES = {
    "AWS::SQS::Queue": "built-in queues (issue 4)",
    "AWS::Kinesis::Stream": "built-in streams (issue 4)",
}
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
    # Lambda API requests (operation, parameters) for the asynchronous-model
    # properties, not applied until the Runtime has those operations (issue 4).
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
        return logical  # a role's name, a queue's name: the logical id

    def _get_att(self, logical: str, attribute: str) -> Any:
        resource = self.resources.get(logical)
        if resource is None:
            raise InvalidParameterValueException(f"template: GetAtt of unknown resource {logical}")
        kind = resource.get("Type")
        if attribute == "Arn" and kind == FUNCTION:
            return self.runtime.function_arn(self._physical(logical))
        if attribute == "Arn" and kind == ROLE:
            return f"arn:aws:iam::{self.runtime.account_id}:role/{self._physical(logical)}"
        if attribute == "Arn" and kind == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{self.runtime.region}:{self.runtime.account_id}:{logical}"
        if attribute == "Arn" and kind == "AWS::Kinesis::Stream":
            return (f"arn:aws:kinesis:{self.runtime.region}:{self.runtime.account_id}:"
                    f"stream/{logical}")
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
        for logical, resource in self.resources.items():
            kind = resource.get("Type") if isinstance(resource, dict) else None
            if kind == ROLE:
                self._role(logical, resource.get("Properties") or {})
            elif kind in PENDING_RESOURCES:
                self.warn(f"resource {logical} ({kind}) was not created: it needs "
                          f"{PENDING_RESOURCES[kind]}")
            elif kind != FUNCTION:
                self.warn(f"resource {logical} of type {kind} is not supported and was ignored")
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
        for key in sorted(set(props) & set(PENDING_PROPERTIES)):
            self.warn(f"function {logical}: {key} is not applied in this version: it needs "
                      f"{PENDING_PROPERTIES[key]}")
        unsupported = sorted(set(props) - FUNCTION_PROPERTIES - set(PENDING_PROPERTIES))
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
        role = props.get("Role")
        if role is None:
            role = self._function_role(logical, props.get("Policies"))
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
        self._pending_requests(logical, name, props)

    def _pending_requests(self, logical: str, name: str, props: Mapping[str, Any]) -> None:
        """The asynchronous-model properties as Lambda API requests (recorded,
        not applied in this build)."""
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
        self.result.requests += requests

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

    def _function_role(self, logical: str, policies: Any) -> str:
        """SAM's implicit role: Lambda may assume it; inline Policies apply."""
        documents = []
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
