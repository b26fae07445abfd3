"""Policy evaluation, as the IAM User Guide's "Policy evaluation logic" states it.

1. Every statement of every applicable policy is considered; order is irrelevant.
2. A matching Deny anywhere wins (explicit deny).
3. Within one account, an Allow in the caller's identity policies *or* in the
   resource's policy grants, except that a resource policy naming only the
   account (``arn:aws:iam::<id>:root``) delegates to the account's identity
   policies and grants nothing by itself.
4. Across accounts, both must allow: the caller's identity policies, and the
   resource policy naming the caller or its account.
5. Otherwise the request is implicitly denied.

An account's root user has every permission in identity terms (IAM policies
cannot restrict it); an AWS service has no identity policies, so only a
resource policy can grant it anything.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import AccessDeniedException
from .conditions import NULL, OPERATORS, Condition
from .matching import action_matches, resource_matches
from .policy import Policy, PrincipalSet, Statement
from .principals import ROOT, SERVICE, Principal

IDENTITY_BASED = "identity-based"
RESOURCE_BASED = "resource-based"

# How a Principal element matched the caller.
DIRECT = "direct"  # names the caller itself (or everyone)
ACCOUNT = "account"  # names the caller's account only


@dataclasses.dataclass(frozen=True)
class Request:
    """One authorization question: may ``principal`` do ``action`` on ``resource``?

    ``context`` holds the condition keys (any case; looked up lower-cased).
    """

    principal: Principal
    action: str
    resource: str
    context: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Decision:
    """``allowed``; for a refusal, ``explicit`` (a Deny matched) and the
    ``policy_type`` ("identity-based" or "resource-based") to name."""

    allowed: bool
    explicit: bool = False
    policy_type: str | None = None

    def message(self, request: Request) -> str:
        """IAM's access-denied wording for this refusal."""
        head = (f"User: {request.principal.arn} is not authorized to perform: "
                f"{request.action} on resource: {request.resource}")
        if self.explicit:
            article = "an" if self.policy_type == IDENTITY_BASED else "a"
            return f"{head} with an explicit deny in {article} {self.policy_type} policy"
        return f"{head} because no {self.policy_type} policy allows the {request.action} action"

    def raise_if_denied(self, request: Request) -> None:
        if not self.allowed:
            raise AccessDeniedException(self.message(request))


def lowered(context: Mapping[str, Any]) -> dict[str, Any]:
    """A context with its keys lower-cased (condition keys match regardless of case)."""
    return {key.lower(): value for key, value in context.items() if value is not None}


def authorize(request: Request, identity_policies: Iterable[Policy],
              resource_policy: Policy | None, resource_account: str | None,
              resource_policy_required: bool = False) -> Decision:
    """Evaluates a request against the caller's identity policies and the
    resource's policy.

    Args:
        resource_account: the account owning the resource; decides between
            same-account and cross-account rules.
        resource_policy_required: the resource policy must grant the caller
            even within its account (a role's trust policy works that way).
    """
    context = lowered(request.context)
    caller = request.principal
    identity_allows = caller.kind == ROOT
    for policy in identity_policies:
        for statement in policy.statements:
            if _applies(statement, policy, request, context):
                if statement.effect == "Deny":
                    return Decision(False, True, IDENTITY_BASED)
                identity_allows = True
    resource_grant: str | None = None
    if resource_policy is not None:
        for statement in resource_policy.statements:
            match = _principal_match(statement, caller)
            if match is None or not _applies(statement, resource_policy, request, context):
                continue
            if statement.effect == "Deny":
                return Decision(False, True, RESOURCE_BASED)
            if resource_grant != DIRECT:
                resource_grant = match
    if caller.kind == SERVICE:
        allowed = resource_grant is not None
        missing = RESOURCE_BASED
    elif resource_policy_required:
        allowed = resource_grant == DIRECT or (resource_grant == ACCOUNT and identity_allows)
        missing = RESOURCE_BASED
    elif caller.account == resource_account:
        allowed = identity_allows or resource_grant == DIRECT
        missing = IDENTITY_BASED
    else:
        allowed = identity_allows and resource_grant is not None
        missing = IDENTITY_BASED if not identity_allows else RESOURCE_BASED
    return Decision(True) if allowed else Decision(False, False, missing)


