"""Permissions end to end (sandbox/iam through the Runtime): resource-based
policies of functions, users and accounts as callers, execution roles and
their trust policies, and platform calls made from inside real environments."""

from __future__ import annotations

import json
import os
import threading

import pytest
from conftest import make_function

from sandbox import Runtime
from sandbox import constants as C
from sandbox.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    MalformedPolicyDocumentException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from sandbox.iam import service

OTHER = "111122223333"
INVOKE = "lambda:InvokeFunction"

ECHO_SOURCE = """
def handler(event, context):
    return {"echo": event, "function": context.function_name}
"""

# Calls each function named in event["calls"] through the platform client and
# reports what happened; event["unhandled"] is called without catching.
CALLER_SOURCE = """
from sandbox.client import platform
from sandbox.errors import AccessDeniedException

def handler(event, context):
    results = {}
    for name in event.get("calls", []):
        try:
            reply = platform.invoke(name, {"from": context.function_name})
            results[name] = {"payload": reply["Payload"], "status": reply["StatusCode"]}
        except AccessDeniedException as exc:
            results[name] = {"denied": str(exc)}
    if event.get("unhandled"):
        platform.invoke(event["unhandled"], {})
    return results
"""

LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


def allow(action=INVOKE, resource="*"):
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}


def deny(action=INVOKE, resource="*"):
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Action": action, "Resource": resource}]}


def denied_message(caller_arn, function_arn, reason="no identity-based policy allows"):
    return (f"User: {caller_arn} is not authorized to perform: lambda:InvokeFunction on "
            f"resource: {function_arn} because {reason} the lambda:InvokeFunction action")


def log_text(rt, name):
    path = rt.log_path(name)
    return open(path).read() if os.path.exists(path) else ""


@pytest.fixture
def echo(runtime):
    make_function(runtime, "echo", ECHO_SOURCE)
    return "echo"


# -- callers and the function's resource-based policy -----------------------------------
def test_the_default_caller_is_the_account_root(runtime, echo):
    assert runtime.invoke(echo, {"a": 1}).payload["echo"] == {"a": 1}
    root = f"arn:aws:iam::{runtime.account_id}:root"
    assert runtime.invoke(echo, {"a": 2}, caller=root).payload["echo"] == {"a": 2}
    assert runtime.invoke(echo, {}, caller=runtime.account_id).function_error is None


def test_a_denied_invocation_runs_nothing(runtime, echo):
    bob = runtime.create_user("bob")
    with pytest.raises(AccessDeniedException) as info:
        runtime.invoke(echo, {}, caller=bob)
    assert str(info.value) == denied_message(bob, runtime.function_arn(echo))
    assert info.value.http_status == 403
    assert info.value.code == "AccessDeniedException"
    assert "START RequestId" not in log_text(runtime, echo)
    assert runtime.stats(echo) == {"idle": 0, "busy": 0}


def test_identity_policy_changes_take_effect_on_the_next_invocation(runtime, echo):
    bob = runtime.create_user("bob", [allow(resource=runtime.function_arn(echo))])
    assert runtime.invoke(echo, {}, caller=bob).function_error is None
    runtime.put_user_policies(bob, [allow(), deny("lambda:Invoke*")])
    with pytest.raises(AccessDeniedException, match="explicit deny in an identity-based"):
        runtime.invoke(echo, {}, caller=bob)
    runtime.put_user_policies(bob, [allow("lambda:*", "arn:aws:lambda:*:*:function:ec?o")])
    assert runtime.invoke(echo, {}, caller=bob).function_error is None


def test_same_account_resource_policy_grants_a_named_user_not_the_account(runtime, echo):
    bob = runtime.create_user("bob")
    runtime.add_permission(echo, "account", INVOKE, runtime.account_id)
    with pytest.raises(AccessDeniedException):  # the account delegates to identity policies
        runtime.invoke(echo, {}, caller=bob)
    runtime.add_permission(echo, "bob", INVOKE, bob)
    assert runtime.invoke(echo, {}, caller=bob).function_error is None
    runtime.remove_permission(echo, "bob")
    with pytest.raises(AccessDeniedException):
        runtime.invoke(echo, {}, caller=bob)


