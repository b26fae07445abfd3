"""IAM users, roles, account organizations and functions' resource-based
policies: kept in the store, served from memory.

Every change is written to the store before it is visible, and is read by
the very next authorization: policy changes take effect on the next
invocation, with nothing to restart.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from ..constants import IAM_NAME_MAX
from ..errors import (
    EntityAlreadyExistsException,
    InvalidParameterValueException,
    NoSuchEntityException,
    ResourceNotFoundException,
)
from ..store import Store
from . import function_policy
from .policy import IDENTITY, RESOURCE, TRUST, Policy, parse_policy
from .principals import (
    ASSUMED_ROLE,
    Principal,
    is_account_id,
    parse_caller,
    role_session,
    user,
)
from .principals import USER as USER_KIND

USER = "user"
ROLE = "role"
ORGANIZATION = "organization"
FUNCTION_POLICY = "function_policy"

_NAME = re.compile(rf"^[\w+=,.@-]{{1,{IAM_NAME_MAX}}}$")
_ORG_ID = re.compile(r"^o-[a-z0-9]{10,32}$")
_ROLE_ARN = re.compile(r"^arn:aws:iam::(\d{12}):role/(?:.*/)?([\w+=,.@-]+)$")
_USER_ARN = re.compile(r"^arn:aws:iam::(\d{12}):user/(?:.*/)?([\w+=,.@-]+)$")
_SESSION_ARN = re.compile(r"^arn:aws:sts::(\d{12}):assumed-role/([\w+=,.@-]+)/([\w+=,.@-]+)$")


@dataclasses.dataclass(frozen=True)
class User:
    principal: Principal
    policies: tuple[Policy, ...]


@dataclasses.dataclass(frozen=True)
class Role:
    arn: str
    name: str
    account: str
    trust_policy: Policy
    policies: tuple[Policy, ...]


@dataclasses.dataclass(frozen=True)
class FunctionPolicy:
    policy: Policy
    revision_id: str


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidParameterValueException(
            f"{what} name must be 1-{IAM_NAME_MAX} characters of letters, digits and "
            f"+=,.@_-, got {name!r}")
    return name


def _parse_all(documents: Iterable[Any] | None, kind: str) -> tuple[Policy, ...]:
    if documents is None:
        return ()
    if isinstance(documents, str | bytes | Mapping):
        raise InvalidParameterValueException(
            "policies must be a list of policy documents, not a single document")
    return tuple(parse_policy(document, kind) for document in documents)


class IamRegistry:
    """Users (in any account), roles (in the local account), organizations of
    accounts, and one resource-based policy per function."""

    def __init__(self, store: Store, account_id: str) -> None:
        self._store = store
        self.account_id = account_id
        self._lock = threading.Lock()
        self._users: dict[str, User] = {}
        self._roles: dict[str, Role] = {}
        self._organizations: dict[str, str] = {}
        self._function_policies: dict[str, FunctionPolicy] = {}
        self.reload()

    def reload(self) -> None:
        """Reads every record from the store again: with a store shared by
        several Runtimes, what the others created, changed or deleted (the
        Runtime calls this every second then). It reads under the lock that
        this Runtime's own changes take: records read before one of them
        would undo it until the next reload."""
        store = self._store
        with self._lock:
            users = {r["arn"]: self._user_from(r) for r in store.list_iam_records(USER)}
            roles = {r["arn"]: self._role_from(r) for r in store.list_iam_records(ROLE)}
            organizations = {r["account"]: r["organization_id"]
                             for r in store.list_iam_records(ORGANIZATION)}
            policies = {r["function"]: FunctionPolicy(parse_policy(r["policy"], RESOURCE),
                                                      r["revision_id"])
                        for r in store.list_iam_records(FUNCTION_POLICY)}
            self._users, self._roles = users, roles
            self._organizations, self._function_policies = organizations, policies

    # -- users ---------------------------------------------------------------------
    def create_user(self, name: str, policies: Iterable[Any] | None = None,
                    account: str | None = None) -> str:
        """Creates an IAM user with identity policies; returns its ARN."""
        _check_name("user", name)
        account = self.account_id if account is None else account
        if not is_account_id(account):
            raise InvalidParameterValueException(f"account must be 12 digits, got {account!r}")
        parsed = _parse_all(policies, IDENTITY)
        principal = user(account, name)
        with self._lock:
            if principal.arn in self._users:
                raise EntityAlreadyExistsException(f"User with name {name} already exists.")
            self._store_user(principal, parsed)
        return principal.arn

    def put_user_policies(self, user_arn: str, policies: Iterable[Any]) -> None:
        """Replaces a user's identity policies."""
        parsed = _parse_all(policies, IDENTITY)
        with self._lock:
            self._store_user(self._user(user_arn).principal, parsed)

    def delete_user(self, user_arn: str) -> None:
        with self._lock:
            self._user(user_arn)
            self._store.delete_iam_record(USER, user_arn)
            del self._users[user_arn]

    def _store_user(self, principal: Principal, policies: tuple[Policy, ...]) -> None:
        self._store.put_iam_record(USER, principal.arn, {
            "arn": principal.arn, "account": principal.account, "name": principal.name,
            "policies": [dict(p.document) for p in policies]})
        self._users[principal.arn] = User(principal, policies)

    def _user(self, user_arn: str) -> User:
        found = self._users.get(user_arn)
        if found is None:
            raise NoSuchEntityException(f"The user with ARN {user_arn} cannot be found.")
        return found

    @staticmethod
    def _user_from(record: Mapping[str, Any]) -> User:
        return User(user(record["account"], record["name"]),
                    _parse_all(record["policies"], IDENTITY))

    # -- roles ---------------------------------------------------------------------
    def create_role(self, name: str, trust_policy: Any,
                    policies: Iterable[Any] | None = None) -> str:
        """Creates a role in the local account; returns its ARN."""
        _check_name("role", name)
        trust = parse_policy(trust_policy, TRUST)
        parsed = _parse_all(policies, IDENTITY)
        arn = f"arn:aws:iam::{self.account_id}:role/{name}"
        with self._lock:
            if arn in self._roles:
                raise EntityAlreadyExistsException(f"Role with name {name} already exists.")
            self._store_role(Role(arn, name, self.account_id, trust, parsed))
        return arn

    def update_role(self, role_arn: str, trust_policy: Any = None,
                    policies: Iterable[Any] | None = None) -> None:
        """Replaces a role's trust policy and/or its identity policies."""
        trust = parse_policy(trust_policy, TRUST) if trust_policy is not None else None
        parsed = _parse_all(policies, IDENTITY) if policies is not None else None
        with self._lock:
            role = self.role(role_arn)
            self._store_role(dataclasses.replace(
                role, trust_policy=trust or role.trust_policy,
                policies=role.policies if parsed is None else parsed))

    def delete_role(self, role_arn: str) -> None:
        with self._lock:
            self.role(role_arn)
            self._store.delete_iam_record(ROLE, role_arn)
            del self._roles[role_arn]

    def role(self, role_arn: str) -> Role:
        """The role, or NoSuchEntityException."""
        found = self._roles.get(role_arn)
        if found is None:
            raise NoSuchEntityException(f"The role with ARN {role_arn} cannot be found.")
        return found

    def find_role(self, role_arn: str) -> Role | None:
        return self._roles.get(role_arn)

    def _store_role(self, role: Role) -> None:
        self._store.put_iam_record(ROLE, role.arn, {
            "arn": role.arn, "name": role.name, "account": role.account,
            "trust_policy": dict(role.trust_policy.document),
            "policies": [dict(p.document) for p in role.policies]})
        self._roles[role.arn] = role

    @staticmethod
    def _role_from(record: Mapping[str, Any]) -> Role:
        return Role(record["arn"], record["name"], record["account"],
                    parse_policy(record["trust_policy"], TRUST),
                    _parse_all(record["policies"], IDENTITY))

    # -- organizations -------------------------------------------------------------
    def set_organization(self, account: str, organization_id: str | None) -> None:
        """Puts an account in an organization (None: in none): the
        ``aws:PrincipalOrgID`` of its principals."""
        if not is_account_id(account):
            raise InvalidParameterValueException(f"account must be 12 digits, got {account!r}")
        with self._lock:
            if organization_id is None:
                self._store.delete_iam_record(ORGANIZATION, account)
                self._organizations.pop(account, None)
                return
            if not isinstance(organization_id, str) or not _ORG_ID.match(organization_id):
                raise InvalidParameterValueException(
                    f"organization id must match o-[a-z0-9]{{10,32}}, got {organization_id!r}")
            self._store.put_iam_record(ORGANIZATION, account, {
                "account": account, "organization_id": organization_id})
            self._organizations[account] = organization_id

    def organization_of(self, account: str | None) -> str | None:
        return self._organizations.get(account) if account else None

    # -- callers -------------------------------------------------------------------
    def resolve(self, caller: Principal | str) -> tuple[Principal, tuple[Policy, ...]]:
        """The caller's identity and its identity policies, read now.

        ``caller`` is a Principal, or text: an account id or root ARN, a user
        ARN, a role ARN (a session of the role named after the role), a role
        session ARN (``arn:aws:sts::<account>:assumed-role/<role>/<session>``)
        or a service name.
        """
        if isinstance(caller, str):
            if _USER_ARN.match(caller):
                return self._user(caller).principal, self._user(caller).policies
            if _ROLE_ARN.match(caller):
                role = self.role(caller)
                return role_session(role.arn, role.name), role.policies
            session = _SESSION_ARN.match(caller)
            if session:
                account, role_name, session_name = session.groups()
                role = self.role(f"arn:aws:iam::{account}:role/{role_name}")
                return role_session(role.arn, session_name), role.policies
            caller = parse_caller(caller)
        if not isinstance(caller, Principal):
            raise InvalidParameterValueException(
                f"caller must be a Principal or an ARN string, got {type(caller).__name__}")
        if caller.kind == USER_KIND:
            return caller, self._user(caller.arn).policies
        if caller.kind == ASSUMED_ROLE and caller.role_arn is not None:
            return caller, self.role(caller.role_arn).policies
        return caller, ()

    # -- function policies -----------------------------------------------------------
    def function_policy(self, function: str) -> FunctionPolicy | None:
        return self._function_policies.get(function)

    def add_permission(self, function: str, function_arn: str, statement_id: str,
                       action: str, principal: str, source_arn: str | None = None,
                       source_account: str | None = None,
                       principal_org_id: str | None = None) -> dict[str, Any]:
        """AddPermission: returns ``{"Statement": <json>}``."""
        statement = function_policy.build_statement(
            function_arn, statement_id, action, principal, source_arn, source_account,
            principal_org_id)
        with self._lock:
            current = self._function_policies.get(function)
            document = function_policy.add_statement(
                dict(current.policy.document) if current else None, statement)
            self._store_function_policy(function, document)
        return {"Statement": json.dumps(statement, separators=(",", ":"))}

    def remove_permission(self, function: str, statement_id: str) -> None:
        with self._lock:
            current = self._function_policies.get(function)
            document = function_policy.remove_statement(
                dict(current.policy.document) if current else None, statement_id)
            if document is None:
                self.delete_function_policy(function, locked=True)
            else:
                self._store_function_policy(function, document)

    def get_policy(self, function: str) -> dict[str, Any]:
        """GetPolicy's shape: ``{"Policy": <json>, "RevisionId": <id>}``."""
        current = self._function_policies.get(function)
        if current is None:
            raise ResourceNotFoundException("The resource you requested does not exist.")
        return {"Policy": current.policy.to_json(), "RevisionId": current.revision_id}

    def delete_function_policy(self, function: str, locked: bool = False) -> None:
        """Drops a function's policy (the function was deleted, or its last
        statement removed)."""
        if not locked:
            with self._lock:
                self.delete_function_policy(function, locked=True)
            return
        self._store.delete_iam_record(FUNCTION_POLICY, function)
        self._function_policies.pop(function, None)

    def _store_function_policy(self, function: str, document: dict[str, Any]) -> None:
        policy = parse_policy(document, RESOURCE)
        revision_id = str(uuid.uuid4())
        self._store.put_iam_record(FUNCTION_POLICY, function, {
            "function": function, "policy": document, "revision_id": revision_id})
        self._function_policies[function] = FunctionPolicy(policy, revision_id)
