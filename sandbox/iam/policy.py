"""IAM policy documents: parsing and validation.

A document is JSON text or an already-decoded mapping. :func:`parse_policy`
checks it against the IAM grammar for its kind (an identity policy has no
Principal; a resource policy needs one; a role's trust policy needs one and
has no Resource) and returns an immutable :class:`Policy`. Every refusal is a
:class:`~sandbox.errors.MalformedPolicyDocumentException` whose message names
the element at fault, e.g. ``Statement[1]: Missing required field Effect``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import MalformedPolicyDocumentException
from .conditions import Condition, parse_conditions
from .principals import is_account_id

IDENTITY = "identity"
RESOURCE = "resource"
TRUST = "trust"
KINDS = (IDENTITY, RESOURCE, TRUST)

VERSIONS = ("2012-10-17", "2008-10-17")
# Without a Version element, IAM reads a document as the old language.
DEFAULT_VERSION = "2008-10-17"
EFFECTS = ("Allow", "Deny")
PRINCIPAL_TYPES = ("AWS", "Service", "Federated", "CanonicalUser")

_DOCUMENT_KEYS = {"Version", "Id", "Statement"}
_STATEMENT_KEYS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
                   "Resource", "NotResource", "Condition"}
_IAM_SID = re.compile(r"^[0-9A-Za-z]*$")
_IAM_ARN = re.compile(
    r"^arn:aws[a-z-]*:(iam::\d{12}:(root|user/.+|role/.+|federated-user/.+)"
    r"|sts::\d{12}:(assumed-role/.+/.+|federated-user/.+))$")
_SERVICE = re.compile(r"^[a-z0-9.-]+\.amazonaws\.com(\.cn)?$")
_ACTION = re.compile(r"^[A-Za-z0-9-]+:[A-Za-z0-9*?]+$")


@dataclasses.dataclass(frozen=True)
class PrincipalSet:
    """A Principal or NotPrincipal element.

    ``everyone`` is ``"*"`` or ``{"AWS": "*"}``; account ids in ``aws`` are
    normalized to their root ARN (``arn:aws:iam::<id>:root``), as IAM does.
    """

    everyone: bool = False
    aws: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    federated: tuple[str, ...] = ()
    canonical_users: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Statement:
    effect: str
    sid: str | None = None
    principal: PrincipalSet | None = None
    not_principal: PrincipalSet | None = None
    actions: tuple[str, ...] | None = None
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    not_resources: tuple[str, ...] | None = None
    conditions: tuple[Condition, ...] = ()


@dataclasses.dataclass(frozen=True)
class Policy:
    """A validated policy. ``document`` is the decoded JSON as given."""

    kind: str
    version: str
    statements: tuple[Statement, ...]
    document: Mapping[str, Any]
    id: str | None = None

    @property
    def uses_variables(self) -> bool:
        """Policy variables (``${aws:username}``) exist from version 2012-10-17 on."""
        return self.version == "2012-10-17"

    def to_json(self) -> str:
        return json.dumps(self.document, separators=(",", ":"))


def _fail(message: str) -> MalformedPolicyDocumentException:
    return MalformedPolicyDocumentException(message)


def parse_policy(document: str | bytes | Mapping[str, Any], kind: str = IDENTITY) -> Policy:
    """Parses and validates one policy document of the given kind.

    Args:
        document: JSON text, or the decoded object.
        kind: "identity" (attached to a user or role), "resource" (attached to
            a resource, e.g. a function) or "trust" (a role's trust policy).
    Raises:
        MalformedPolicyDocumentException: naming the element at fault.
    """
    if kind not in KINDS:
        raise ValueError(f"policy kind must be one of {KINDS}, got {kind!r}")
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise _fail(f"Syntax errors in policy: {exc}") from None
    if not isinstance(document, Mapping):
        raise _fail("Syntax errors in policy: the document must be a JSON object")
    unknown = sorted(set(document) - _DOCUMENT_KEYS)
    if unknown:
        raise _fail(f"Syntax errors in policy: unknown field {unknown[0]}")
    version = document.get("Version", DEFAULT_VERSION)
    if version not in VERSIONS:
        raise _fail(f"Version must be one of {', '.join(VERSIONS)}, got {version!r}")
    policy_id = document.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise _fail(f"Id must be a string, got {policy_id!r}")
    if "Statement" not in document:
        raise _fail("Missing required field Statement")
    raw_statements = document["Statement"]
    if isinstance(raw_statements, Mapping):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise _fail("Statement must be an object or a non-empty list of objects")
    statements = []
    sids: set[str] = set()
    for index, raw in enumerate(raw_statements):
        statement = _parse_statement(raw, f"Statement[{index}]", kind)
        if statement.sid is not None:
            if statement.sid in sids:
                raise _fail(f"Statement[{index}]: Statement IDs (SID) in a single policy "
                            f"must be unique: {statement.sid!r} repeats")
            sids.add(statement.sid)
        statements.append(statement)
    return Policy(kind, version, tuple(statements), document, policy_id)


def _parse_statement(raw: Any, where: str, kind: str) -> Statement:
    if not isinstance(raw, Mapping):
        raise _fail(f"{where}: a statement must be a JSON object")
    unknown = sorted(set(raw) - _STATEMENT_KEYS)
    if unknown:
        raise _fail(f"{where}: Syntax errors in policy: unknown field {unknown[0]}")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise _fail(f"{where}: Sid must be a string, got {sid!r}")
    if sid is not None and kind != RESOURCE and not _IAM_SID.match(sid):
        # IAM's own documents (identity and trust policies); resource policies
        # follow their service's rules (Lambda allows [a-zA-Z0-9-_.]).
        raise _fail(f"{where}: Statement IDs (SID) must be alpha-numeric. Check that your "
                    f"input satisfies the regular expression [0-9A-Za-z]*, got {sid!r}")
    if "Effect" not in raw:
        raise _fail(f"{where}: Missing required field Effect")
    effect = raw["Effect"]
    if effect not in EFFECTS:
        raise _fail(f"{where}: Effect must be Allow or Deny, got {effect!r}")

    principal = not_principal = None
    if "Principal" in raw and "NotPrincipal" in raw:
        raise _fail(f"{where}: Principal and NotPrincipal cannot both be present")
    if kind == IDENTITY:
        if "Principal" in raw or "NotPrincipal" in raw:
            raise _fail(f"{where}: Policy document should not specify a principal.")
    else:
        if "Principal" in raw:
            principal = _parse_principal(raw["Principal"], f"{where}.Principal")
        elif "NotPrincipal" in raw:
            not_principal = _parse_principal(raw["NotPrincipal"], f"{where}.NotPrincipal")
        else:
            raise _fail(f"{where}: Missing required field Principal")

    actions, not_actions = _exactly_one(raw, "Action", "NotAction", where, required=True)
    for element, values in (("Action", actions), ("NotAction", not_actions)):
        for action in values or ():
            if action != "*" and not _ACTION.match(action):
                raise _fail(f"{where}.{element}: {action!r}: Actions/Conditions must be "
                            f"prefaced by a vendor, e.g., iam, sdb, ec2, etc.")

    if kind == TRUST:
        for element in ("Resource", "NotResource"):
            if element in raw:
                raise _fail(f"{where}: Has prohibited field {element}")
        resources = not_resources = None
    else:
        resources, not_resources = _exactly_one(raw, "Resource", "NotResource", where,
                                                required=True)
        for element, values in (("Resource", resources), ("NotResource", not_resources)):
            for resource in values or ():
                if resource != "*" and not _is_arn_pattern(resource):
                    raise _fail(f'{where}.{element}: Resource {resource} must be in ARN '
                                f'format or "*".')

    conditions: tuple[Condition, ...] = ()
    if "Condition" in raw:
        conditions = parse_conditions(raw["Condition"], f"{where}.Condition")
    return Statement(effect, sid, principal, not_principal, actions, not_actions, resources,
                     not_resources, conditions)


def _is_arn_pattern(text: str) -> bool:
    """``arn:<partition>:<service>...``; the service may hold no wildcard."""
    parts = text.split(":", 3)
    return (len(parts) >= 3 and parts[0] == "arn" and bool(parts[1])
            and bool(re.fullmatch(r"[a-z0-9-]+", parts[2])))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _fail(f"{where}: must not be an empty list")
    for item in values:
        if not isinstance(item, str) or not item:
            raise _fail(f"{where}: {item!r} is not a non-empty string")
    return tuple(values)


def _exactly_one(raw: Mapping[str, Any], name: str, negated: str, where: str,
                 required: bool) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    if name in raw and negated in raw:
        raise _fail(f"{where}: {name} and {negated} cannot both be present")
    if name in raw:
        return _strings(raw[name], f"{where}.{name}"), None
    if negated in raw:
        return None, _strings(raw[negated], f"{where}.{negated}")
    if required:
        raise _fail(f"{where}: Missing required field {name}")
    return None, None


def _parse_principal(raw: Any, where: str) -> PrincipalSet:
    if raw == "*":
        return PrincipalSet(everyone=True)
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(f'{where}: Invalid principal in policy: {json.dumps(raw)} (expected "*" '
                    f'or an object with {", ".join(PRINCIPAL_TYPES)})')
    found: dict[str, tuple[str, ...]] = {}
    everyone = False
    for principal_type, value in raw.items():
        if principal_type not in PRINCIPAL_TYPES:
            raise _fail(f'{where}: Invalid principal in policy: "{principal_type}" is not a '
                        f'principal type ({", ".join(PRINCIPAL_TYPES)})')
        values = _strings(value, f"{where}.{principal_type}")
        checked = []
        for item in values:
            bad = f'{where}: Invalid principal in policy: "{principal_type}":"{item}"'
            if principal_type == "AWS":
                if item == "*":
                    everyone = True
                    continue
                if is_account_id(item):
                    item = f"arn:aws:iam::{item}:root"
                elif not _IAM_ARN.match(item) or "*" in item or "?" in item:
                    raise _fail(bad)
            elif principal_type == "Service" and not _SERVICE.match(item):
                raise _fail(bad)
            checked.append(item)
        found[principal_type] = tuple(checked)
    return PrincipalSet(everyone, found.get("AWS", ()), found.get("Service", ()),
                        found.get("Federated", ()), found.get("CanonicalUser", ()))