def test_cross_account_needs_both_policies(runtime, echo):
    eve = runtime.create_user("eve", [allow()], account=OTHER)
    assert eve == f"arn:aws:iam::{OTHER}:user/eve"
    with pytest.raises(AccessDeniedException) as info:
        runtime.invoke(echo, {}, caller=eve)
    assert str(info.value) == denied_message(eve, runtime.function_arn(echo),
                                             "no resource-based policy allows")
    runtime.add_permission(echo, "other-account", INVOKE, OTHER)
    assert runtime.invoke(echo, {}, caller=eve).function_error is None
    runtime.put_user_policies(eve, [])
    with pytest.raises(AccessDeniedException, match="no identity-based policy allows"):
        runtime.invoke(echo, {}, caller=eve)
    # another account's root has every identity permission of its own
    assert runtime.invoke(echo, {}, caller=OTHER).function_error is None


def test_explicit_deny_in_the_function_policy_stops_even_the_root(runtime, echo):
    runtime.add_permission(echo, "everyone", INVOKE, "*")
    policy = json.loads(runtime.get_policy(echo)["Policy"])
    policy["Statement"].append({"Sid": "deny", "Effect": "Deny", "Principal": "*",
                                "Action": INVOKE, "Resource": runtime.function_arn(echo)})
    # A Deny cannot come through AddPermission; the registry takes whole documents too.
    runtime._iam._store_function_policy(echo, policy)
    with pytest.raises(AccessDeniedException, match="explicit deny in a resource-based policy"):
        runtime.invoke(echo, {})


def test_service_principal_with_source_arn_and_account(runtime, echo):
    queue = f"arn:aws:sqs:{runtime.region}:{runtime.account_id}:orders"
    runtime.add_permission(echo, "sqs", INVOKE, "sqs.amazonaws.com", source_arn=queue,
                           source_account=runtime.account_id)
    good = service("sqs.amazonaws.com", source_arn=queue, source_account=runtime.account_id)
    assert runtime.invoke(echo, {}, caller=good).function_error is None
    for bad in (service("sqs.amazonaws.com", source_arn=queue + "-2",
                        source_account=runtime.account_id),
                service("sqs.amazonaws.com", source_arn=queue, source_account=OTHER),
                service("sqs.amazonaws.com"),
                service("sns.amazonaws.com", source_arn=queue,
                        source_account=runtime.account_id)):
        with pytest.raises(AccessDeniedException) as info:
            runtime.invoke(echo, {}, caller=bad)
        assert str(info.value) == denied_message(bad.arn, runtime.function_arn(echo),
                                                 "no resource-based policy allows")
    # The internal check the other invocation paths call gives the same answers.
    assert runtime._authorize_invoke(good, echo) == good
    with pytest.raises(AccessDeniedException):
        runtime._authorize_invoke(service("sqs.amazonaws.com"), echo)


def test_principal_org_id(runtime, echo):
    eve = runtime.create_user("eve", [allow()], account=OTHER)
    runtime.add_permission(echo, "org", INVOKE, "*", principal_org_id="o-a1b2c3d4e5")
    with pytest.raises(AccessDeniedException):
        runtime.invoke(echo, {}, caller=eve)
    runtime.set_organization(OTHER, "o-a1b2c3d4e5")
    assert runtime.invoke(echo, {}, caller=eve).function_error is None
    runtime.set_organization(OTHER, "o-zzzzzzzzzz")
    with pytest.raises(AccessDeniedException):
        runtime.invoke(echo, {}, caller=eve)


def test_dry_run_is_only_the_permission_check(runtime, echo):
    bob = runtime.create_user("bob")
    with pytest.raises(AccessDeniedException):
        runtime.invoke(echo, {}, "DryRun", caller=bob)
    runtime.add_permission(echo, "bob", INVOKE, bob)
    result = runtime.invoke(echo, {}, "DryRun", caller=bob)
    assert result.status_code == 204
    assert result.payload is None
    assert "START RequestId" not in log_text(runtime, echo)
    assert runtime.stats(echo) == {"idle": 0, "busy": 0}


