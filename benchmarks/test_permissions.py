"""Cost of the permission checks (sandbox/iam).

Run::

    .venv/bin/python -m pytest benchmarks/test_permissions.py --benchmark-only

Groups:

authorize-check    Authorizer.authorize_invoke alone: the account root with no
                   function policy (the Python API's default, a fast path), and a
                   user of another account against identity and resource policies
                   with conditions (full evaluation).
warm-authorized    rt.invoke of a warm no-op function by the default caller and by
                   that cross-account user: what the check adds to a warm invoke.
platform-call      rt.invoke of a warm function whose handler makes one
                   platform.invoke of a warm no-op function (two invocations and one
                   PLATFORM_CALL round trip).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from sandbox import Runtime

from .conftest import HANDLERS

OTHER = "111122223333"
CALLER_SOURCE = """
from sandbox.client import platform

def handler(event, context):
    return platform.invoke("perm-noop", {})["StatusCode"]
"""


@pytest.fixture(scope="module")
def setup(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    runtime.create_function("perm-noop", handler="app.handler", code=HANDLERS["noop"])
    user = runtime.create_user("bench", [{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "lambda:Invoke*", "Resource": "arn:aws:lambda:*"},
        {"Effect": "Deny", "Action": "lambda:*", "Resource": "*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                       "Bool": {"aws:ViaAWSService": "true"}}}]}], account=OTHER)
    runtime.add_permission("perm-noop", "other", "lambda:InvokeFunction", OTHER)
    runtime.add_permission("perm-noop", "sqs", "lambda:InvokeFunction", "sqs.amazonaws.com",
                           source_arn="arn:aws:sqs:us-east-1:000000000000:q",
                           source_account="000000000000")
    role = runtime.create_role("bench-role", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}, [{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]}])
    code = tmp_path_factory.mktemp("perm-caller")
    (code / "app.py").write_text(CALLER_SOURCE)
    runtime.create_function("perm-caller", handler="app.handler", code=os.fspath(code),
                            role=role)
    for name in ("perm-noop", "perm-caller"):
        assert runtime.invoke(name, {}).function_error is None
    return {"user": user}


@pytest.mark.benchmark(group="authorize-check")
@pytest.mark.parametrize("caller", ["root-no-policy", "cross-account-user"])
def test_authorize_check(benchmark: Any, runtime: Runtime, setup: dict[str, Any],
                         caller: str) -> None:
    authorizer = runtime._authorizer
    arn = runtime.function_arn("perm-noop")
    if caller == "root-no-policy":
        runtime.create_function("perm-open", handler="app.handler", code=HANDLERS["noop"])
        benchmark(authorizer.authorize_invoke, None, "perm-open", arn)
    else:
        benchmark(authorizer.authorize_invoke, setup["user"], "perm-noop", arn)


@pytest.mark.benchmark(group="warm-authorized")
@pytest.mark.parametrize("caller", ["default", "cross-account-user"])
def test_warm_invoke_with_check(benchmark: Any, runtime: Runtime, setup: dict[str, Any],
                                caller: str) -> None:
    who = None if caller == "default" else setup["user"]
    result = benchmark(runtime.invoke, "perm-noop", {}, caller=who)
    assert result.function_error is None


@pytest.mark.benchmark(group="platform-call")
def test_warm_invoke_making_a_platform_call(benchmark: Any, runtime: Runtime,
                                            setup: dict[str, Any]) -> None:
    result = benchmark(runtime.invoke, "perm-caller", {})
    assert result.payload == 200
