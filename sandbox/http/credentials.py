"""The credentials the HTTP server accepts and the principal each stands for.

Out of the box one pair, access key ``test`` with secret ``test``, is the
local account's root (the pair LocalStack users already have configured).
``--credentials FILE`` adds pairs from a file in the AWS credentials-file
format; each profile may name its principal:

    [bob]
    aws_access_key_id = AKIDBOB
    aws_secret_access_key = s3cret
    principal = arn:aws:iam::000000000000:user/bob   # the default: user/<profile>

``principal`` is a user ARN, a role ARN (requests are made as a session of
the role), an account root ARN or a 12-digit account id (that account's root).
A user that does not exist yet is created, without identity policies; a role
must exist (define it through the Python API, a template or ``sandbox roles``).
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..constants import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from ..errors import EntityAlreadyExistsException, InvalidParameterValueException
from .sigv4 import SecretKey

_USER_ARN = re.compile(r"^arn:aws:iam::(\d{12}):user/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})$")
_ROLE_ARN = re.compile(r"^arn:aws:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})$")
_ROOT = re.compile(r"^(?:arn:aws:iam::)?(\d{12})(?::root)?$")


@dataclass(frozen=True)
class Credential:
    """One access key: its secret and the principal (caller ARN) it stands for."""

    access_key: str
    secret: SecretKey
    principal: str


class CredentialStore:
    """Access key → credential; read-only once built."""

    def __init__(self, credentials: Mapping[str, Credential]) -> None:
        self._credentials = dict(credentials)
        self.keys: dict[str, SecretKey] = {k: c.secret for k, c in self._credentials.items()}

    def principal_of(self, access_key: str) -> str:
        return self._credentials[access_key].principal

    def __iter__(self) -> Iterator[Credential]:
        return iter(self._credentials.values())

    def __len__(self) -> int:
        return len(self._credentials)


def default_credentials(account_id: str) -> dict[str, Credential]:
    """``test``/``test`` as the account's root."""
    return {DEFAULT_ACCESS_KEY: Credential(DEFAULT_ACCESS_KEY, SecretKey(DEFAULT_SECRET_KEY),
                                           f"arn:aws:iam::{account_id}:root")}


def read_credentials_file(path: str | os.PathLike[str], account_id: str) -> dict[str, Credential]:
    """The profiles of an AWS credentials file, each mapped to its principal.

    Raises:
        InvalidParameterValueException: the file cannot be read or parsed, a
            profile lacks a key or secret, two profiles share an access key,
            or a principal is not a user, role or root ARN or account id.
    """
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except (OSError, configparser.Error) as exc:
        raise InvalidParameterValueException(
            f"cannot read credentials file {os.fspath(path)!r}: {exc}") from None
    found: dict[str, Credential] = {}
    for profile in parser.sections():
        section = parser[profile]
        access_key = section.get("aws_access_key_id", "").strip()
        secret = section.get("aws_secret_access_key", "").strip()
        if not access_key or not secret:
            raise InvalidParameterValueException(
                f"credentials file {os.fspath(path)!r}, profile [{profile}]: "
                "aws_access_key_id and aws_secret_access_key are required")
        if access_key in found:
            raise InvalidParameterValueException(
                f"credentials file {os.fspath(path)!r}: access key {access_key!r} appears in "
                "more than one profile")
        principal = section.get("principal", f"arn:aws:iam::{account_id}:user/{profile}").strip()
        root = _ROOT.match(principal)
        if root:
            principal = f"arn:aws:iam::{root.group(1)}:root"
        elif not (_USER_ARN.match(principal) or _ROLE_ARN.match(principal)):
            raise InvalidParameterValueException(
                f"credentials file {os.fspath(path)!r}, profile [{profile}]: principal must be a "
                f"user ARN, role ARN, account root ARN or account id, got {principal!r}")
        token = section.get("aws_session_token", "").strip() or None
        found[access_key] = Credential(access_key, SecretKey(secret, token), principal)
    return found


def ensure_identities(credentials: CredentialStore, runtime: Any) -> list[str]:
    """Creates the IAM users named by credentials that do not exist yet, and
    checks that the roles named exist.

    Returns:
        The ARNs of the users created.
    Raises:
        InvalidParameterValueException: a profile names a role that is not defined.
    """
    created = []
    for credential in credentials:
        role = _ROLE_ARN.match(credential.principal)
        if role is not None and runtime._authorizer.registry.find_role(
                credential.principal) is None:
            raise InvalidParameterValueException(
                f"access key {credential.access_key} stands for role {credential.principal}, "
                "which is not defined (define it with `sandbox roles create`, a template or "
                "Runtime.create_role)")
        match = _USER_ARN.match(credential.principal)
        if match is None:
            continue
        account, name = match.groups()
        try:
            created.append(runtime.create_user(name, None, account))
        except EntityAlreadyExistsException:
            pass
    return created