def test_get_policy_has_lambdas_shape(runtime, echo):
    with pytest.raises(ResourceNotFoundException):
        runtime.get_policy(echo)
    queue = "arn:aws:sqs:us-east-1:123456789012:orders"
    added = runtime.add_permission(echo, "sqs-1", INVOKE, "sqs.amazonaws.com",
                                   source_arn=queue, source_account="123456789012")
    arn = runtime.function_arn(echo)
    statement = {"Sid": "sqs-1", "Effect": "Allow",
                 "Principal": {"Service": "sqs.amazonaws.com"}, "Action": INVOKE,
                 "Resource": arn,
                 "Condition": {"StringEquals": {"AWS:SourceAccount": "123456789012"},
                               "ArnLike": {"AWS:SourceArn": queue}}}
    assert json.loads(added["Statement"]) == statement
    runtime.add_permission(echo, "xaccount", INVOKE, OTHER)
    policy = runtime.get_policy(echo)
    assert set(policy) == {"Policy", "RevisionId"}
    assert json.loads(policy["Policy"]) == {
        "Version": "2012-10-17", "Id": "default", "Statement": [
            statement,
            {"Sid": "xaccount", "Effect": "Allow",
             "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
             "Action": INVOKE, "Resource": arn}]}
    with pytest.raises(ResourceConflictException, match="statement id .sid. provided already"):
        runtime.add_permission(echo, "xaccount", INVOKE, "*")
    revision = policy["RevisionId"]
    runtime.remove_permission(echo, "sqs-1")
    assert runtime.get_policy(echo)["RevisionId"] != revision
    with pytest.raises(ResourceNotFoundException, match="Statement sqs-1 is not found"):
        runtime.remove_permission(echo, "sqs-1")
    runtime.remove_permission(echo, "xaccount")
    with pytest.raises(ResourceNotFoundException):
        runtime.get_policy(echo)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"statement_id": "bad id!"}, "statement_id"),
    ({"action": "sqs:SendMessage"}, "action must match"),
    ({"principal": "bob"}, "The provided principal was invalid"),
    ({"source_account": "12"}, "source_account"),
    ({"source_arn": "queue"}, "source_arn"),
    ({"principal_org_id": "org"}, "principal_org_id"),
])
def test_add_permission_rejects_bad_arguments(runtime, echo, kwargs, fragment):
    arguments = {"statement_id": "s", "action": INVOKE, "principal": "*", **kwargs}
    with pytest.raises(InvalidParameterValueException, match=fragment):
        runtime.add_permission(echo, **arguments)
    with pytest.raises(ResourceNotFoundException):
        runtime.add_permission("missing", "s", INVOKE, "*")


