"""The Lambda REST API end to end: the real boto3 client against a server on
a free loopback port, over a real Runtime (real zygotes and environments).
Every served operation, the shapes boto3 parses, its modelled exceptions,
Tail logs, permissions with authenticated callers, and parallel invokes."""

from __future__ import annotations

import base64
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions
import pytest
from conftest import wait_for
from http_helpers import ROLE, client, serve, zip_of

from sandbox import Runtime

BOB = "arn:aws:iam::000000000000:user/bob"

ECHO = {"app.py": """
    import os

    def handler(event, context):
        print("echo says", event)
        if isinstance(event, dict) and event.get("fail"):
            raise ValueError("asked to fail")
        if isinstance(event, dict) and event.get("big"):
            return "x" * 1000
        return {"event": event, "version": "one", "memory": context.memory_limit_in_mb,
                "env": os.environ.get("COLOUR"), "client": context.client_context and
                context.client_context.custom}
    """}
ECHO_TWO = {"app.py": """
    def handler(event, context):
        return {"event": event, "version": "two"}
    """}


@pytest.fixture(scope="module")
def served() -> Iterator[Any]:
    rt = Runtime(idle_timeout_s=120)
    server = serve(rt, {"bob": BOB})
    try:
        yield server
    finally:
        server.stop()
        rt.close()


@pytest.fixture(scope="module")
def lam(served: Any) -> Any:
    return client(served.url)


@pytest.fixture(scope="module")
def echo(lam: Any) -> str:
    lam.create_function(FunctionName="echo", Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)},
                        Environment={"Variables": {"COLOUR": "blue"}}, MemorySize=256,
                        Timeout=5, Description="echoes")
    return "echo"


def logged(runtime: Any, function: str) -> str:
    """The function's log so far."""
    with open(runtime.log_path(function), encoding="utf-8") as file:
        return file.read()


def payload(reply: dict[str, Any]) -> Any:
    return json.loads(reply["Payload"].read())


