"""Verification of AWS Signature Version 4 on requests the server receives.

The signature is recomputed with botocore's own signer (``SigV4Auth``) over
the request as received, with the client's timestamp, region and signed
headers, and compared in constant time. Nothing of the algorithm is written
here: only the parsing of the ``Authorization`` header and the checks AWS's
front door makes before it (known key, fresh date, matching scope).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ..constants import SIGV4_MAX_SKEW_S
from ..errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SIGNING_SERVICE = "lambda"
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_AUTHORIZATION = re.compile(
    rf"^{ALGORITHM}\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})\s*$")
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details.")


@dataclass(frozen=True)
class SecretKey:
    """A credential the server accepts: its secret and optional session token."""

    secret_key: str
    session_token: str | None = None


@dataclass(frozen=True)
class SignedRequest:
    """What a request must carry to be verified: method, the raw path and
    query as sent (percent-encoding intact), headers and body."""

    method: str
    raw_path: str
    headers: Mapping[str, str]
    body: bytes


def verify(request: SignedRequest, keys: Mapping[str, SecretKey],
           now: datetime.datetime | None = None) -> str:
    """Checks the request's SigV4 ``Authorization`` header.

    Args:
        keys: access key id → its secret.
        now: the server's clock (UTC); for tests.
    Returns:
        The access key id that signed the request.
    Raises:
        MissingAuthenticationTokenException: no Authorization header.
        IncompleteSignatureException: the header is malformed.
        UnrecognizedClientException: an unknown access key or session token.
        InvalidSignatureException: the signature does not match, or the
            request's date is more than 15 minutes from the server's clock.
    """
    headers = {name.lower(): value for name, value in request.headers.items()}
    authorization = headers.get("authorization")
    if not authorization:
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    match = _AUTHORIZATION.match(authorization)
    if match is None:
        raise IncompleteSignatureException(
            f"Authorization header requires '{ALGORITHM} Credential=..., SignedHeaders=..., "
            f"Signature=...' (a 64-digit hex signature), got {authorization[:120]!r}")
    credential = match["credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise IncompleteSignatureException(
            "Credential must have the form <key>/<date>/<region>/<service>/aws4_request, "
            f"got {match['credential']!r}")
    access_key, scope_date, region, service, _ = credential
    secret = keys.get(access_key)
    if secret is None:
        raise UnrecognizedClientException("The security token included in the request is invalid.")
    if secret.session_token is not None and (
            headers.get("x-amz-security-token") != secret.session_token):
        raise UnrecognizedClientException("The security token included in the request is invalid.")
    if service != SIGNING_SERVICE:
        raise InvalidSignatureException(
            f"Credential should be scoped to correct service: '{SIGNING_SERVICE}'.")
    timestamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(timestamp, _TIMESTAMP).replace(
            tzinfo=datetime.UTC)
    except ValueError:
        raise IncompleteSignatureException(
            f"X-Amz-Date must be a date like 20240101T000000Z, got {timestamp!r}") from None
    if scope_date != timestamp[:8]:
        raise InvalidSignatureException(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{scope_date}' != '{timestamp[:8]}'")
    now = now or datetime.datetime.now(datetime.UTC)
    if abs((now - signed_at).total_seconds()) > SIGV4_MAX_SKEW_S:
        raise InvalidSignatureException(
            f"Signature expired: {timestamp} is now earlier or later than "
            f"{now.strftime(_TIMESTAMP)} by more than {SIGV4_MAX_SKEW_S // 60} minutes.")
    signed_names = match["signed"].split(";")
    if "host" not in signed_names:
        raise InvalidSignatureException("The host header must be signed.")
    missing = [name for name in signed_names if name not in headers]
    if missing:
        raise InvalidSignatureException(f"Signed headers missing from the request: {missing}")
    content_hash = headers.get("x-amz-content-sha256")
    if content_hash is not None and content_hash != _UNSIGNED_PAYLOAD and not hmac.compare_digest(
            content_hash, hashlib.sha256(request.body).hexdigest()):
        raise InvalidSignatureException(
            "The provided x-amz-content-sha256 header does not match what was computed.")
    expected = _signature(request, {name: headers[name] for name in signed_names},
                          access_key, secret, region, timestamp)
    if not hmac.compare_digest(expected, match["signature"]):
        raise InvalidSignatureException(_SIGNATURE_MISMATCH)
    return access_key


def _signature(request: SignedRequest, signed_headers: Mapping[str, str], access_key: str,
               secret: SecretKey, region: str, timestamp: str) -> str:
    """botocore's signature of the request, as the client computed it."""
    # Only the signed headers are given to the signer: a proxy's or the HTTP
    # library's own headers must not change the canonical request.
    aws_request = AWSRequest(method=request.method,
                             url=f"http://{signed_headers['host']}{request.raw_path}",
                             headers=dict(signed_headers), data=request.body)
    aws_request.context["timestamp"] = timestamp
    signer = SigV4Auth(Credentials(access_key, secret.secret_key, secret.session_token),
                       SIGNING_SERVICE, region)
    canonical = signer.canonical_request(aws_request)
    return str(signer.signature(signer.string_to_sign(aws_request, canonical), aws_request))