def test_iam_state_persists_and_a_deleted_function_loses_its_policy(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(ECHO_SOURCE)
    with Runtime(tmp_path / "state") as rt:
        rt.create_function("echo", "app.handler", code)
        eve = rt.create_user("eve", [allow()], account=OTHER)
        role = rt.create_role("worker", LAMBDA_TRUST, [allow()])
        rt.add_permission("echo", "eve", INVOKE, eve)
        rt.set_organization(OTHER, "o-a1b2c3d4e5")
        policy = rt.get_policy("echo")
    with Runtime(tmp_path / "state") as rt:
        assert rt.get_policy("echo") == policy
        assert rt.invoke("echo", {}, "DryRun", caller=eve).status_code == 204
        assert rt._iam.role(role).policies[0].document == allow()
        assert rt._iam.organization_of(OTHER) == "o-a1b2c3d4e5"
        rt.delete_function("echo")
        rt.create_function("echo", "app.handler", code)
        with pytest.raises(ResourceNotFoundException):
            rt.get_policy("echo")


def test_users_and_roles_are_validated(runtime, echo):
    runtime.create_user("bob")
    with pytest.raises(Exception, match="User with name bob already exists") as info:
        runtime.create_user("bob")
    assert info.value.code == "EntityAlreadyExists"
    with pytest.raises(InvalidParameterValueException, match="user name"):
        runtime.create_user("bad name")
    with pytest.raises(InvalidParameterValueException, match="12 digits"):
        runtime.create_user("x", account="123")
    with pytest.raises(MalformedPolicyDocumentException, match="should not specify a principal"):
        runtime.create_user("carol", [LAMBDA_TRUST])
    with pytest.raises(MalformedPolicyDocumentException, match="Missing required field Principal"):
        runtime.create_role("r", allow())
    with pytest.raises(InvalidParameterValueException, match="a list of policy documents"):
        runtime.create_role("r", LAMBDA_TRUST, allow())
    with pytest.raises(InvalidParameterValueException, match="caller must be"):
        runtime.invoke(echo, {}, caller="someone")


# -- execution roles ------------------------------------------------------------------------
def test_create_function_refuses_a_role_lambda_cannot_assume(runtime, tmp_path):
    (tmp_path / "app.py").write_text(ECHO_SOURCE)
    sqs_only = runtime.create_role("sqs-only", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "sqs.amazonaws.com"},
        "Action": "sts:AssumeRole"}]})
    wrong_action = runtime.create_role("tag-only", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:TagSession"}]})
    other_account = runtime.create_role("confused-deputy", {"Version": "2012-10-17",
                                                            "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": OTHER}}}]})
    missing = f"arn:aws:iam::{runtime.account_id}:role/missing"
    for role in (sqs_only, wrong_action, other_account, missing):
        with pytest.raises(InvalidParameterValueException) as info:
            runtime.create_function("fn", "app.handler", tmp_path, role=role)
        assert str(info.value).startswith(
            "The role defined for the function cannot be assumed by Lambda.")
    assert runtime.list_functions() == []
    good = runtime.create_role("good", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": runtime.account_id}}}]})
    created = runtime.create_function("fn", "app.handler", tmp_path, role=good)
    assert created["Role"] == good
    with pytest.raises(InvalidParameterValueException, match="cannot be assumed by Lambda"):
        runtime.update_function("fn", role=sqs_only)
    assert runtime.get_function("fn")["Role"] == good


@pytest.fixture
def platform_functions(runtime, start):
    """caller (role: may invoke 'allowed' only), allowed, denied; both start kinds."""
    arn = runtime.function_arn
    role = runtime.create_role("caller-role", LAMBDA_TRUST,
                               [allow(INVOKE, arn("allowed"))])
    make_function(runtime, "caller", CALLER_SOURCE, start=start, role=role, timeout_s=10)
    make_function(runtime, "allowed", ECHO_SOURCE, start=start)
    make_function(runtime, "denied", ECHO_SOURCE, start=start)
    return role


def test_a_denied_platform_call_fails_while_an_allowed_one_succeeds(runtime,
                                                                    platform_functions):
    role = platform_functions
    result = runtime.invoke("caller", {"calls": ["allowed", "denied"]})
    assert result.function_error is None, result.payload
    assert result.payload["allowed"] == {
        "payload": {"echo": {"from": "caller"}, "function": "allowed"}, "status": 200}
    session = f"arn:aws:sts::{runtime.account_id}:assumed-role/caller-role/caller"
    assert result.payload["denied"] == {
        "denied": denied_message(session, runtime.function_arn("denied"))}
    assert "START RequestId" not in log_text(runtime, "denied")
    # Uncaught, the refusal is the handler's error, with its type and wording.
    failed = runtime.invoke("caller", {"unhandled": "denied"})
    assert failed.function_error == "Unhandled"
    assert failed.payload["errorType"] == "AccessDeniedException"
    assert failed.payload["errorMessage"] == denied_message(session,
                                                            runtime.function_arn("denied"))
    # The role's policies are read at each call: no restart.
    runtime.update_role(role, policies=[allow(INVOKE, "arn:aws:lambda:*:*:function:*")])
    again = runtime.invoke("caller", {"calls": ["denied"]})
    assert again.payload["denied"]["status"] == 200
    runtime.update_role(role, policies=[])
    assert "denied" in runtime.invoke("caller", {"calls": ["allowed"]}).payload["allowed"]


def test_the_targets_resource_policy_can_grant_the_role(runtime, platform_functions):
    role = platform_functions
    runtime.add_permission("denied", "caller-role", INVOKE, role)
    result = runtime.invoke("caller", {"calls": ["denied"]})
    assert result.payload["denied"]["status"] == 200


def test_platform_calls_need_an_execution_role(runtime):
    make_function(runtime, "no-role", CALLER_SOURCE)
    make_function(runtime, "echo", ECHO_SOURCE)
    result = runtime.invoke("no-role", {"calls": ["echo"]})
    assert "has no execution role" in result.payload["echo"]["denied"]


def test_platform_errors_come_back_as_their_exceptions(runtime):
    role = runtime.create_role("all", LAMBDA_TRUST, [allow("lambda:*")])
    make_function(runtime, "caller", """
from sandbox.client import platform

def handler(event, context):
    try:
        platform.invoke("missing", {})
    except Exception as exc:
        missing = [type(exc).__name__, str(exc)]
    try:
        platform.call("sns:Publish", TopicArn="t")
    except Exception as exc:
        unknown = [type(exc).__name__, str(exc)]
    return {"missing": missing, "unknown": unknown}
""", role=role)
    payload = runtime.invoke("caller", {}).payload
    assert payload["missing"] == ["ResourceNotFoundException",
                                  f"Function not found: {runtime.function_arn('missing')}"]
    assert payload["unknown"][0] == "InvalidParameterValueException"
    assert "unknown platform operation 'sns:Publish'" in payload["unknown"][1]


def test_a_platform_call_does_not_stretch_the_callers_deadline(runtime):
    role = runtime.create_role("all", LAMBDA_TRUST, [allow()])
    make_function(runtime, "slow", """
import time

def handler(event, context):
    time.sleep(2)
    return "slept"
""", timeout_s=5)
    make_function(runtime, "caller", CALLER_SOURCE, role=role, timeout_s=1)
    result = runtime.invoke("caller", {"calls": ["slow"]})
    assert result.report["status"] == "timeout"
    assert result.payload["errorType"] == "Sandbox.Timedout"
    assert result.report["duration_ms"] == 1000.0
    # The call it made finishes on its own; close() waits for it.
    runtime.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("platform-call")]