# -- functions ------------------------------------------------------------------------
def test_create_function_from_zip_returns_its_configuration(lam: Any, echo: str) -> None:
    config = lam.get_function_configuration(FunctionName=echo)
    assert config["FunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo"
    assert (config["Handler"], config["MemorySize"], config["Timeout"]) == ("app.handler",
                                                                            256, 5)
    assert config["Environment"]["Variables"] == {"COLOUR": "blue"}
    assert config["Description"] == "echoes" and config["Role"] == ROLE
    function = lam.get_function(FunctionName=config["FunctionArn"])
    assert function["Configuration"]["FunctionName"] == echo
    assert os.path.isfile(os.path.join(function["Code"]["Location"], "app.py"))


def test_invoke_returns_the_payload_version_and_tail_log(lam: Any, echo: str) -> None:
    reply = lam.invoke(FunctionName=echo, Payload=json.dumps({"a": 1}), LogType="Tail")
    assert reply["StatusCode"] == 200 and reply["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in reply
    assert payload(reply) == {"event": {"a": 1}, "version": "one", "memory": "256",
                              "env": "blue", "client": None}
    log = base64.b64decode(reply["LogResult"]).decode()
    assert log.startswith("START RequestId: ") and "echo says {'a': 1}" in log
    assert "\nEND RequestId: " in log and "\nREPORT RequestId: " in log
    assert reply["ResponseMetadata"]["RequestId"] in log


def test_tail_log_is_the_last_4_kb(lam: Any, echo: str) -> None:
    big = {"text": "y" * 6000}
    reply = lam.invoke(FunctionName=echo, Payload=json.dumps(big), LogType="Tail")
    log = base64.b64decode(reply["LogResult"])
    assert len(log) == 4096 and b"REPORT RequestId" in log and not log.startswith(b"START")


def test_function_error_is_a_200_with_the_error_document(lam: Any, echo: str) -> None:
    reply = lam.invoke(FunctionName=echo, Payload=b'{"fail": true}')
    assert reply["StatusCode"] == 200 and reply["FunctionError"] == "Unhandled"
    document = payload(reply)
    assert document["errorType"] == "ValueError" and document["errorMessage"] == "asked to fail"


def test_client_context_reaches_the_handler(lam: Any, echo: str) -> None:
    context = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    reply = lam.invoke(FunctionName=echo, ClientContext=context)
    assert payload(reply)["client"] == {"k": "v"}


def test_dry_run_is_204_and_runs_nothing(lam: Any, echo: str) -> None:
    reply = lam.invoke(FunctionName=echo, InvocationType="DryRun")
    assert reply["StatusCode"] == 204 and reply["Payload"].read() == b""


def test_event_invocation_is_accepted_with_202(lam: Any, echo: str) -> None:
    reply = lam.invoke(FunctionName=echo, InvocationType="Event", Payload=b"{}")
    assert reply["StatusCode"] == 202 and reply["Payload"].read() == b""
    with pytest.raises(lam.exceptions.RequestTooLargeException):  # 1 MiB for Event
        lam.invoke(FunctionName=echo, InvocationType="Event",
                   Payload=b'"' + b"x" * (1024 * 1024) + b'"')


def test_qualifier(lam: Any, echo: str) -> None:
    assert lam.invoke(FunctionName=echo, Qualifier="$LATEST")["StatusCode"] == 200
    assert lam.invoke(FunctionName=f"{echo}:$LATEST")["StatusCode"] == 200
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=echo, Qualifier="7")


def test_payload_over_6_mb_is_request_too_large(lam: Any, echo: str) -> None:
    with pytest.raises(lam.exceptions.RequestTooLargeException) as caught:
        lam.invoke(FunctionName=echo, Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"')
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_invalid_json_payload(lam: Any, echo: str) -> None:
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=echo, Payload=b"{not json")


def test_modelled_exceptions(lam: Any, echo: str) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as caught:
        lam.get_function(FunctionName="missing")
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
        "ResourceNotFoundException")
    assert "function:missing" in error["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function(FunctionName=echo, Runtime="python3.11", Role=ROLE,
                            Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="memory_mb"):
        lam.create_function(FunctionName="bad-memory", Runtime="python3.11", Role=ROLE,
                            Handler="app.handler", Code={"ZipFile": zip_of(ECHO)},
                            MemorySize=20000)
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="Runtime"):
        lam.create_function(FunctionName="bad-runtime", Runtime="nodejs20.x", Role=ROLE,
                            Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="unzip"):
        lam.create_function(FunctionName="bad-zip", Runtime="python3.11", Role=ROLE,
                            Handler="app.handler", Code={"ZipFile": b"not a zip"})
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="S3"):
        lam.create_function(FunctionName="s3", Runtime="python3.11", Role=ROLE,
                            Handler="app.handler", Code={"S3Bucket": "my-bucket", "S3Key": "k.zip"})
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]].count("bad-zip") == 0


