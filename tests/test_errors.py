"""Errors: the handler contract's error documents (every errorType, exact
message shapes, what happens to the environment afterwards) and the API's
exception classes in sandbox/errors.py."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
from conftest import is_alive, wait_gone

from sandbox import errors

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def assert_error(r, error_type, message_pattern):
    """A function error: status 200, Unhandled, Lambda's error document."""
    assert r.status_code == 200
    assert r.function_error == "Unhandled"
    assert set(r.payload) >= {"errorMessage", "errorType", "stackTrace"}
    assert r.payload["errorType"] == error_type, r.payload
    assert re.fullmatch(message_pattern, r.payload["errorMessage"]), r.payload["errorMessage"]
    assert isinstance(r.payload["stackTrace"], list)
    assert all(isinstance(line, str) for line in r.payload["stackTrace"])
    assert r.report["request_id"] == r.request_id


# -- errors raised while handling --------------------------------------------------------
def test_success_has_no_function_error(runtime, actions):
    r = runtime.invoke(actions, {})
    assert r.status_code == 200
    assert r.function_error is None
    assert r.payload["count"] == 1


def test_raised_exception(runtime, actions):
    r = runtime.invoke(actions, {"action": "raise"})
    assert_error(r, "ValueError", "boom 1")
    assert r.payload["requestId"] == r.request_id
    stack = r.payload["stackTrace"]
    assert stack, "the stack trace names the user's frames"
    app = f"{runtime.state_dir}/code/actions/app.py"
    assert any(f'File "{app}"' in line and "in handler" in line for line in stack), stack
    assert any('raise ValueError(f"boom {COUNT}")' in line for line in stack)
    # runtime frames are not the user's business
    assert not any("/sandbox/worker/" in line for line in stack), stack
    assert r.report["status"] == "error"
    # The runtime logs the error as Lambda's Python runtime does.
    assert "[ERROR] ValueError: boom 1" in r.log_tail


def test_handled_exception_keeps_the_environment(runtime, actions):
    first = runtime.invoke(actions, {"action": "raise"})
    assert first.function_error == "Unhandled"
    r = runtime.invoke(actions, {})
    assert r.function_error is None
    assert r.report["start"] == "warm"
    assert r.payload["count"] == 2  # module globals survived: same environment


@pytest.mark.parametrize("exc, expected", [
    ("KeyError('k')", ("KeyError", "'k'")),
    ("RuntimeError()", ("RuntimeError", "")),
    ("type('MyCustomError', (Exception,), {})('custom')", ("MyCustomError", "custom")),
])
def test_exception_class_name_is_the_error_type(runtime, make_function, exc, expected):
    make_function("f", f"def handler(event, context):\n    raise {exc}\n", start="snapshot")
    r = runtime.invoke("f", {})
    assert_error(r, expected[0], re.escape(expected[1]))


def test_non_serializable_return_is_marshal_error(runtime, actions):
    r = runtime.invoke(actions, {"action": "marshal"})
    assert_error(r, "Runtime.MarshalError", r"Unable to marshal response: .*set.*")
    assert r.payload["requestId"] == r.request_id
    # the environment is healthy and kept
    ok = runtime.invoke(actions, {})
    assert ok.function_error is None and ok.report["start"] == "warm"


def test_oversized_response_is_response_size_too_large(runtime, actions):
    r = runtime.invoke(actions, {"action": "huge"})
    assert_error(r, "Function.ResponseSizeTooLarge",
                 r"Response payload size exceeded maximum allowed payload size "
                 r"\(6291456 bytes\)\.")
    assert len(r.raw_payload) < 4096


# -- the environment dies ------------------------------------------------------------------
def _fresh_after(runtime, name, start, before_pid):
    """The next invoke runs in a new environment: not warm, globals reset."""
    r = runtime.invoke(name, {})
    assert r.function_error is None, r.payload
    assert r.report["start"] == start
    assert r.report["start"] != "warm"
    assert r.payload["count"] == 1
    assert r.report["pid"] != before_pid
    assert r.report["init_duration_ms"] is not None
    return r


