"""The Python API (sandbox/api.py): management calls, errors, persistence."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import ACTIONS_SOURCE, make_function, wait_for, wait_gone

from sandbox import Runtime
from sandbox.errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
    SandboxError,
    ServiceException,
)

ENV_SOURCE = """
import os
AT_INIT = os.environ.get("VALUE")

def handler(event, context):
    return {"init": AT_INIT, "now": os.environ.get("VALUE")}
"""


def test_create_get_list_delete(runtime, make_function):
    make_function("b-fn", ACTIONS_SOURCE)
    make_function("a-fn", ACTIONS_SOURCE, memory_mb=256)
    assert [f["FunctionName"] for f in runtime.list_functions()] == ["a-fn", "b-fn"]
    got = runtime.get_function("a-fn")
    assert got["MemorySize"] == 256
    assert got["FunctionArn"] == runtime.function_arn("a-fn")
    assert runtime.invoke("a-fn", {}).function_error is None
    runtime.delete_function("a-fn")
    assert [f["FunctionName"] for f in runtime.list_functions()] == ["b-fn"]
    with pytest.raises(ResourceNotFoundException):
        runtime.get_function("a-fn")
    with pytest.raises(ResourceNotFoundException):
        runtime.invoke("a-fn", {})


def test_create_returns_the_configuration(runtime, tmp_path):
    (tmp_path / "app.py").write_text(ACTIONS_SOURCE)
    created = runtime.create_function("fn", "app.handler", tmp_path, timeout_s=2)
    assert created == runtime.get_function("fn")
    assert created["Timeout"] == 2


def test_duplicate_is_a_conflict(runtime, make_function):
    make_function("fn", ACTIONS_SOURCE)
    with pytest.raises(ResourceConflictException) as info:
        make_function("fn", ACTIONS_SOURCE)
    assert info.value.code == "ResourceConflictException"
    assert info.value.http_status == 409
    assert "fn" in str(info.value)


@pytest.mark.parametrize("call", [
    lambda rt: rt.get_function("nope"),
    lambda rt: rt.delete_function("nope"),
    lambda rt: rt.update_function("nope", memory_mb=256),
    lambda rt: rt.invoke("nope", {}),
    lambda rt: rt.stats("nope"),
    lambda rt: rt.shutdown_idle("nope"),
], ids=["get", "delete", "update", "invoke", "stats", "shutdown_idle"])
def test_unknown_function_is_not_found(runtime, call):
    with pytest.raises(ResourceNotFoundException) as info:
        call(runtime)
    assert info.value.code == "ResourceNotFoundException"
    assert info.value.http_status == 404
    assert isinstance(info.value, SandboxError)
    assert runtime.function_arn("nope") in str(info.value)


def test_update_changes_behaviour_for_the_next_invoke(runtime, make_function, start):
    make_function("fn", ENV_SOURCE, start=start, environment={"VALUE": "one"})
    first = runtime.invoke("fn", {})
    assert first.payload == {"init": "one", "now": "one"}
    assert runtime.invoke("fn", {}).report["start"] == "warm"
    updated = runtime.update_function("fn", environment={"VALUE": "two"})
    assert updated["Environment"] == {"Variables": {"VALUE": "two"}}
    r = runtime.invoke("fn", {})
    assert r.payload == {"init": "two", "now": "two"}  # new INIT, new environment
    assert r.report["start"] == start
    assert runtime.get_function("fn")["Environment"] == {"Variables": {"VALUE": "two"}}


def test_update_revision_and_unchanged_fields(runtime, make_function):
    make_function("fn", ENV_SOURCE, memory_mb=256, environment={"VALUE": "one"})
    before = runtime.get_function("fn")
    after = runtime.update_function("fn", timeout_s=9)
    assert after["Timeout"] == 9
    assert after["MemorySize"] == 256
    assert after["Environment"] == before["Environment"]
    assert after["RevisionId"] != before["RevisionId"]


def test_update_handler_and_start_kind(runtime, make_function):
    code = make_function("fn", ACTIONS_SOURCE, start="snapshot")
    (code / "other.py").write_text("def main(event, context):\n    return 'other'\n")
    assert runtime.invoke("fn", {}).report["start"] == "snapshot"
    runtime.update_function("fn", handler="other.main", start="cold")
    r = runtime.invoke("fn", {})
    assert r.payload == "other"
    assert r.report["start"] == "cold"


def test_update_validates(runtime, make_function):
    make_function("fn", ACTIONS_SOURCE)
    with pytest.raises(InvalidParameterValueException, match="memory_mb"):
        runtime.update_function("fn", memory_mb=64)
    with pytest.raises(InvalidParameterValueException, match="bogus"):
        runtime.update_function("fn", bogus=1)
    with pytest.raises(InvalidParameterValueException, match="AWS_REGION"):
        runtime.update_function("fn", environment={"AWS_REGION": "x"})
    assert runtime.get_function("fn")["MemorySize"] == 128
    assert runtime.invoke("fn", {}).function_error is None


def test_delete_shuts_environments_down(runtime, make_function):
    make_function("fn", ACTIONS_SOURCE)
    pid = runtime.invoke("fn", {}).report["pid"]
    runtime.delete_function("fn")
    assert not wait_gone([pid], 5)
    make_function("fn2", ACTIONS_SOURCE)  # the runtime goes on working
    assert runtime.invoke("fn2", {}).function_error is None


def test_recreate_after_delete(runtime, make_function):
    make_function("fn", ACTIONS_SOURCE)
    runtime.delete_function("fn")
    make_function("fn", "def handler(e, c):\n    return 'again'\n")
    assert runtime.invoke("fn", {}).payload == "again"


def test_state_dir_persistence(tmp_path, start):
    state = tmp_path / "state"
    with Runtime(state) as rt:
        make_function(rt, "kept", ENV_SOURCE, start=start, memory_mb=512,
                      environment={"VALUE": "persisted"})
        assert rt.invoke("kept", {}).function_error is None
    assert (state / "sandbox.db").exists()
    with Runtime(state) as rt:
        names = [f["FunctionName"] for f in rt.list_functions()]
        assert names == ["kept"]
        config = rt.get_function("kept")
        assert config["MemorySize"] == 512
        assert config["StartKind"] == start
        r = rt.invoke("kept", {})
        assert r.function_error is None
        assert r.payload == {"init": "persisted", "now": "persisted"}
        assert r.report["start"] == start
        rt.delete_function("kept")
    with Runtime(state) as rt:
        assert rt.list_functions() == []


def test_temporary_state_dir_is_removed(tmp_path):
    rt = Runtime()
    state = rt.state_dir
    make_function(rt, "fn", ACTIONS_SOURCE)
    rt.invoke("fn", {})
    rt.close()
    assert not os.path.exists(state)


def test_given_state_dir_is_kept(tmp_path):
    with Runtime(tmp_path / "s") as rt:
        make_function(rt, "fn", ACTIONS_SOURCE)
        rt.invoke("fn", {})
        log = rt.log_path("fn")
    assert (tmp_path / "s").is_dir()
    assert "START RequestId" in Path(log).read_text()


def test_closed_runtime_refuses_work(tmp_path):
    rt = Runtime(tmp_path / "s")
    make_function(rt, "fn", ACTIONS_SOURCE)
    rt.close()
    rt.close()  # idempotent
    with pytest.raises(ServiceException):
        make_function(rt, "other", ACTIONS_SOURCE)


@pytest.mark.parametrize("kwargs, parameter", [
    ({"idle_timeout_s": 0}, "idle_timeout_s"),
    ({"concurrency_limit": 0}, "concurrency_limit"),
])
def test_runtime_arguments_are_validated(tmp_path, kwargs, parameter):
    with pytest.raises(InvalidParameterValueException, match=parameter):
        Runtime(tmp_path / "s", **kwargs)


def test_region_and_account_in_arns(tmp_path):
    with Runtime(tmp_path / "s", region="eu-central-1", account_id="123456789012") as rt:
        make_function(rt, "fn", ACTIONS_SOURCE)
        arn = "arn:aws:lambda:eu-central-1:123456789012:function:fn"
        assert rt.function_arn("fn") == arn
        assert rt.get_function("fn")["FunctionArn"] == arn


def test_public_names():
    import sandbox

    assert sandbox.Runtime is Runtime
    assert sandbox.errors.ResourceNotFoundException is ResourceNotFoundException
    with pytest.raises(AttributeError):
        sandbox.DoesNotExist  # noqa: B018


SLOW_SOURCE = """
import os, time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "value": os.environ.get("VALUE")}
"""

@pytest.mark.parametrize("start", ["snapshot", "cold"])
def test_update_lets_running_invocations_finish(runtime, make_function, start):
    """update_function: 'running ones finish in their old environment'."""
    make_function("fn", SLOW_SOURCE, start=start, environment={"VALUE": "old"})
    outcome = []
    thread = threading.Thread(
        target=lambda: outcome.append(runtime.invoke("fn", {"sleep": 0.5})))
    thread.start()
    assert wait_for(lambda: runtime.stats("fn")["busy"] == 1, 5)
    time.sleep(0.1)  # the handler is running
    runtime.update_function("fn", environment={"VALUE": "new"})
    assert runtime.invoke("fn", {}).payload["value"] == "new"
    thread.join(10)
    r = outcome[0]
    assert r.function_error is None, r.payload
    assert r.payload["value"] == "old"


@pytest.mark.parametrize("start", ["snapshot", "cold"])
def test_delete_lets_running_invocations_finish(runtime, make_function, start):
    make_function("fn", SLOW_SOURCE, start=start)
    outcome = []
    thread = threading.Thread(
        target=lambda: outcome.append(runtime.invoke("fn", {"sleep": 0.5})))
    thread.start()
    assert wait_for(lambda: runtime.stats("fn")["busy"] == 1, 5)
    time.sleep(0.1)
    runtime.delete_function("fn")
    thread.join(10)
    r = outcome[0]
    assert r.function_error is None, r.payload
    assert not wait_gone([r.report["pid"]], 5), "the deleted function's environment lives on"
