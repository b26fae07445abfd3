"""The in-environment side (sandbox/worker/): the context object, environment
variables, handler loading, result marshalling, random state after fork."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import function_zygote, invoke_from_zygote

from sandbox import Runtime

CONTEXT_SOURCE = """
import time

def handler(event, context):
    first = context.get_remaining_time_in_millis()
    time.sleep(0.1)
    second = context.get_remaining_time_in_millis()
    cc = context.client_context
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "client_context": None if cc is None else {
            "client": cc.client, "custom": cc.custom, "env": cc.env},
        "identity": None if context.identity is None else {
            "id": context.identity.cognito_identity_id,
            "pool": context.identity.cognito_identity_pool_id},
        "remaining": [first, second],
    }
"""

ENVIRON_SOURCE = """
import os

AT_INIT = dict(os.environ)

def handler(event, context):
    return {"now": dict(os.environ), "init": AT_INIT}
"""


def test_context_fields(runtime, make_function, start):
    make_function("ctx-fn", CONTEXT_SOURCE, start=start, memory_mb=256, timeout_s=3)
    client_context = {"client": {"installation_id": "i-1", "app_title": "t"},
                      "custom": {"k": "v"}, "env": {"platform": "linux"}}
    r = runtime.invoke("ctx-fn", {}, client_context=client_context)
    assert r.function_error is None, r.payload
    ctx = r.payload
    assert ctx["function_name"] == "ctx-fn"
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == runtime.function_arn("ctx-fn")
    assert ctx["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:ctx-fn"
    assert ctx["memory_limit_in_mb"] == "256"  # a string, as in Lambda's Python runtime
    assert ctx["aws_request_id"] == r.request_id == r.report["request_id"]
    assert ctx["log_group_name"] == "/aws/lambda/ctx-fn"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", ctx["log_stream_name"])
    assert ctx["client_context"] == client_context
    assert ctx["identity"] == {"id": None, "pool": None}
    first, second = ctx["remaining"]
    assert 0 < second < first <= 3000
    assert first > 2500  # the deadline is the function's timeout from the invoke
    assert first - second >= 90


def test_context_per_invocation(runtime, make_function, start):
    make_function("ctx-fn", CONTEXT_SOURCE, start=start, timeout_s=3)
    a = runtime.invoke("ctx-fn", {})
    b = runtime.invoke("ctx-fn", {})
    assert b.report["start"] == "warm"
    assert a.payload["aws_request_id"] == a.request_id
    assert b.payload["aws_request_id"] == b.request_id != a.request_id
    assert a.payload["client_context"] is None
    # same environment, same log stream; the deadline moved with the invoke
    assert a.payload["log_stream_name"] == b.payload["log_stream_name"]
    assert b.payload["remaining"][0] > 2500
    runtime.shutdown_idle("ctx-fn")
    c = runtime.invoke("ctx-fn", {})
    assert c.report["start"] == start
    assert c.payload["log_stream_name"] != a.payload["log_stream_name"]


def test_environment_variables(monkeypatch, tmp_path, start):
    monkeypatch.setenv("SANDBOX_TEST_DISPATCHER_ONLY", "must-not-leak")
    with Runtime(tmp_path / "state", region="eu-west-1") as rt:
        code = tmp_path / "code"
        code.mkdir()
        (code / "app.py").write_text(ENVIRON_SOURCE)
        rt.create_function("env-fn", "app.handler", code, memory_mb=512, start=start,
                           environment={"GREETING": "hi", "EMPTY": ""})
        r = rt.invoke("env-fn", {})
        if start == "snapshot" and rt._functions["env-fn"].pool.isolated_init:
            # The first start ran INIT itself (forked from the tree): on demand.
            assert r.payload["init"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
            r = invoke_from_zygote(rt, "env-fn")
    assert r.function_error is None, r.payload
    expected_init = "snap-start" if start == "snapshot" else "on-demand"
    for phase in ("init", "now"):
        env = r.payload[phase]
        assert env["GREETING"] == "hi"
        assert env["EMPTY"] == ""
        assert env["AWS_LAMBDA_FUNCTION_NAME"] == "env-fn"
        assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
        assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
        assert env["AWS_REGION"] == "eu-west-1"
        assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert env["_HANDLER"] == "app.handler"
        assert env["LAMBDA_TASK_ROOT"] == str(code)
        assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/env-fn"
        assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == expected_init
        assert "SANDBOX_TEST_DISPATCHER_ONLY" not in env, "the dispatcher's environment leaked"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}",
                        r.payload["now"]["AWS_LAMBDA_LOG_STREAM_NAME"])


def test_handler_runs_in_its_code_directory(runtime, make_function, start):
    code = make_function("f", """
        import os, sys
        def handler(event, context):
            return {"cwd": os.getcwd(), "path0": sys.path[0]}
        """, start=start)
    r = runtime.invoke("f", {})
    assert r.payload == {"cwd": str(code), "path0": str(code)}


def test_handler_in_a_subdirectory(runtime, tmp_path, start):
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "mod.py").write_text("def entry(event, context):\n    return 'nested'\n")
    runtime.create_function("f", "pkg/mod.entry", code, start=start)
    assert runtime.invoke("f", {}).payload == "nested"
    runtime.create_function("g", "pkg.mod.entry", code, start=start)
    assert runtime.invoke("g", {}).payload == "nested"


def test_module_imports_sibling_modules(runtime, tmp_path, start):
    code = tmp_path / "code"
    code.mkdir()
    (code / "helper.py").write_text("VALUE = 41\n")
    (code / "app.py").write_text("import helper\ndef handler(e, c):\n    return helper.VALUE + 1\n")
    runtime.create_function("f", "app.handler", code, start=start)
    assert runtime.invoke("f", {}).payload == 42


@pytest.mark.parametrize("event", [{"a": [1, 2, {"b": None}]}, [1, "two"], 3.5, None,
                                   True, {"unicode": "\u00e9\u4e2d\U0001f600"}])
def test_event_and_result_round_trip(runtime, make_function, event):
    make_function("echo", "def handler(event, context):\n    return event\n", start="snapshot")
    r = runtime.invoke("echo", event)
    assert r.function_error is None
    assert r.payload == event


def test_decimal_result_is_a_number(runtime, make_function):
    make_function("f", """
        import decimal
        def handler(event, context):
            return {"d": decimal.Decimal("1.5")}
        """, start="snapshot")
    r = runtime.invoke("f", {})
    assert r.function_error is None
    assert r.payload == {"d": 1.5}


RANDOM_SOURCE = """
import os
import random

