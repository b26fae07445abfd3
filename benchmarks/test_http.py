"""Cost of the HTTP API (sandbox/http).

Run::

    .venv/bin/python -m pytest benchmarks/test_http.py --benchmark-only

Groups:

http-invoke     a warm invoke of the no-op example: rt.invoke in-process, and
                boto3's invoke through the server with SigV4 (signing, HTTP on
                loopback, verification with botocore's signer, the thread pool),
                and the same server with --no-auth.
http-list       ListFunctions through boto3: a management call without a
                function behind it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sandbox import Runtime
from sandbox.http import (
    CredentialStore,
    LambdaServer,
    ServerThread,
    default_credentials,
)

from .conftest import HANDLERS


def _client(url: str) -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture(scope="module")
def served(runtime: Runtime) -> Iterator[dict[str, Any]]:
    runtime.create_function("http-noop", handler="app.handler", code=HANDLERS["noop"])
    runtime.invoke("http-noop", {})
    signed = ServerThread(LambdaServer(runtime, port=0, credentials=CredentialStore(
        default_credentials(runtime.account_id)))).start()
    unsigned = ServerThread(LambdaServer(runtime, port=0, credentials=None)).start()
    try:
        yield {"signed": _client(signed.url), "unsigned": _client(unsigned.url)}
    finally:
        signed.stop()
        unsigned.stop()


@pytest.mark.benchmark(group="http-invoke")
def test_in_process(benchmark: Any, runtime: Runtime, served: dict[str, Any]) -> None:
    benchmark(runtime.invoke, "http-noop", {})


@pytest.mark.benchmark(group="http-invoke")
@pytest.mark.parametrize("auth", ["signed", "unsigned"])
def test_boto3_invoke(benchmark: Any, served: dict[str, Any], auth: str) -> None:
    client = served[auth]
    reply = benchmark(client.invoke, FunctionName="http-noop", Payload=b"{}")
    assert reply["StatusCode"] == 200


@pytest.mark.benchmark(group="http-list")
def test_boto3_list_functions(benchmark: Any, served: dict[str, Any]) -> None:
    benchmark(served["signed"].list_functions)
