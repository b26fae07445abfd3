"""Function configuration: validation with Lambda's rules, and its Lambda shape."""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .constants import (
    ENVIRONMENT_MAX_BYTES,
    FUNCTION_NAME_MAX,
    HANDLER_MAX,
    LATEST_VERSION,
    MEMORY_MB_MAX,
    MEMORY_MB_MIN,
    RESERVED_ENVIRONMENT_KEYS,
    RUNTIME_NAME,
    TIMEOUT_S_MAX,
    TIMEOUT_S_MIN,
)
from .errors import InvalidParameterValueException

START_KINDS = ("snapshot", "cold")
NETWORK_MODES = ("none", "host")

_NAME = re.compile(rf"^[A-Za-z0-9_-]{{1,{FUNCTION_NAME_MAX}}}$")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
# module path (dots or slashes between identifiers), a dot, the function name
_HANDLER = re.compile(rf"^{_IDENTIFIER}(?:[./]{_IDENTIFIER})*\.{_IDENTIFIER}$")
_ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]+$")
_MODULE = re.compile(rf"^{_IDENTIFIER}(?:\.{_IDENTIFIER})*$")
PRELOAD_MAX = 64


@dataclasses.dataclass(frozen=True)
class FunctionConfig:
    """One function's configuration ($LATEST). Build it with :func:`validate`."""

    name: str
    handler: str
    code: str
    memory_mb: int
    timeout_s: float
    environment: Mapping[str, str]
    start: str
    description: str
    revision_id: str
    last_modified: str
    network: str = "none"
    role: str | None = None  # the execution role's ARN (sandbox/iam)
    # Packages its INIT imports, held by a zygote-tree node it may fork from.
    preload: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["environment"] = dict(self.environment)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FunctionConfig:
        return cls(**dict(record, preload=tuple(record.get("preload") or ())))

    def to_lambda(self, arn: str) -> dict[str, Any]:
        """The FunctionConfiguration shape of Lambda's GetFunction/ListFunctions."""
        return {
            "FunctionName": self.name,
            "FunctionArn": arn,
            "Runtime": RUNTIME_NAME,
            "Handler": self.handler,
            "CodeUri": self.code,
            "Description": self.description,
            "Timeout": self.timeout_s,
            "MemorySize": self.memory_mb,
            "Environment": {"Variables": dict(self.environment)},
            "LastModified": self.last_modified,
            "RevisionId": self.revision_id,
            "Version": LATEST_VERSION,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": [os.uname().machine.replace("aarch64", "arm64")],
            "StartKind": self.start,
            "Network": self.network,
            **({"Role": self.role} if self.role is not None else {}),
            **({"Preload": list(self.preload)} if self.preload else {}),
        }


def _fail(message: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(message)


def validate_preload(preload: Sequence[str] | None) -> tuple[str, ...]:
    """Module names, sorted and without repeats."""
    if preload is None:
        return ()
    if isinstance(preload, str) or not isinstance(preload, Sequence):
        raise _fail(f"preload must be a list of module names, got {preload!r}")
    if len(preload) > PRELOAD_MAX:
        raise _fail(f"preload names at most {PRELOAD_MAX} modules, got {len(preload)}")
    for module in preload:
        if not isinstance(module, str) or not _MODULE.match(module):
            raise _fail(f"preload entries must be module names like 'json' or "
                        f"'xml.etree.ElementTree', got {module!r}")
    return tuple(sorted(set(preload)))


def validate(
    name: str,
    handler: str,
    code: str | os.PathLike[str],
    memory_mb: int,
    timeout_s: float,
    environment: Mapping[str, str] | None,
    start: str,
    description: str = "",
    network: str = "none",
    role: str | None = None,
    preload: Sequence[str] | None = None,
) -> FunctionConfig:
    """Checks a configuration the way CreateFunction does (``preload``, the
    packages its INIT imports, is this runtime's own).

    Raises:
        InvalidParameterValueException: naming the parameter, the rule and the value.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(f"function name must be 1-{FUNCTION_NAME_MAX} characters of letters, "
                    f"digits, hyphens and underscores, got {name!r}")
    if not isinstance(handler, str) or len(handler) > HANDLER_MAX or not _HANDLER.match(handler):
        raise _fail(f"handler must look like 'module.function' (or 'package/module.function'), "
                    f"at most {HANDLER_MAX} characters, got {handler!r}")
    code_dir = os.path.abspath(os.fspath(code))
    if not os.path.isdir(code_dir):
        raise _fail(f"code must be an existing directory, got {os.fspath(code)!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not (
        MEMORY_MB_MIN <= memory_mb <= MEMORY_MB_MAX
    ):
        raise _fail(f"memory_mb must be an integer {MEMORY_MB_MIN}-{MEMORY_MB_MAX}, "
                    f"got {memory_mb!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not (
        TIMEOUT_S_MIN <= timeout_s <= TIMEOUT_S_MAX
    ):
        raise _fail(f"timeout_s must be {TIMEOUT_S_MIN:g}-{TIMEOUT_S_MAX:g} seconds, "
                    f"got {timeout_s!r}")
    env = dict(environment or {})
    size = 0
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise _fail(f"environment variable names must match [a-zA-Z][a-zA-Z0-9_]+, "
                        f"got {key!r}")
        if not isinstance(value, str):
            raise _fail(f"environment variable {key} must be a string, got {type(value).__name__}")
        size += len(key.encode()) + len(value.encode())
    reserved = sorted(set(env) & RESERVED_ENVIRONMENT_KEYS)
    if reserved:
        raise _fail("environment variables contain reserved keys that are currently not "
                    f"supported for modification: {', '.join(reserved)}")
    if size > ENVIRONMENT_MAX_BYTES:
        raise _fail(f"environment variables total {size} bytes, limit {ENVIRONMENT_MAX_BYTES}")
    if start not in START_KINDS:
        raise _fail(f"start must be one of {', '.join(START_KINDS)}, got {start!r}")
    if network not in NETWORK_MODES:
        raise _fail(f"network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
    if not isinstance(description, str) or len(description) > 256:
        raise _fail("description must be a string of at most 256 characters")
    modules = validate_preload(preload)
    now = datetime.datetime.now(datetime.UTC)
    return FunctionConfig(
        name=name, handler=handler, code=code_dir, memory_mb=memory_mb,
        timeout_s=float(timeout_s), environment=env, start=start, description=description,
        network=network, role=role, preload=modules, revision_id=str(uuid.uuid4()),
        last_modified=now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000",
    )
