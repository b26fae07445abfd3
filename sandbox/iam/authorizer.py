"""The checks the runtime makes: who may invoke a function, which role a
function may run as, and what a running function may do through its role.

Every invocation path calls :meth:`Authorizer.authorize_invoke` before it
runs or queues anything; platform calls, destinations and event source
mappings call :meth:`Authorizer.authorize_role` with the function's role.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

from ..errors import AccessDeniedException, InvalidParameterValueException
from .evaluate import Request, authorize
from .policy import Policy
from .principals import (
    ASSUMED_ROLE,
    LAMBDA_SERVICE,
    ROOT,
    SERVICE,
    USER,
    Principal,
    account_root,
    role_session,
    service,
)
from .registry import IamRegistry

INVOKE_ACTION = "lambda:InvokeFunction"
ASSUME_ROLE_ACTION = "sts:AssumeRole"
# Lambda's refusal of a role whose trust policy does not admit it (CreateFunction).
ROLE_NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."

_PRINCIPAL_TYPES = {ROOT: "Account", USER: "User", ASSUMED_ROLE: "AssumedRole"}


class Authorizer:
    """Authorization against the registry's current users, roles and policies."""

    def __init__(self, registry: IamRegistry, account_id: str) -> None:
        self.registry = registry
        self.account_id = account_id
        self.default_caller = account_root(account_id)

    # -- invocation --------------------------------------------------------------------
    def authorize_invoke(self, caller: Principal | str | None, function: str,
                         function_arn: str, extra_context: Mapping[str, Any] | None = None
                         ) -> Principal:
        """Checks that ``caller`` may ``lambda:InvokeFunction`` the function.

        Args:
            caller: a Principal, an ARN or account id or service name (see
                :meth:`IamRegistry.resolve`); None is the local account's root.
                A service caller carries its ``source_arn``/``source_account``.
            extra_context: more condition keys (``aws:SourceIp``,
                ``aws:SecureTransport`` from the HTTP API).
        Returns:
            The resolved caller.
        Raises:
            AccessDeniedException: in IAM's words, naming caller, action and function.
        """
        principal, identity_policies = (
            (self.default_caller, ()) if caller is None else self.registry.resolve(caller))
        resource_policy = self.registry.function_policy(function)
        if resource_policy is None and principal.kind == ROOT and (
                principal.account == self.account_id):
            return principal  # the owner's root, and no policy that could deny it
        request = Request(principal, INVOKE_ACTION, function_arn,
                          self._context(principal, function_arn, extra_context))
        decision = authorize(request, identity_policies,
                             resource_policy.policy if resource_policy else None,
                             self.account_id)
        decision.raise_if_denied(request)
        return principal

    def refuse_explicit_deny(self, caller: Principal, function: str, function_arn: str) -> None:
        """The check of an event source mapping's invocations: Lambda needs no
        statement in the function's policy for its own pollers, so only an
        explicit Deny there for ``caller`` (the source's service principal,
        with its source ARN and account) refuses.

        Raises:
            AccessDeniedException: in IAM's words ("... with an explicit deny
                in a resource-based policy").
        """
        resource_policy = self.registry.function_policy(function)
        if resource_policy is None:
            return
        request = Request(caller, INVOKE_ACTION, function_arn,
                          self._context(caller, function_arn, None))
        decision = authorize(request, (), resource_policy.policy, self.account_id)
        if decision.explicit:
            decision.raise_if_denied(request)

    # -- execution roles -----------------------------------------------------------------
    def check_execution_role(self, role_arn: str, function_arn: str) -> None:
        """CreateFunction's check: the role exists and its trust policy lets
        ``lambda.amazonaws.com`` perform ``sts:AssumeRole``.

        Raises:
            InvalidParameterValueException: "The role defined for the function
                cannot be assumed by Lambda."
        """
        if not isinstance(role_arn, str):
            raise InvalidParameterValueException(
                f"role must be a role ARN string, got {type(role_arn).__name__}")
        role = self.registry.find_role(role_arn)
        if role is None:
            raise InvalidParameterValueException(f"{ROLE_NOT_ASSUMABLE} (no role {role_arn})")
        lambda_service = service(LAMBDA_SERVICE, source_arn=function_arn,
                                 source_account=self.account_id)
        request = Request(lambda_service, ASSUME_ROLE_ACTION, role.arn,
                          self._context(lambda_service, function_arn, None))
        decision = authorize(request, (), role.trust_policy, role.account,
                             resource_policy_required=True)
        if not decision.allowed:
            raise InvalidParameterValueException(ROLE_NOT_ASSUMABLE)

    def role_session(self, role_arn: str | None, function: str, function_arn: str) -> Principal:
        """The identity a function runs as: a session of its role named after it.

        Raises:
            AccessDeniedException: the function has no execution role.
        """
        if role_arn is None:
            raise AccessDeniedException(
                f"The function {function_arn} has no execution role: it may not call the "
                f"platform (create it with role=<role ARN>)")
        return role_session(role_arn, function)

    def authorize_role(self, session: Principal, action: str, resource: str,
                       resource_policy: Policy | None = None,
                       resource_account: str | None = None,
                       extra_context: Mapping[str, Any] | None = None) -> None:
        """Checks an action the function takes through its role (a platform
        call, a destination, an event source mapping's reads).

        The role's identity policies are read now, so a changed policy applies
        to the next call. ``resource_policy`` is the target's own policy, when
        it has one (a function's; a queue's once queues have policies).

        Raises:
            AccessDeniedException: naming the session, the action and the resource.
        """
        if session.role_arn is None:
            raise AccessDeniedException(f"{session.arn} is not a role session")
        policies = self.registry.role(session.role_arn).policies
        request = Request(session, action, resource,
                          self._context(session, None, extra_context))
        decision = authorize(request, policies, resource_policy,
                             resource_account or self.account_id)
        decision.raise_if_denied(request)

    # -- request context -------------------------------------------------------------------
    def _context(self, principal: Principal, function_arn: str | None,
                 extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """The global condition keys IAM sets for a request by ``principal``."""
        now = time.time()
        context: dict[str, Any] = {
            "aws:CurrentTime": datetime.datetime.fromtimestamp(now, datetime.UTC)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "aws:EpochTime": int(now),
            "lambda:FunctionArn": function_arn,
        }
        if principal.kind == SERVICE:
            context["aws:PrincipalServiceName"] = principal.arn
            context["aws:SourceArn"] = principal.source_arn
            context["aws:SourceAccount"] = principal.source_account
        else:
            context["aws:PrincipalArn"] = principal.principal_arn
            context["aws:PrincipalAccount"] = principal.account
            context["aws:PrincipalType"] = _PRINCIPAL_TYPES.get(principal.kind)
            context["aws:PrincipalOrgID"] = self.registry.organization_of(principal.account)
            if principal.kind == USER:
                context["aws:username"] = principal.name
        if extra:
            context.update(extra)
        return context
