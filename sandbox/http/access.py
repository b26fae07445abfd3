"""Who may call which operation of the HTTP API.

Invoke is authorized by the Runtime itself (the function's resource-based
policy and the caller's identity policies, with the transport's condition
keys). Every other operation is an IAM action on the function
(``lambda:CreateFunction``, ``lambda:GetPolicy``, ...) decided as IAM does for
a request in the account: the local account's root may do anything; another
principal needs an identity policy that allows the action, or a function
policy that grants it (AddPermission can grant ``lambda:GetFunction`` and
the like); an explicit Deny wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..iam import Request, authorize
from ..iam.principals import ROOT, Principal


def authorize_action(runtime: Any, caller: str | None, action: str, function: str | None,
                     request_context: Mapping[str, Any] | None = None) -> Principal | None:
    """Checks that ``caller`` may perform ``action`` (``lambda:<Operation>``)
    on ``function`` (None: on every function, as ListFunctions).

    Returns:
        The resolved principal (None for the default caller).
    Raises:
        AccessDeniedException: in IAM's words.
    """
    authorizer = runtime._authorizer
    if caller is None:
        return None
    principal, identity_policies = authorizer.registry.resolve(caller)
    resource_policy = None
    if function is not None:
        policy = authorizer.registry.function_policy(function)
        resource_policy = policy.policy if policy is not None else None
    if principal.kind == ROOT and principal.account == runtime.account_id and (
            resource_policy is None):
        return principal
    resource = (runtime.function_arn(function) if function is not None
                else f"arn:aws:lambda:{runtime.region}:{runtime.account_id}:function:*")
    request = Request(principal, action, resource,
                      authorizer._context(principal, resource, request_context))
    decision = authorize(request, identity_policies, resource_policy, runtime.account_id)
    decision.raise_if_denied(request)
    return principal