def test_update_code_configuration_and_delete(lam: Any, tmp_path: Any) -> None:
    lam.create_function(FunctionName="changing", Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    assert payload(lam.invoke(FunctionName="changing"))["version"] == "one"
    before = lam.get_function_configuration(FunctionName="changing")["RevisionId"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        lam.update_function_code(FunctionName="changing", ZipFile=zip_of(ECHO_TWO),
                                 RevisionId="stale")
    assert caught.value.response["Error"]["Code"] == "PreconditionFailedException"
    updated = lam.update_function_code(FunctionName="changing", ZipFile=zip_of(ECHO_TWO),
                                       RevisionId=before)
    assert updated["RevisionId"] != before
    assert payload(lam.invoke(FunctionName="changing"))["version"] == "two"
    config = lam.update_function_configuration(
        FunctionName="changing", MemorySize=512, Timeout=9,
        Environment={"Variables": {"COLOUR": "red"}})
    assert (config["MemorySize"], config["Timeout"]) == (512, 9)
    assert config["Environment"]["Variables"] == {"COLOUR": "red"}
    # a local directory, used in place (LocalStack's hot-reload convention)
    (tmp_path / "app.py").write_text("def handler(e, c):\n    return 'local'\n")
    lam.update_function_code(FunctionName="changing", S3Bucket="hot-reload",
                             S3Key=str(tmp_path))
    assert payload(lam.invoke(FunctionName="changing")) == "local"
    lam.delete_function(FunctionName="changing")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="changing")


def test_list_functions_pages_with_markers(lam: Any, echo: str) -> None:
    for name in ("page-a", "page-b"):
        lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                            Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    first = lam.list_functions(MaxItems=1)
    assert len(first["Functions"]) == 1 and "NextMarker" in first
    names = [f["FunctionName"] for page in lam.get_paginator("list_functions").paginate(
        PaginationConfig={"PageSize": 1}) for f in page["Functions"]]
    assert names == sorted(names) and {"echo", "page-a", "page-b"} <= set(names)
    assert len(names) == len(set(names))


# -- permissions and callers ------------------------------------------------------------
def test_permissions_and_an_authenticated_caller(served: Any, lam: Any) -> None:
    lam.create_function(FunctionName="guarded", Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    bob = client(served.url, "bob", "bob")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bob.invoke(FunctionName="guarded")
    error = caught.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert error["Message"].startswith(f"User: {BOB} is not authorized to perform: "
                                       "lambda:InvokeFunction")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName="guarded")
    added = lam.add_permission(FunctionName="guarded", StatementId="bob",
                               Action="lambda:InvokeFunction", Principal=BOB)
    assert json.loads(added["Statement"])["Principal"] == {"AWS": BOB}
    policy = lam.get_policy(FunctionName="guarded")
    assert [s["Sid"] for s in json.loads(policy["Policy"])["Statement"]] == ["bob"]
    assert bob.invoke(FunctionName="guarded")["StatusCode"] == 200
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.add_permission(FunctionName="guarded", StatementId="bob",
                           Action="lambda:InvokeFunction", Principal=BOB)
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_permission(FunctionName="guarded", StatementId="bob", RevisionId="stale")
    lam.remove_permission(FunctionName="guarded", StatementId="bob",
                          RevisionId=policy["RevisionId"])
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        bob.invoke(FunctionName="guarded")
    # management operations are IAM actions: bob has no identity policy
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bob.list_functions()
    assert "lambda:ListFunctions" in caught.value.response["Error"]["Message"]


def test_transport_condition_keys_reach_the_policy(served: Any, lam: Any, echo: str) -> None:
    runtime = served.server.runtime
    bob = client(served.url, "bob", "bob")

    def allow_when(condition: dict[str, Any]) -> None:
        runtime.put_user_policies(BOB, [{"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*",
            "Condition": condition}]}])

    try:
        allow_when({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
                    "Bool": {"aws:SecureTransport": "false"}})
        assert bob.invoke(FunctionName=echo)["StatusCode"] == 200
        allow_when({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            bob.invoke(FunctionName=echo)
        allow_when({"Bool": {"aws:SecureTransport": "true"}})
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            bob.invoke(FunctionName=echo)
    finally:
        runtime.put_user_policies(BOB, [])


def test_unknown_role_is_created_without_permissions(served: Any, lam: Any) -> None:
    role = "arn:aws:iam::000000000000:role/made-up"
    lam.create_function(FunctionName="with-role", Runtime="python3.11", Role=role,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    runtime = served.server.runtime
    created = runtime._authorizer.registry.role(role)
    assert created.policies == ()
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="account"):
        lam.create_function(FunctionName="other-account", Runtime="python3.11",
                            Role="arn:aws:iam::111122223333:role/x", Handler="app.handler",
                            Code={"ZipFile": zip_of(ECHO)})


def test_strict_roles_refuse_an_undefined_role(served: Any) -> None:
    strict = serve(served.server.runtime, strict_roles=True)
    try:
        lam = client(strict.url)
        with pytest.raises(lam.exceptions.InvalidParameterValueException,
                           match="cannot be assumed by Lambda"):
            lam.create_function(FunctionName="strict", Runtime="python3.11",
                                Role="arn:aws:iam::000000000000:role/never-defined",
                                Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    finally:
        strict.stop()


# -- the invocation model: concurrency, event invoke configs, event source mappings ----------
POLLER_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["sqs:*"], "Resource": "*"}]}
LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


