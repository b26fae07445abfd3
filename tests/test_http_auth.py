"""SigV4 verification (against requests signed by botocore itself), the
credentials file, and the safe unpacking of deployment packages."""

from __future__ import annotations

import datetime
import io
import os
import stat
import zipfile
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from http_helpers import zip_of

from sandbox.errors import (
    IncompleteSignatureException,
    InvalidParameterValueException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    RequestTooLargeException,
    UnrecognizedClientException,
)
from sandbox.http import deployment
from sandbox.http.credentials import read_credentials_file
from sandbox.http.sigv4 import SecretKey, SignedRequest, verify

KEYS = {"AKID": SecretKey("secret"), "TOKENED": SecretKey("s2", session_token="tok")}
PATH = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/" \
       "invocations?Qualifier=%24LATEST"


def signed(key: str = "AKID", secret: str = "secret", body: bytes = b'{"a": 1}',
           token: str | None = None, service: str = "lambda") -> SignedRequest:
    """A request as botocore signs it, turned into what the server receives."""
    request = AWSRequest(method="POST", url=f"http://127.0.0.1:9001{PATH}", data=body,
                         headers={"Content-Type": "application/json",
                                  "X-Amz-Invocation-Type": "RequestResponse"})
    SigV4Auth(Credentials(key, secret, token), service, "eu-west-1").add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = "127.0.0.1:9001"
    headers["User-Agent"] = "added by a proxy after signing"
    return SignedRequest("POST", PATH, headers, body)


def test_a_request_signed_by_botocore_verifies() -> None:
    assert verify(signed(), KEYS) == "AKID"
    assert verify(signed("TOKENED", "s2", token="tok"), KEYS) == "TOKENED"


def test_each_signed_part_is_checked() -> None:
    request = signed()
    for changed in (SignedRequest("PUT", request.raw_path, request.headers, request.body),
                    SignedRequest("POST", request.raw_path.replace("LATEST", "OTHER"),
                                  request.headers, request.body),
                    SignedRequest("POST", request.raw_path, request.headers, b'{"a": 2}'),
                    SignedRequest("POST", request.raw_path,
                                  {**request.headers, "X-Amz-Invocation-Type": "Event"},
                                  request.body)):
        with pytest.raises(InvalidSignatureException, match="does not match"):
            verify(changed, KEYS)


def test_refusals_name_their_reason() -> None:
    with pytest.raises(MissingAuthenticationTokenException):
        verify(SignedRequest("GET", "/", {}, b""), KEYS)
    with pytest.raises(IncompleteSignatureException):
        verify(SignedRequest("GET", "/", {"Authorization": "AWS4-HMAC-SHA256 nonsense"}, b""),
               KEYS)
    with pytest.raises(UnrecognizedClientException):
        verify(signed("NOBODY"), KEYS)
    with pytest.raises(UnrecognizedClientException):
        verify(signed("TOKENED", "s2", token="wrong"), KEYS)
    with pytest.raises(InvalidSignatureException, match="does not match"):
        verify(signed(secret="guess"), KEYS)
    with pytest.raises(InvalidSignatureException, match="service"):
        verify(signed(service="s3"), KEYS)


def test_a_signature_older_than_15_minutes_has_expired() -> None:
    request = signed()
    now = datetime.datetime.now(datetime.UTC)
    assert verify(request, KEYS, now=now + datetime.timedelta(minutes=14)) == "AKID"
    with pytest.raises(InvalidSignatureException, match="Signature expired"):
        verify(request, KEYS, now=now + datetime.timedelta(minutes=16))
    with pytest.raises(InvalidSignatureException, match="Signature expired"):
        verify(request, KEYS, now=now - datetime.timedelta(minutes=16))


# -- credentials file ------------------------------------------------------------------
def test_credentials_file_maps_profiles_to_principals(tmp_path: Any) -> None:
    path = tmp_path / "credentials"
    path.write_text(
        "[bob]\naws_access_key_id = AKIDBOB\naws_secret_access_key = b0b\n\n"
        "[ops]\naws_access_key_id = AKIDOPS\naws_secret_access_key = 0ps\n"
        "principal = arn:aws:iam::000000000000:role/ops  # a session of the role\n\n"
        "[partner]\naws_access_key_id = AKIDP\naws_secret_access_key = p\n"
        "principal = 111122223333\n")
    found = read_credentials_file(path, "000000000000")
    assert found["AKIDBOB"].principal == "arn:aws:iam::000000000000:user/bob"
    assert found["AKIDBOB"].secret == SecretKey("b0b")
    assert found["AKIDOPS"].principal == "arn:aws:iam::000000000000:role/ops"
    assert found["AKIDP"].principal == "arn:aws:iam::111122223333:root"