def test_timeout(runtime, actions, start):
    first = runtime.invoke(actions, {})
    started = time.monotonic()
    r = runtime.invoke(actions, {"action": "sleep", "seconds": 30})
    elapsed = time.monotonic() - started
    assert_error(r, "Sandbox.Timedout",
                 rf"RequestId: {UUID} Error: Task timed out after 1\.00 seconds")
    assert r.request_id in r.payload["errorMessage"]
    assert 0.9 <= elapsed < 3.0
    assert r.report["status"] == "timeout"
    assert r.report["duration_ms"] == pytest.approx(1000.0)
    assert "Task timed out after 1.00 seconds" in r.log_tail
    assert runtime.stats(actions) == {"idle": 0, "busy": 0}
    assert not wait_gone([first.report["pid"]], 3), "the timed-out environment was killed"
    _fresh_after(runtime, actions, start, first.report["pid"])


def test_timeout_kills_the_environments_descendants(host_runtime, make_function, tmp_path, start):
    pidfile = tmp_path / "grandchild.pid"
    make_function("f", f"""
        import subprocess, time

        def handler(event, context):
            child = subprocess.Popen(["sleep", "60"])
            open({str(pidfile)!r}, "w").write(str(child.pid))
            time.sleep(30)
        """, rt=host_runtime, start=start, timeout_s=1)
    r = host_runtime.invoke("f", {})
    assert r.payload["errorType"] == "Sandbox.Timedout"
    grandchild = int(pidfile.read_text())
    assert not wait_gone([grandchild], 3), "the handler's child outlived the timeout"


def test_exit_is_exit_error(runtime, actions, start):
    first = runtime.invoke(actions, {})
    r = runtime.invoke(actions, {"action": "exit"})
    assert_error(r, "Runtime.ExitError",
                 rf"RequestId: {UUID} Error: Runtime exited with error: exit status 3")
    assert r.request_id in r.payload["errorMessage"]
    assert r.report["status"] == "exit"
    assert r.report["exit_code"] == 3
    assert "Runtime exited with error: exit status 3" in r.log_tail
    assert "Runtime.ExitError" in r.log_tail
    assert runtime.stats(actions)["idle"] == 0
    _fresh_after(runtime, actions, start, first.report["pid"])


def test_segfault_is_exit_error(runtime, actions, start):
    first = runtime.invoke(actions, {})
    r = runtime.invoke(actions, {"action": "segv"})
    assert_error(r, "Runtime.ExitError",
                 rf"RequestId: {UUID} Error: Runtime exited with error: "
                 r"signal: segmentation fault")
    _fresh_after(runtime, actions, start, first.report["pid"])


def test_killed_from_outside_is_exit_error(host_runtime, make_function, tmp_path, start):
    pidfile = tmp_path / "env.pid"
    make_function("f", f"""
        import os, time

        def handler(event, context):
            open({str(pidfile)!r}, "w").write(str(os.getpid()))
            time.sleep(30)
        """, rt=host_runtime, start=start, timeout_s=10)
    def killer():
        deadline = time.monotonic() + 5
        while not pidfile.exists() or not pidfile.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    started = time.monotonic()
    r = host_runtime.invoke("f", {})
    thread.join()
    assert time.monotonic() - started < 5
    assert_error(r, "Runtime.ExitError",
                 rf"RequestId: {UUID} Error: Runtime exited with error: signal: killed")


def test_environment_killed_while_idle_is_not_reused(runtime, actions, start):
    first = runtime.invoke(actions, {})
    os.kill(first.report["pid"], signal.SIGKILL)
    assert not wait_gone([first.report["pid"]], 3)
    time.sleep(0.2)  # let the zygote report the exit
    _fresh_after(runtime, actions, start, first.report["pid"])


# -- INIT failures -------------------------------------------------------------------------
INIT_FAILURES = {
    "import": ("import module_that_does_not_exist_xyz\n\ndef handler(e, c):\n    return 1\n",
               "Runtime.ImportModuleError",
               r"Unable to import module 'app': No module named 'module_that_does_not_exist_xyz'"),
    "syntax": ("def handler(event, context)\n    return 1\n",
               "Runtime.UserCodeSyntaxError",
               r"Syntax error in module 'app': .*"),
    "missing-handler": ("def other(event, context):\n    return 1\n",
                        "Runtime.HandlerNotFound",
                        r"Handler 'handler' missing on module 'app'"),
    "top-level-raise": ("raise LookupError('no config at import time')\n",
                        "LookupError", r"no config at import time"),
}