def test_every_operation_is_served(served: Any) -> None:
    from sandbox.http.routes import PENDING, ROUTES

    assert PENDING == ()
    operations = {route.operation for route in ROUTES}
    assert {"PutFunctionConcurrency", "GetFunctionConcurrency", "DeleteFunctionConcurrency",
            "PutFunctionEventInvokeConfig", "UpdateFunctionEventInvokeConfig",
            "GetFunctionEventInvokeConfig", "DeleteFunctionEventInvokeConfig",
            "ListFunctionEventInvokeConfigs", "CreateEventSourceMapping",
            "GetEventSourceMapping", "ListEventSourceMappings", "UpdateEventSourceMapping",
            "DeleteEventSourceMapping"} <= operations


def test_reserved_concurrency(served: Any, lam: Any, echo: str) -> None:
    assert "Concurrency" not in lam.get_function(FunctionName=echo)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=echo)
    reply = lam.put_function_concurrency(FunctionName=echo, ReservedConcurrentExecutions=7)
    assert reply["ReservedConcurrentExecutions"] == 7
    assert lam.get_function_concurrency(FunctionName=echo)["ReservedConcurrentExecutions"] == 7
    assert lam.get_function(FunctionName=echo)["Concurrency"] == {
        "ReservedConcurrentExecutions": 7}
    with pytest.raises(lam.exceptions.InvalidParameterValueException,
                       match="UnreservedConcurrentExecution"):
        lam.put_function_concurrency(FunctionName=echo, ReservedConcurrentExecutions=1000)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_concurrency(FunctionName="missing", ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="unqualified"):
        lam.get_function_concurrency(FunctionName=f"{echo}:$LATEST")
    with pytest.raises(botocore.exceptions.ClientError, match="lambda:PutFunctionConcurrency"):
        client(served.url, "bob", "bob").put_function_concurrency(
            FunctionName=echo, ReservedConcurrentExecutions=1)
    lam.delete_function_concurrency(FunctionName=echo)
    assert "Concurrency" not in lam.get_function(FunctionName=echo)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_concurrency(FunctionName="missing")


def test_zero_reserved_concurrency_throttles_invokes(lam: Any) -> None:
    lam.create_function(FunctionName="stopped", Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    lam.put_function_concurrency(FunctionName="stopped", ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException) as caught:
        lam.invoke(FunctionName="stopped")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    lam.delete_function(FunctionName="stopped")


def let_role_send_messages(runtime: Any) -> None:
    """Lambda delivers to a queue destination as the function's role."""
    runtime.update_role(ROLE, policies=[{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}])


def test_event_invoke_config_operations(served: Any, lam: Any, echo: str) -> None:
    runtime = served.server.runtime
    let_role_send_messages(runtime)
    queue = runtime.create_queue("eic-failures")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=echo)
    assert lam.list_function_event_invoke_configs(
        FunctionName=echo)["FunctionEventInvokeConfigs"] == []
    with pytest.raises(lam.exceptions.ResourceNotFoundException, match="EventInvokeConfig"):
        lam.update_function_event_invoke_config(FunctionName=echo, MaximumRetryAttempts=0)
    put = lam.put_function_event_invoke_config(
        FunctionName=echo, MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": queue}})
    assert put["FunctionArn"] == f"{runtime.function_arn(echo)}:$LATEST"
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (1, 21600)
    assert put["DestinationConfig"]["OnFailure"] == {"Destination": queue}
    assert put["LastModified"].year >= 2024  # a timestamp boto3 parsed
    updated = lam.update_function_event_invoke_config(FunctionName=echo,
                                                      MaximumEventAgeInSeconds=300)
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (1, 300)
    assert updated["DestinationConfig"]["OnFailure"] == {"Destination": queue}
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="at least one"):
        lam.update_function_event_invoke_config(FunctionName=echo)
    got = lam.get_function_event_invoke_config(FunctionName=echo, Qualifier="$LATEST")
    assert got["MaximumEventAgeInSeconds"] == 300
    listed = lam.list_function_event_invoke_configs(FunctionName=echo)
    assert [c["FunctionArn"] for c in listed["FunctionEventInvokeConfigs"]] == [
        put["FunctionArn"]]
    # a Put replaces the whole configuration
    replaced = lam.put_function_event_invoke_config(FunctionName=echo, MaximumRetryAttempts=0)
    assert replaced["MaximumEventAgeInSeconds"] == 21600
    assert replaced["DestinationConfig"].get("OnFailure", {}) == {}
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_event_invoke_config(
            FunctionName=echo, DestinationConfig={"OnSuccess": {"Destination": "not-an-arn"}})
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName=echo, Qualifier="3",
                                             MaximumRetryAttempts=0)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_function_event_invoke_config(FunctionName="missing", MaximumRetryAttempts=0)
    with pytest.raises(botocore.exceptions.ClientError,
                       match="lambda:GetFunctionEventInvokeConfig"):
        client(served.url, "bob", "bob").get_function_event_invoke_config(FunctionName=echo)
    lam.delete_function_event_invoke_config(FunctionName=echo)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_event_invoke_config(FunctionName=echo)


