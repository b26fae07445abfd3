"""Permissions: the IAM policy language, principals, and the checks made on
every invocation and on every call a running function makes.

- :mod:`.policy` parses and validates documents (MalformedPolicyDocument);
- :mod:`.matching` and :mod:`.conditions` are the Action/Resource wildcards
  and the Condition operators;
- :mod:`.evaluate` decides (explicit deny, then allow, else implicit deny;
  same-account either policy, cross-account both);
- :mod:`.principals` names callers; :mod:`.registry` keeps users, roles and
  function policies; :mod:`.authorizer` is what the runtime calls;
  :mod:`.delegated` checks what Lambda does for a function through its role
  (destinations, event source mappings).
"""

from .authorizer import ASSUME_ROLE_ACTION, INVOKE_ACTION, ROLE_NOT_ASSUMABLE, Authorizer
from .delegated import DelegatedChecks
from .evaluate import Decision, Request, authorize
from .policy import IDENTITY, RESOURCE, TRUST, Policy, Statement, parse_policy
from .principals import Principal, account_root, role_session, service, user
from .registry import IamRegistry

__all__ = [
    "ASSUME_ROLE_ACTION", "Authorizer", "Decision", "DelegatedChecks", "IDENTITY",
    "INVOKE_ACTION", "IamRegistry", "Policy", "Principal", "RESOURCE", "ROLE_NOT_ASSUMABLE",
    "Request", "Statement", "TRUST",
    "account_root", "authorize", "parse_policy", "role_session", "service", "user",
]