@pytest.mark.parametrize("kind", list(INIT_FAILURES))
def test_init_failure(runtime, make_function, start, kind):
    source, error_type, pattern = INIT_FAILURES[kind]
    make_function("f", source, start=start)
    r = runtime.invoke("f", {})
    assert_error(r, error_type, pattern)
    assert r.report["start"] == start
    assert r.report["status"] == "init_error"
    assert r.report["init_duration_ms"] is not None
    assert f"[ERROR] {error_type}" in r.log_tail
    # INIT is retried on the next invoke (nothing broken is kept) and fails the same way.
    again = runtime.invoke("f", {})
    assert_error(again, error_type, pattern)
    assert again.report["start"] == start
    assert runtime.stats("f") == {"idle": 0, "busy": 0}


def test_syntax_error_stack_names_the_file_and_line(runtime, make_function, start):
    code = make_function("f", "x = 1\ndef handler(event, context)\n    return 1\n", start=start)
    r = runtime.invoke("f", {})
    assert r.payload["errorType"] == "Runtime.UserCodeSyntaxError"
    assert any(str(code / "app.py") in line and "Line 2" in line
               for line in r.payload["stackTrace"]), r.payload["stackTrace"]


def test_top_level_exception_stack_names_the_user_file(runtime, make_function, start):
    code = make_function("f", "x = 1\nraise LookupError('at import')\n", start=start)
    r = runtime.invoke("f", {})
    assert r.payload["errorType"] == "LookupError"
    assert any(str(code / "app.py") in line for line in r.payload["stackTrace"])


def test_init_failure_document_carries_the_request_id(runtime, make_function):
    make_function("f", "import module_that_does_not_exist_xyz\n", start="snapshot")
    r = runtime.invoke("f", {})
    assert r.payload.get("requestId") == r.request_id


def test_init_failure_then_fixed_code_works(runtime, make_function, start):
    code = make_function("f", "raise LookupError('broken')\n", start=start)
    assert runtime.invoke("f", {}).payload["errorType"] == "LookupError"
    (code / "app.py").write_text("def handler(event, context):\n    return 'fixed'\n")
    r = runtime.invoke("f", {})
    assert r.function_error is None
    assert r.payload == "fixed"


def test_exit_during_init_is_exit_error(runtime, make_function, start):
    make_function("f", "print('dying')\nimport os\nos._exit(7)\n", start=start)
    r = runtime.invoke("f", {})
    assert_error(r, "Runtime.ExitError",
                 rf"RequestId: {UUID} Error: Runtime exited with error: exit status 7")
    assert r.report["start"] == start
    assert "dying" in r.log_tail


def test_no_environment_left_after_failures(runtime, actions):
    pids = []
    for action in ("exit", "segv"):
        before = runtime.invoke(actions, {})
        pids.append(before.report["pid"])
        runtime.invoke(actions, {"action": action})
    assert not wait_gone(pids, 3)
    assert not any(is_alive(p) for p in pids)


# -- exception classes ---------------------------------------------------------------------
@pytest.mark.parametrize("cls, code, status", [
    (errors.ResourceNotFoundException, "ResourceNotFoundException", 404),
    (errors.ResourceConflictException, "ResourceConflictException", 409),
    (errors.InvalidParameterValueException, "InvalidParameterValueException", 400),
    (errors.InvalidRequestContentException, "InvalidRequestContentException", 400),
    (errors.RequestTooLargeException, "RequestTooLargeException", 413),
    (errors.TooManyRequestsException, "TooManyRequestsException", 429),
    (errors.ServiceException, "ServiceException", 500),
])
def test_exception_classes(cls, code, status):
    exc = cls("the message")
    assert isinstance(exc, errors.SandboxError)
    assert exc.code == code
    assert exc.http_status == status
    assert exc.message == "the message"
    assert str(exc) == "the message"


def test_too_many_requests_reason():
    exc = errors.TooManyRequestsException("x")
    assert exc.reason == "ConcurrentInvocationLimitExceeded"