def test_event_invoke_reaches_the_on_success_queue(served: Any, lam: Any) -> None:
    runtime = served.server.runtime
    lam.create_function(FunctionName="async-echo", Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    let_role_send_messages(runtime)
    queue = runtime.create_queue("async-successes")
    lam.put_function_event_invoke_config(
        FunctionName="async-echo", DestinationConfig={"OnSuccess": {"Destination": queue}})
    reply = lam.invoke(FunctionName="async-echo", InvocationType="Event",
                       Payload=json.dumps({"n": 42}))
    assert reply["StatusCode"] == 202
    request_id = reply["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    messages = runtime.receive_messages(queue, wait_s=20)
    assert len(messages) == 1
    record = json.loads(messages[0]["body"])
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["functionArn"] == (
        runtime.function_arn("async-echo") + ":$LATEST")
    assert record["requestPayload"] == {"n": 42}
    assert record["responsePayload"]["event"] == {"n": 42}
    assert request_id  # every reply names its request


def test_event_source_mappings_over_the_api(served: Any, lam: Any) -> None:
    runtime = served.server.runtime
    role = runtime.create_role("http-poller", LAMBDA_TRUST, [POLLER_POLICY])
    lam.create_function(FunctionName="consumer", Runtime="python3.11", Role=role,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    queue = runtime.create_queue("http-jobs")
    other = runtime.create_queue("http-other")
    created = lam.create_event_source_mapping(FunctionName="consumer", EventSourceArn=queue,
                                              BatchSize=5)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    uuid = created["UUID"]
    assert (created["FunctionArn"], created["EventSourceArn"], created["BatchSize"],
            created["MaximumBatchingWindowInSeconds"], created["State"]) == (
        runtime.function_arn("consumer"), queue, 5, 0, "Enabled")
    assert created["EventSourceMappingArn"].endswith(f":event-source-mapping:{uuid}")
    assert created["FunctionResponseTypes"] == [] and "StartingPosition" not in created
    # the mapping polls the queue and invokes the function
    runtime.send_message(queue, json.dumps({"marker": "polled-by-the-mapping"}))
    assert wait_for(lambda: "polled-by-the-mapping" in logged(runtime, "consumer"),
                    timeout=20)
    assert wait_for(lambda: runtime.get_queue(queue)["approximate_number_of_messages"] == 0
                    and runtime.get_queue(queue)[
                        "approximate_number_of_messages_not_visible"] == 0, timeout=20)
    second = lam.create_event_source_mapping(
        FunctionName=runtime.function_arn("consumer"), EventSourceArn=other, Enabled=False,
        FunctionResponseTypes=["ReportBatchItemFailures"])
    assert second["State"] == "Disabled"
    assert second["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert lam.get_event_source_mapping(UUID=uuid)["BatchSize"] == 5
    listed = lam.list_event_source_mappings(FunctionName="consumer")["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [uuid, second["UUID"]]
    by_source = lam.list_event_source_mappings(EventSourceArn=other)["EventSourceMappings"]
    assert [m["UUID"] for m in by_source] == [second["UUID"]]
    first_page = lam.list_event_source_mappings(FunctionName="consumer", MaxItems=1)
    assert [m["UUID"] for m in first_page["EventSourceMappings"]] == [uuid]
    rest = lam.list_event_source_mappings(FunctionName="consumer", MaxItems=1,
                                          Marker=first_page["NextMarker"])
    assert [m["UUID"] for m in rest["EventSourceMappings"]] == [second["UUID"]]
    assert "NextMarker" not in rest
    updated = lam.update_event_source_mapping(UUID=uuid, BatchSize=2, Enabled=False)
    assert (updated["BatchSize"], updated["State"]) == (2, "Disabled")
    assert lam.get_event_source_mapping(UUID=uuid)["State"] == "Disabled"
    # errors as boto3 models them
    with pytest.raises(lam.exceptions.ResourceConflictException, match=uuid):
        lam.create_event_source_mapping(FunctionName="consumer", EventSourceArn=queue)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_event_source_mapping(FunctionName="missing", EventSourceArn=queue)
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="queue"):
        lam.create_event_source_mapping(
            FunctionName="consumer", EventSourceArn=queue.replace("http-jobs", "no-such"))
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="FilterCriteria"):
        lam.create_event_source_mapping(
            FunctionName="consumer", EventSourceArn=runtime.create_queue("http-filtered"),
            FilterCriteria={"Filters": [{"Pattern": "{}"}]})
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="stream"):
        lam.create_event_source_mapping(
            FunctionName="consumer", EventSourceArn=runtime.create_queue("http-positioned"),
            StartingPosition="LATEST")
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="batch"):
        lam.update_event_source_mapping(UUID=uuid, BatchSize=50)  # needs a batching window
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000",
                                        BatchSize=1)
    with pytest.raises(botocore.exceptions.ClientError, match="lambda:ListEventSourceMappings"):
        client(served.url, "bob", "bob").list_event_source_mappings()
    deleted = lam.delete_event_source_mapping(UUID=uuid)
    assert deleted["State"] == "Deleting" and deleted["ResponseMetadata"][
        "HTTPStatusCode"] == 202
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_event_source_mapping(UUID=uuid)
    lam.delete_event_source_mapping(UUID=second["UUID"])