@pytest.mark.parametrize("text, problem", [
    ("[a]\naws_access_key_id = K\n", "aws_secret_access_key"),
    ("[a]\naws_access_key_id = K\naws_secret_access_key = s\nprincipal = someone\n",
     "principal must be"),
    ("[a]\naws_access_key_id = K\naws_secret_access_key = s\n"
     "[b]\naws_access_key_id = K\naws_secret_access_key = t\n", "more than one profile"),
    ("not an ini file", "cannot read"),
])
def test_bad_credentials_files_are_refused(tmp_path: Any, text: str, problem: str) -> None:
    path = tmp_path / "credentials"
    path.write_text(text)
    with pytest.raises(InvalidParameterValueException, match=problem):
        read_credentials_file(path, "000000000000")


# -- deployment packages ---------------------------------------------------------------
def raw_zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def test_a_zip_unpacks_with_its_directories_and_modes(tmp_path: Any) -> None:
    script = zipfile.ZipInfo("bin/tool")
    script.external_attr = (stat.S_IFREG | 0o755) << 16
    target = deployment.unpack_zip(raw_zip([("pkg/mod.py", b"X = 1\n"), (script, b"#!/bin/sh\n"),
                                            ("app.py", b"")]), str(tmp_path))
    assert os.path.dirname(target) == str(tmp_path)
    assert (tmp_path / target / "pkg" / "mod.py").read_bytes() == b"X = 1\n"
    assert os.stat(os.path.join(target, "bin", "tool")).st_mode & 0o100
    assert not os.stat(os.path.join(target, "app.py")).st_mode & 0o022


@pytest.mark.parametrize("name", ["../escape.py", "/etc/owned.py", "a/../../escape.py"])
def test_a_zip_entry_outside_the_directory_is_refused(tmp_path: Any, name: str) -> None:
    with pytest.raises(InvalidParameterValueException, match="outside"):
        deployment.unpack_zip(raw_zip([(name, b"x")]), str(tmp_path / "code"))
    assert not (tmp_path / "escape.py").exists()


def test_a_symbolic_link_in_a_zip_is_refused(tmp_path: Any) -> None:
    link = zipfile.ZipInfo("evil")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(InvalidParameterValueException, match="symbolic link"):
        deployment.unpack_zip(raw_zip([(link, b"/etc/passwd")]), str(tmp_path))


def test_duplicate_entries_leave_nothing_behind(tmp_path: Any) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = raw_zip([("app.py", b"1"), ("app.py", b"2")])
    with pytest.raises(InvalidParameterValueException, match="unzip"):
        deployment.unpack_zip(data, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_zip_size_quotas(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployment, "ZIP_UNZIPPED_MAX", 1000)
    with pytest.raises(RequestTooLargeException, match="Unzipped size"):
        deployment.unpack_zip(raw_zip([("big.txt", b"z" * 1001)]), str(tmp_path))
    monkeypatch.setattr(deployment, "ZIP_ENTRIES_MAX", 2)
    with pytest.raises(RequestTooLargeException, match="entries"):
        deployment.unpack_zip(raw_zip([(f"{i}.py", b"") for i in range(3)]), str(tmp_path))
    monkeypatch.setattr(deployment, "ZIP_UPLOAD_MAX", 10)
    with pytest.raises(RequestTooLargeException):
        deployment.resolve_code({"ZipFile": zip_of({"app.py": "x = 1"})}, str(tmp_path))


def test_a_profile_naming_an_undefined_role_is_refused_at_start(tmp_path: Any) -> None:
    from sandbox import Runtime
    from sandbox.http import CredentialStore
    from sandbox.http.credentials import ensure_identities

    path = tmp_path / "credentials"
    path.write_text("[ops]\naws_access_key_id = K\naws_secret_access_key = s\n"
                    "principal = arn:aws:iam::000000000000:role/ops\n"
                    "[bob]\naws_access_key_id = B\naws_secret_access_key = b\n")
    store = CredentialStore(read_credentials_file(path, "000000000000"))
    with Runtime() as rt:
        with pytest.raises(InvalidParameterValueException, match="role/ops, which is not"):
            ensure_identities(store, rt)
        rt.create_role("ops", {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"}]})
        assert ensure_identities(store, rt) == ["arn:aws:iam::000000000000:user/bob"]
        assert ensure_identities(store, rt) == []