def test_role_checks_for_destinations_and_mappings(runtime, tmp_path):
    (tmp_path / "app.py").write_text(ECHO_SOURCE)
    queue = f"arn:aws:sqs:{runtime.region}:{runtime.account_id}:results"
    role = runtime.create_role("sender", LAMBDA_TRUST, [allow("sqs:SendMessage", queue)])
    runtime.create_function("fn", "app.handler", tmp_path, role=role)
    runtime._authorize_role("fn", "sqs:SendMessage", queue)
    with pytest.raises(AccessDeniedException) as info:
        runtime._authorize_role("fn", "sqs:ReceiveMessage", queue)
    assert str(info.value) == (
        f"User: arn:aws:sts::{runtime.account_id}:assumed-role/sender/fn is not authorized to "
        f"perform: sqs:ReceiveMessage on resource: {queue} because no identity-based policy "
        f"allows the sqs:ReceiveMessage action")
    # A queue mapping needs all of Lambda's actions on the queue.
    with pytest.raises(AccessDeniedException, match="sqs:ReceiveMessage"):
        runtime._authorize_role("fn", C.QUEUE_MAPPING_ACTIONS, queue)
    runtime.update_role(role, policies=[allow(list(C.QUEUE_MAPPING_ACTIONS), queue)])
    runtime._authorize_role("fn", C.QUEUE_MAPPING_ACTIONS, queue)
    with pytest.raises(AccessDeniedException, match="sqs:SendMessage"):
        runtime._authorize_role("fn", C.DESTINATION_ACTIONS["sqs"], queue)
    runtime.update_role(role, policies=[allow(["sqs:*"], "arn:aws:sqs:*:*:res*")])
    runtime._authorize_role("fn", C.QUEUE_MAPPING_ACTIONS + ("sqs:SendMessage",), queue)