def test_stream_mappings_over_the_api(served: Any, lam: Any) -> None:
    runtime = served.server.runtime
    role = runtime.create_role("http-stream-poller", LAMBDA_TRUST, [{
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kinesis:*",
                                                "Resource": "*"}]}])
    lam.create_function(FunctionName="reader", Runtime="python3.11", Role=role,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    stream = runtime.create_stream("http-clicks")
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="starting_position"):
        lam.create_event_source_mapping(FunctionName="reader", EventSourceArn=stream)
    created = lam.create_event_source_mapping(
        FunctionName="reader", EventSourceArn=stream, StartingPosition="TRIM_HORIZON",
        BatchSize=10, MaximumRetryAttempts=1, BisectBatchOnFunctionError=True)
    assert (created["StartingPosition"], created["MaximumRetryAttempts"],
            created["BisectBatchOnFunctionError"], created["ParallelizationFactor"],
            created["MaximumRecordAgeInSeconds"]) == ("TRIM_HORIZON", 1, True, 1, -1)
    runtime.put_record(stream, b"read-from-the-stream", "k")
    data = base64.b64encode(b"read-from-the-stream").decode()  # Kinesis events carry base64
    assert wait_for(lambda: data in logged(runtime, "reader"), timeout=20)
    lam.delete_event_source_mapping(UUID=created["UUID"])


