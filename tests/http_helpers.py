"""Helpers of the HTTP API tests: zips, boto3 clients, served runtimes."""

from __future__ import annotations

import io
import textwrap
import zipfile
from typing import Any

import boto3
from botocore.config import Config

from sandbox.http import CredentialStore, LambdaServer, ServerThread, default_credentials
from sandbox.http.credentials import Credential, ensure_identities
from sandbox.http.sigv4 import SecretKey

ROLE = "arn:aws:iam::000000000000:role/http-test"


def zip_of(files: dict[str, str]) -> bytes:
    """A zip holding ``files`` (name → dedented source)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, source in files.items():
            archive.writestr(name, textwrap.dedent(source))
    return buffer.getvalue()


def client(url: str, key: str = "test", secret: str = "test", **config: Any) -> Any:
    """boto3's Lambda client for a served runtime; no retries, so a throttle
    or a refusal is seen as it is."""
    return boto3.client(
        "lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}, **config))


def serve(runtime: Any, extra: dict[str, str] | None = None, **options: Any) -> ServerThread:
    """A started server on a free loopback port; ``extra`` maps more access
    keys (secret = key) to principals, created as IAM users when users."""
    pairs = default_credentials(runtime.account_id)
    for key, principal in (extra or {}).items():
        pairs[key] = Credential(key, SecretKey(key), principal)
    credentials = CredentialStore(pairs)
    ensure_identities(credentials, runtime)
    return ServerThread(LambdaServer(runtime, port=0, credentials=credentials,
                                     **options)).start()
