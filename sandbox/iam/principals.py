"""Who makes a request: account roots, IAM users, role sessions and AWS services.

A :class:`Principal` is the caller of an invocation or of a platform call. Its
``arn`` is what access-denied messages name ("User: <arn> is not authorized
...") and what the ``aws:PrincipalArn`` condition key holds (for a role
session, the role's ARN, as IAM documents).
"""

from __future__ import annotations

import dataclasses
import re

from ..errors import InvalidParameterValueException

ROOT = "root"
USER = "user"
ASSUMED_ROLE = "assumed-role"
SERVICE = "service"

LAMBDA_SERVICE = "lambda.amazonaws.com"

_ACCOUNT_ID = re.compile(r"^\d{12}$")


def is_account_id(value: object) -> bool:
    """Whether ``value`` is an AWS account id: a string of 12 digits."""
    return isinstance(value, str) and _ACCOUNT_ID.match(value) is not None
_ROOT_ARN = re.compile(r"^arn:aws:iam::(\d{12}):root$")
_SERVICE_NAME = re.compile(r"^[a-z0-9.-]+\.amazonaws\.com$")


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated identity.

    Attributes:
        kind: "root", "user", "assumed-role" or "service".
        arn: the identity's ARN; a service's name (``sqs.amazonaws.com``).
        account: its account id; None for a service.
        name: user name, role name, service name, or the account id for root.
        role_arn: for a role session, the role's ARN.
        source_arn, source_account: for a service acting for a resource (an
            SQS queue, an S3 bucket), that resource and its account: the
            ``aws:SourceArn`` and ``aws:SourceAccount`` condition keys.
    """

    kind: str
    arn: str
    account: str | None
    name: str
    role_arn: str | None = None
    source_arn: str | None = None
    source_account: str | None = None

    @property
    def principal_arn(self) -> str:
        """The ``aws:PrincipalArn`` value: a session reports its role."""
        return self.role_arn or self.arn


def account_root(account: str) -> Principal:
    """The root identity of an account: the Python API's default caller."""
    _check_account(account)
    return Principal(ROOT, f"arn:aws:iam::{account}:root", account, account)


def user(account: str, name: str) -> Principal:
    _check_account(account)
    return Principal(USER, f"arn:aws:iam::{account}:user/{name}", account, name)


def role_session(role_arn: str, session_name: str) -> Principal:
    """The identity of a session of a role, as STS names it:
    ``arn:aws:sts::<account>:assumed-role/<role>/<session>``."""
    parts = role_arn.split(":", 5)
    account, role_name = parts[4], parts[5].rsplit("/", 1)[-1]
    return Principal(ASSUMED_ROLE, f"arn:aws:sts::{account}:assumed-role/{role_name}/"
                     f"{session_name}", account, role_name, role_arn=role_arn)


def service(name: str, source_arn: str | None = None,
            source_account: str | None = None) -> Principal:
    """An AWS service principal calling on behalf of ``source_arn``."""
    if not _SERVICE_NAME.match(name):
        raise InvalidParameterValueException(
            f"a service principal looks like 'sqs.amazonaws.com', got {name!r}")
    if source_account is not None:
        _check_account(source_account)
    return Principal(SERVICE, name, None, name, source_arn=source_arn,
                     source_account=source_account)


def parse_caller(text: str) -> Principal:
    """A caller from text: a 12-digit account id or root ARN (that account's
    root) or a service name. Users and roles are resolved by the registry."""
    if is_account_id(text):
        return account_root(text)
    match = _ROOT_ARN.match(text)
    if match:
        return account_root(match.group(1))
    if _SERVICE_NAME.match(text):
        return service(text)
    raise InvalidParameterValueException(
        f"caller must be an account id, an account root, user or role ARN, or a service "
        f"principal, got {text!r}")


def _check_account(account: str) -> None:
    if not is_account_id(account):
        raise InvalidParameterValueException(
            f"an account id is 12 digits, got {account!r}")
