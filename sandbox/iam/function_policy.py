"""A function's resource-based policy as Lambda's AddPermission builds it.

Each AddPermission call adds one statement to the policy document
``{"Version": "2012-10-17", "Id": "default", "Statement": [...]}``:

- ``Principal``: ``"*"``, ``{"AWS": "arn:aws:iam::<id>:root"}`` for an account
  id, ``{"AWS": <arn>}`` for a user or role, ``{"Service": <name>}`` for a
  service;
- ``Condition``: ``{"StringEquals": {"AWS:SourceAccount": ...}}``,
  ``{"ArnLike": {"AWS:SourceArn": ...}}`` and
  ``{"StringEquals": {"aws:PrincipalOrgID": ...}}`` from the optional arguments.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..constants import FUNCTION_POLICY_MAX_BYTES
from ..errors import (
    InvalidParameterValueException,
    PolicyLengthExceededException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from .principals import is_account_id

# Patterns of Lambda's AddPermission API reference.
_STATEMENT_ID = re.compile(r"^[a-zA-Z0-9\-_.]{1,100}$")
_ACTION = re.compile(r"^(lambda:[*]|lambda:[a-zA-Z]+|[*])$")
_IAM_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:(root|user/.+|role/.+)$")
_SERVICE = re.compile(r"^[a-z0-9.-]+\.amazonaws\.com$")
_ARN = re.compile(r"^arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}(-gov)?-[a-z]+-\d)?:"
                  r"(\d{12})?:(.*)$")
_ORG_ID = re.compile(r"^o-[a-z0-9]{10,32}$")


def _invalid(message: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(message)


def build_statement(function_arn: str, statement_id: str, action: str, principal: str,
                    source_arn: str | None = None, source_account: str | None = None,
                    principal_org_id: str | None = None) -> dict[str, Any]:
    """One policy statement from AddPermission's arguments.

    Raises:
        InvalidParameterValueException: an argument breaks Lambda's rules.
    """
    if not isinstance(statement_id, str) or not _STATEMENT_ID.match(statement_id):
        raise _invalid(f"statement_id must be 1-100 characters matching ([a-zA-Z0-9-_.]+), "
                       f"got {statement_id!r}")
    if not isinstance(action, str) or not _ACTION.match(action):
        raise _invalid(f"action must match (lambda:[*]|lambda:[a-zA-Z]+|[*]), got {action!r}")
    if not isinstance(principal, str):
        raise _invalid(f"principal must be a string, got {principal!r}")
    principal_element: Any
    if principal == "*":
        principal_element = "*"
    elif is_account_id(principal):
        principal_element = {"AWS": f"arn:aws:iam::{principal}:root"}
    elif _IAM_ARN.match(principal):
        principal_element = {"AWS": principal}
    elif _SERVICE.match(principal):
        principal_element = {"Service": principal}
    else:
        raise _invalid(f"The provided principal was invalid. Please check the principal and "
                       f"try again. (got {principal!r})")
    conditions: dict[str, dict[str, str]] = {}
    if source_account is not None:
        if not is_account_id(source_account):
            raise _invalid(f"source_account must be a 12-digit account id, "
                           f"got {source_account!r}")
        conditions.setdefault("StringEquals", {})["AWS:SourceAccount"] = source_account
    if principal_org_id is not None:
        if not isinstance(principal_org_id, str) or not _ORG_ID.match(principal_org_id):
            raise _invalid(f"principal_org_id must match o-[a-z0-9]{{10,32}}, "
                           f"got {principal_org_id!r}")
        conditions.setdefault("StringEquals", {})["aws:PrincipalOrgID"] = principal_org_id
    if source_arn is not None:
        if not isinstance(source_arn, str) or not _ARN.match(source_arn):
            raise _invalid(f"source_arn must be an ARN, got {source_arn!r}")
        conditions["ArnLike"] = {"AWS:SourceArn": source_arn}
    statement: dict[str, Any] = {"Sid": statement_id, "Effect": "Allow",
                                 "Principal": principal_element, "Action": action,
                                 "Resource": function_arn}
    if conditions:
        statement["Condition"] = conditions
    return statement


def add_statement(document: dict[str, Any] | None, statement: dict[str, Any]) -> dict[str, Any]:
    """The policy document with ``statement`` added.

    Raises:
        ResourceConflictException: a statement with that Sid exists.
        PolicyLengthExceededException: the policy would exceed 20 KB.
    """
    statements = list(document["Statement"]) if document else []
    if any(existing.get("Sid") == statement["Sid"] for existing in statements):
        raise ResourceConflictException(
            "The statement id (sid) provided already exists. Please provide a new statement "
            "id, or remove the existing statement.")
    updated = {"Version": "2012-10-17", "Id": "default", "Statement": statements + [statement]}
    size = len(json.dumps(updated, separators=(",", ":")))
    if size > FUNCTION_POLICY_MAX_BYTES:
        raise PolicyLengthExceededException(
            f"The final policy size ({size}) is bigger than the limit "
            f"({FUNCTION_POLICY_MAX_BYTES}).")
    return updated


def remove_statement(document: dict[str, Any] | None, statement_id: str) -> dict[str, Any] | None:
    """The document without statement ``statement_id``; None once it is empty.

    Raises:
        ResourceNotFoundException: no statement has that id.
    """
    statements = list(document["Statement"]) if document else []
    kept = [s for s in statements if s.get("Sid") != statement_id]
    if len(kept) == len(statements):
        raise ResourceNotFoundException(
            f"Statement {statement_id} is not found in resource policy.")
    if not kept:
        return None
    return {**document, "Statement": kept} if document else None