def test_platform_calls_work_from_handler_threads_and_not_during_init(runtime, start):
    role = runtime.create_role("all", LAMBDA_TRUST, [allow()])
    make_function(runtime, "echo", ECHO_SOURCE)
    make_function(runtime, "threads", """
import threading

from sandbox.client import platform

try:
    platform.invoke("echo", {})
    AT_INIT = "called"
except RuntimeError as exc:
    AT_INIT = str(exc)


def handler(event, context):
    replies = []

    def call(n):
        replies.append(platform.invoke("echo", {"n": n})["Payload"]["echo"]["n"])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"init": AT_INIT, "replies": sorted(replies)}
""", role=role, start=start)
    for _ in range(2):
        payload = runtime.invoke("threads", {}).payload
        assert payload["replies"] == [0, 1, 2, 3]
        assert "while it handles an invocation" in payload["init"]


def test_role_sessions_and_transport_keys_as_callers(runtime, echo):
    role = runtime.create_role("app", LAMBDA_TRUST, [allow()])
    session = f"arn:aws:sts::{runtime.account_id}:assumed-role/app/worker-1"
    assert runtime.invoke(echo, {}, caller=session).function_error is None
    assert runtime.invoke(echo, {}, caller=role).function_error is None
    runtime.update_role(role, policies=[])
    with pytest.raises(AccessDeniedException, match="assumed-role/app/worker-1 is not"):
        runtime.invoke(echo, {}, caller=session)
    # A policy on the caller's address, as the HTTP API would supply it.
    bob = runtime.create_user("bob", [{"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": INVOKE, "Resource": "*",
        "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
                      "Bool": {"aws:SecureTransport": "false"}}}]}])
    runtime._authorize_invoke(bob, echo, {"aws:SourceIp": "127.0.0.1",
                                          "aws:SecureTransport": False})
    for context in ({"aws:SourceIp": "10.0.0.1", "aws:SecureTransport": False},
                    {"aws:SourceIp": "127.0.0.1", "aws:SecureTransport": True}, None):
        with pytest.raises(AccessDeniedException):
            runtime._authorize_invoke(bob, echo, context)


def test_an_environment_cannot_choose_who_it_calls_as(runtime, platform_functions):
    """The dispatcher decides the caller from the function's configuration;
    whatever the environment sends is only the operation and its parameters,
    and the environment holds no credentials."""
    make_function(runtime, "forger", """
import os

from sandbox.client import platform
from sandbox.errors import AccessDeniedException

def handler(event, context):
    try:
        platform.call("lambda:Invoke", FunctionName="denied", Payload=b"{}",
                      caller="arn:aws:iam::000000000000:root", Caller="000000000000",
                      role="arn:aws:iam::000000000000:role/admin")
        forged = "allowed"
    except AccessDeniedException as exc:
        forged = str(exc)
    try:
        platform.call("lambda:Invoke", FunctionName="denied", Payload=["not", "bytes"])
    except Exception as exc:
        bad_payload = type(exc).__name__
    try:
        platform.call("lambda:Invoke")
    except Exception as exc:
        no_name = [type(exc).__name__, str(exc)]
    secrets = sorted(k for k in os.environ if "SECRET" in k or "TOKEN" in k
                     or k.startswith("AWS_ACCESS"))
    return {"forged": forged, "bad_payload": bad_payload, "no_name": no_name,
            "secrets": secrets}
""", role=platform_functions)
    payload = runtime.invoke("forger", {}).payload
    session = f"arn:aws:sts::{runtime.account_id}:assumed-role/caller-role/forger"
    assert payload["forged"] == denied_message(session, runtime.function_arn("denied"))
    assert payload["bad_payload"] == "AccessDeniedException"  # refused before it is read
    assert payload["no_name"] == ["InvalidParameterValueException",
                                  "FunctionName must be a string, got None"]
    assert payload["secrets"] == []