random.random()  # INIT touches the generator: its state is in the snapshot

def handler(event, context):
    return {"random": [random.random() for _ in range(3)], "urandom": os.urandom(16).hex(),
            "pid": os.getpid()}
"""


def test_environments_get_distinct_random_streams(runtime, make_function, start):
    """Snapshot children of one zygote are reseeded after the fork."""
    make_function("rnd", RANDOM_SOURCE, start=start)
    results, pids = [], set()
    for _ in range(3):
        r = runtime.invoke("rnd", {})
        assert r.report["start"] == start
        results.append(r.payload)
        pids.add(r.report["pid"])
        assert runtime.shutdown_idle("rnd", wait=True) == 1
    assert len(pids) == 3
    assert len({tuple(p["random"]) for p in results}) == 3, results
    assert len({p["urandom"] for p in results}) == 3


def test_init_output_is_not_repeated_by_each_snapshot_child(runtime, make_function):
    make_function("f", """
        print("init-line-once")
        def handler(event, context):
            print("handler-line")
            return 1
        """, start="snapshot")
    runtime.invoke("f", {})  # prints: its INIT ran, in the zygote or in the environment
    function_zygote(runtime, "f")
    for _ in range(2):
        runtime.shutdown_idle("f", wait=True)
        runtime.invoke("f", {})
    text = Path(runtime.log_path("f")).read_text()
    assert text.count("init-line-once") == 1
    assert text.count("handler-line") == 3


def test_user_pythonpath_is_honoured(runtime, tmp_path, start):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "shared_helper.py").write_text("ANSWER = 42\n")
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(
        "import shared_helper\ndef handler(e, c):\n    return shared_helper.ANSWER\n")
    runtime.create_function("f", "app.handler", code, start=start,
                            environment={"PYTHONPATH": str(lib)})
    r = runtime.invoke("f", {})
    assert r.function_error is None, r.payload
    assert r.payload == 42


# -- a zygote's rehearsal -----------------------------------------------------------------------
REHEARSAL_SCRIPT = """
import gc, json, os, random, resource, sys, threading
import logging  # its after-fork hook is rehearsed too
from sandbox.worker import context
from sandbox.worker.rehearsal import rehearse, _invocation_path

def faults_of_a_child():
    # Page faults (first writes to pages shared with this process, mostly)
    # of a forked child that runs the after-fork hooks and one invocation.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _invocation_path(1)
        os.write(w, str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    count = int(os.read(r, 64))
    os.close(r)
    os.close(w)
    return count

gc.disable()
before = faults_of_a_child()
environ = dict(os.environ)
rehearse()
after = faults_of_a_child()
worked = []
thread = threading.Thread(target=lambda: worked.append(True))
thread.start()
thread.join()
print(json.dumps({
    "before": before, "after": after, "environ_kept": dict(os.environ) == environ,
    "facts_forgotten": context._function_facts is None, "thread_ran": worked == [True],
    "threads": threading.active_count(), "random": random.random() < 1.0,
}))
"""


def test_a_rehearsed_zygote_changes_nothing_and_its_children_copy_fewer_pages():
    """rehearse() leaves the zygote as it was (environment, threading,
    random, the function facts it read) and saves each child page copies:
    its first invocation path and after-fork hooks fault less."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", REHEARSAL_SCRIPT], capture_output=True,
                         timeout=60, cwd=str(Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr.decode()
    report = json.loads(out.stdout)
    assert report["environ_kept"] and report["facts_forgotten"] and report["thread_ran"]
    assert report["threads"] == 1 and report["random"]
    assert report["after"] < report["before"] * 0.9, report