def statement_matches(statement: Statement, policy: Policy, request: Request) -> bool:
    """Whether a statement applies to a request (its principal aside)."""
    return _applies(statement, policy, request, lowered(request.context))


def _applies(statement: Statement, policy: Policy, request: Request,
             context: Mapping[str, Any]) -> bool:
    action = request.action
    if statement.actions is not None:
        if not any(action_matches(p, action) for p in statement.actions):
            return False
    elif statement.not_actions is not None and any(
            action_matches(p, action) for p in statement.not_actions):
        return False
    resource = request.resource
    variables = policy.uses_variables
    if statement.resources is not None:
        if not any(_resource_match(p, resource, variables, context)
                   for p in statement.resources):
            return False
    elif statement.not_resources is not None and any(
            _resource_match(p, resource, variables, context) for p in statement.not_resources):
        return False
    return all(_condition_holds(c, variables, context) for c in statement.conditions)


def _principal_match(statement: Statement, caller: Principal) -> str | None:
    """How the statement's Principal (or NotPrincipal) covers the caller, or None."""
    if statement.principal is not None:
        return _covers(statement.principal, caller)
    if statement.not_principal is not None:
        return None if _covers(statement.not_principal, caller) else DIRECT
    return DIRECT  # an identity policy: its principal is the identity itself


def _covers(principals: PrincipalSet, caller: Principal) -> str | None:
    if principals.everyone:
        return DIRECT
    if caller.kind == SERVICE:
        return DIRECT if caller.arn in principals.services else None
    direct = {caller.arn}
    if caller.role_arn:
        direct.add(caller.role_arn)
    root = f"arn:aws:iam::{caller.account}:root"
    if caller.kind == ROOT:
        direct.add(root)
    matched = None
    for arn in principals.aws:
        if arn in direct:
            return DIRECT
        if arn == root:
            matched = ACCOUNT
    return matched


# ${key}, ${key, 'default'}; ${*}, ${?} and ${$} stand for those characters.
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_SPECIAL = {"*": "*", "?": "?", "$": "$"}


def substitute(text: str, context: Mapping[str, Any]) -> str | None:
    """Resolves policy variables in ``text``; None when one has no value."""
    if "${" not in text:
        return text
    unresolved = False

    def resolve(match: re.Match[str]) -> str:
        nonlocal unresolved
        inner = match.group(1)
        if inner in _SPECIAL:
            return _SPECIAL[inner]
        key, comma, default = inner.partition(",")
        value = context.get(key.strip().lower())
        if value is None or isinstance(value, list | tuple):
            if comma:
                return default.strip().strip("'")
            unresolved = True
            return ""
        return str(value)

    resolved = _VARIABLE.sub(resolve, text)
    return None if unresolved else resolved


def _resource_match(pattern: str, resource: str, variables: bool,
                    context: Mapping[str, Any]) -> bool:
    if variables:
        resolved = substitute(pattern, context)
        if resolved is None:
            return False
        pattern = resolved
    return resource_matches(pattern, resource)


def _condition_holds(condition: Condition, variables: bool, context: Mapping[str, Any]) -> bool:
    if variables and any(isinstance(v, str) and "${" in v for v in condition.values):
        values = tuple(substitute(v, context) if isinstance(v, str) else v
                       for v in condition.values)
        # A value whose variable has no value matches nothing.
        condition = dataclasses.replace(
            condition, values=tuple(v for v in values if v is not None))
        if not condition.values and condition.base != NULL:
            return _condition_with_no_values(condition, context)
    return condition.holds(context)


def _condition_with_no_values(condition: Condition, context: Mapping[str, Any]) -> bool:
    # Nothing to match: a positive operator fails, a negated one passes, as
    # when the request value matches none of the listed values.
    present = context.get(condition.key.lower()) not in (None, [])
    if not present:
        return condition.holds(context)
    return OPERATORS[condition.base].negated