# -- authentication ------------------------------------------------------------------
def test_a_wrong_secret_is_an_invalid_signature(served: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client(served.url, "test", "not-the-secret").list_functions()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_unknown_key_is_an_unrecognized_client(served: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client(served.url, "AKIDUNKNOWN", "x").list_functions()
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_a_body_changed_after_signing_is_refused(served: Any, echo: str) -> None:
    lam = client(served.url)

    def tamper(request: Any, **_: Any) -> None:
        request.body = b'{"tampered": true}'
        request.headers["Content-Length"] = str(len(request.body))

    lam.meta.events.register("before-send.lambda.Invoke", tamper)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        lam.invoke(FunctionName=echo, Payload=b'{"original": true}')
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_an_unsigned_request_is_refused(served: Any) -> None:
    request = urllib.request.Request(f"{served.url}/2015-03-31/functions")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403
    assert caught.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(caught.value.read())["message"] == "Missing Authentication Token"


def test_an_unknown_path_or_method_is_an_unknown_operation(served: Any) -> None:
    for method, path in (("GET", "/2015-03-31/nothing-here"),
                         ("PATCH", "/2015-03-31/functions/echo")):
        request = urllib.request.Request(f"{served.url}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 404
        assert caught.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"


def test_no_auth_serves_unsigned_requests_as_root() -> None:
    from sandbox.http import LambdaServer, ServerThread

    with Runtime() as rt, ServerThread(LambdaServer(rt, port=0, credentials=None)) as server:
        reply = urllib.request.urlopen(f"{server.url}/2015-03-31/functions", timeout=10)
        assert json.loads(reply.read()) == {"Functions": []}


# -- concurrency, metrics, shutdown ---------------------------------------------------------
BARRIER = {"app.py": """
    import os, time

    def handler(event, context):
        # Each invocation marks its arrival, then waits until all have arrived:
        # they can only all return if they ran at the same time.
        directory = event["dir"]
        open(os.path.join(directory, context.aws_request_id), "w").close()
        deadline = time.monotonic() + 20
        while len(os.listdir(directory)) < event["n"] and time.monotonic() < deadline:
            time.sleep(0.01)
        if event.get("hold"):
            time.sleep(event["hold"])
        return {"met": len(os.listdir(directory)) >= event["n"], "pid": os.getpid()}
    """}


@pytest.fixture(scope="module")
def host_served() -> Iterator[Any]:
    """Without isolation, so handlers share a directory on the host."""
    rt = Runtime(idle_timeout_s=120, isolation=False, concurrency_limit=6)
    server = serve(rt)
    try:
        lam = client(server.url, max_pool_connections=16)
        lam.create_function(FunctionName="barrier", Runtime="python3.11", Role=ROLE,
                            Handler="app.handler", Code={"ZipFile": zip_of(BARRIER)},
                            Timeout=30)
        yield server, lam
    finally:
        server.stop()
        rt.close()


def test_parallel_invokes_run_at_the_same_time(host_served: Any, tmp_path: Any) -> None:
    _, lam = host_served
    n = 6
    event = json.dumps({"dir": str(tmp_path), "n": n})
    with ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(lambda _: payload(lam.invoke(FunctionName="barrier",
                                                             Payload=event)), range(n)))
    assert all(reply["met"] for reply in replies)
    assert len({reply["pid"] for reply in replies}) == n


def test_beyond_the_concurrency_limit_is_too_many_requests(host_served: Any,
                                                         tmp_path: Any) -> None:
    server, lam = host_served
    runtime = server.server.runtime
    event = json.dumps({"dir": str(tmp_path), "n": 1, "hold": 3})
    with ThreadPoolExecutor(6) as pool:
        holders = [pool.submit(lam.invoke, FunctionName="barrier", Payload=event)
                   for _ in range(6)]
        assert wait_for(lambda: runtime.concurrent_executions == 6, timeout=20)
        with pytest.raises(lam.exceptions.TooManyRequestsException) as caught:
            lam.invoke(FunctionName="barrier", Payload=event)
        assert caught.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
        assert all(h.result()["StatusCode"] == 200 for h in holders)
    metrics = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    assert 'sandbox_throttles_total{function="barrier",type="RequestResponse"} 1.0' in metrics


def test_metrics(served: Any, lam: Any, echo: str) -> None:
    lam.invoke(FunctionName=echo)
    lam.invoke(FunctionName=echo, Payload=b'{"fail": true}')
    text = urllib.request.urlopen(f"{served.url}/metrics", timeout=10).read().decode()
    counted = [line for line in text.splitlines()
               if line.startswith('sandbox_invocations_total{function="echo",'
                                  'type="RequestResponse"}')]
    assert counted and float(counted[0].split()[-1]) >= 2
    assert ('sandbox_invocation_errors_total{error="Unhandled",function="echo",'
            'type="RequestResponse"}') in text
    assert 'sandbox_invocation_duration_seconds_count{function="echo",start=' in text
    assert 'sandbox_init_duration_seconds_count{function="echo",start="snapshot"}' in text
    assert 'sandbox_environments{function="echo",state="idle"}' in text
    assert "sandbox_concurrent_executions 0.0" in text


def test_invocation_model_gauges_and_deliveries(served: Any, lam: Any, echo: str) -> None:
    runtime = served.server.runtime
    role = runtime.create_role("metrics-poller", LAMBDA_TRUST, [POLLER_POLICY])
    lam.create_function(FunctionName="lagging", Runtime="python3.11", Role=role,
                        Handler="app.handler", Code={"ZipFile": zip_of(ECHO)})
    queue = runtime.create_queue("metrics-backlog")
    mapping = lam.create_event_source_mapping(FunctionName="lagging", EventSourceArn=queue,
                                              Enabled=False)
    runtime.send_message(queue, "{}")
    runtime.send_message(queue, "{}")
    # a failed event waits for its retry (a minute away), stored
    lam.put_function_event_invoke_config(FunctionName="lagging", MaximumRetryAttempts=1)
    lam.invoke(FunctionName="lagging", InvocationType="Event", Payload=b'{"fail": true}')
    assert wait_for(lambda: "asked to fail" in logged(runtime, "lagging"),
                    timeout=20)
    assert runtime.async_backlog()["lagging"]["depth"] == 1
    text = urllib.request.urlopen(f"{served.url}/metrics", timeout=10).read().decode()
    assert 'sandbox_async_queue_depth{function="lagging"} 1.0' in text
    age = [line for line in text.splitlines()
           if line.startswith('sandbox_async_event_age_seconds{function="lagging"}')]
    assert age and float(age[0].split()[-1]) > 0.0
    labels = (f'function="lagging",mapping="{mapping["UUID"]}",source="{queue}"')
    assert f"sandbox_mapping_lag_items{{{labels}}} 2.0" in text
    lag = [line for line in text.splitlines()
           if line.startswith(f"sandbox_mapping_lag_seconds{{{labels}}}")]
    assert lag and float(lag[0].split()[-1]) >= 0.0
    # the hook asynchronous delivery and pollers call: Runtime._invoked → listeners
    result = runtime.invoke(echo, {"fail": True})
    runtime._invoked(echo, "async", result)
    runtime._invoked(echo, "mapping", runtime.invoke(echo, {}))
    text = urllib.request.urlopen(f"{served.url}/metrics", timeout=10).read().decode()
    assert ('sandbox_deliveries_total{function="echo",outcome="Unhandled",source="async"} 1.0'
            in text)
    assert ('sandbox_deliveries_total{function="echo",outcome="Success",source="mapping"} 1.0'
            in text)
    lam.delete_event_source_mapping(UUID=mapping["UUID"])


def test_stop_finishes_requests_in_flight(tmp_path: Any) -> None:
    rt = Runtime(idle_timeout_s=120, isolation=False)
    server = serve(rt)
    try:
        lam = client(server.url)
        lam.create_function(FunctionName="barrier", Runtime="python3.11", Role=ROLE,
                            Handler="app.handler", Code={"ZipFile": zip_of(BARRIER)},
                            Timeout=30)
        event = json.dumps({"dir": str(tmp_path), "n": 1, "hold": 1})
        replies: list[Any] = []
        invoker = threading.Thread(target=lambda: replies.append(
            lam.invoke(FunctionName="barrier", Payload=event)))
        invoker.start()
        assert wait_for(lambda: rt.concurrent_executions == 1, timeout=20)
        url = server.url
        server.stop()
        invoker.join()
        prefix = server.server.thread_name_prefix
        assert [t.name for t in threading.enumerate() if t.name.startswith(prefix)] == []
        assert replies[0]["StatusCode"] == 200 and payload(replies[0])["met"]
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            client(url).list_functions()
    finally:
        server.stop()
        rt.close()
