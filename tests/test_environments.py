"""Environment lifecycle (sandbox/environments/): idle shutdown, SHUTDOWN of
process groups, close(), and no processes outliving their owner, even when
the owner is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import (
    ACTIONS_SOURCE,
    descendants,
    environment_tree,
    function_zygote,
    invoke_from_zygote,
    is_alive,
    make_function,
    wait_for,
    wait_gone,
)

from sandbox import Runtime

REPO = Path(__file__).resolve().parent.parent

GRANDCHILD_SOURCE = """
import os, subprocess, time

def handler(event, context):
    child = subprocess.Popen(["sleep", "60"])  # same process group, no setsid
    if event.get("pidfile"):
        with open(event["pidfile"], "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"pid": os.getpid(), "child": child.pid}
"""


# -- idle shutdown ---------------------------------------------------------------------
def test_idle_environments_are_shut_down(tmp_path, start):
    with Runtime(tmp_path / "s", idle_timeout_s=0.3) as rt:
        make_function(rt, "f", ACTIONS_SOURCE, start=start)
        r = rt.invoke("f", {})
        pid = r.report["pid"]
        assert rt.stats("f")["idle"] == 1
        time.sleep(1.5)
        assert rt.stats("f") == {"idle": 0, "busy": 0}
        assert not wait_gone([pid], 1.0), "the idle environment's process is still alive"
        again = rt.invoke("f", {})
        assert again.report["start"] == start
        assert again.payload["count"] == 1


def test_recently_used_environment_is_kept(tmp_path):
    with Runtime(tmp_path / "s", idle_timeout_s=0.6) as rt:
        make_function(rt, "f", ACTIONS_SOURCE)
        pid = rt.invoke("f", {}).report["pid"]
        for _ in range(4):  # 1.2 s in all, never idle for 0.6 s
            time.sleep(0.3)
            r = rt.invoke("f", {})
            assert r.report["start"] == "warm"
            assert r.report["pid"] == pid


def test_shutdown_idle_kills_the_process_group(runtime, make_function, start):
    """SHUTDOWN takes the environment's descendants too, even ones that
    ignore SIGTERM."""
    make_function("f", """
        import os, signal, subprocess

        def handler(event, context):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child
            child = subprocess.Popen(["sleep", "60"])
            return {"pid": os.getpid(), "child": child.pid}
        """, start=start)
    r = runtime.invoke("f", {})
    pids = environment_tree(r)
    assert len(pids) == 2 and all(is_alive(p) for p in pids)
    assert runtime.shutdown_idle("f") == 1
    assert runtime.shutdown_idle("f") == 0
    assert not wait_gone(pids, 4.0)


def test_shutdown_idle_wait_returns_after_the_exit(runtime, actions):
    pid = runtime.invoke(actions, {}).report["pid"]
    assert runtime.shutdown_idle(actions, wait=True) == 1
    assert not is_alive(pid)


def test_shutdown_idle_respects_idle_for(runtime, actions):
    runtime.invoke(actions, {})
    assert runtime.shutdown_idle(actions, idle_for_s=60) == 0
    assert runtime.stats(actions)["idle"] == 1
    assert runtime.shutdown_idle(idle_for_s=0) == 1  # all functions
    assert runtime.stats(actions)["idle"] == 0


# -- close ------------------------------------------------------------------------------
def test_close_ends_every_process(tmp_path):
    before = descendants()
    rt = Runtime(tmp_path / "s")
    env_pids = set()
    for start in ("snapshot", "cold"):
        make_function(rt, f"f-{start}", GRANDCHILD_SOURCE, start=start)
        results = [rt.invoke(f"f-{start}", {}) for _ in range(2)]
        env_pids |= {p for r in results for p in environment_tree(r)}
    # two concurrent environments of one function as well
    make_function(rt, "busy", ACTIONS_SOURCE, start="snapshot")
    threads = [threading.Thread(target=rt.invoke, args=("busy", {"action": "sleep",
                                                                  "seconds": 0.3}))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    ours = descendants() - before
    # The launcher (our child) and the two snapshot functions' zygotes (its
    # children, or ours where INIT is not isolated).
    launchers = {p for p in ours if _parent(p) == os.getpid()}
    zygotes = {p for p in ours if _is_zygote(p) and _parent(p) in launchers | {os.getpid()}}
    assert len(zygotes) >= 3
    assert env_pids & ours  # the environments are descendants of this process
    rt.close()
    leftover = wait_gone(ours | env_pids, 5)
    assert not leftover, f"processes outlived close(): {leftover}"


def _is_zygote(pid):
    try:
        return "sandbox.worker.zygote" in " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return False


def _parent(pid):
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None


def test_leaving_the_with_block_by_exception_ends_every_process(tmp_path, start):
    before = descendants()
    pids = set()
    with pytest.raises(RuntimeError, match="test failure"), Runtime(tmp_path / "s") as rt:
        make_function(rt, "f", GRANDCHILD_SOURCE, start=start)
        r = rt.invoke("f", {})
        pids |= environment_tree(r)
        pids |= descendants() - before
        raise RuntimeError("test failure")
    assert len(pids) >= 3
    assert not wait_gone(pids, 5)


def test_close_while_an_invocation_is_running(tmp_path, start):
    before = descendants()
    rt = Runtime(tmp_path / "s", isolation=False)  # the handler writes a pidfile here
    make_function(rt, "f", GRANDCHILD_SOURCE, start=start, timeout_s=60)
    pidfile = tmp_path / "pids"
    outcome = []

    def run():
        try:
            outcome.append(rt.invoke("f", {"pidfile": str(pidfile), "sleep": 30}))
        except Exception as exc:  # which one is asserted below
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text(), 10)
    pids = {int(p) for p in pidfile.read_text().split()} | (descendants() - before)
    started = time.monotonic()
    rt.close()
    thread.join(10)
    assert not thread.is_alive(), "the invoke did not return after close()"
    assert time.monotonic() - started < 8
    assert not wait_gone(pids, 5)
    result = outcome[0]
    if not isinstance(result, BaseException):
        assert result.function_error == "Unhandled"


# -- the owner dies -----------------------------------------------------------------------
OWNER_SCRIPT = """
import json, os, sys, threading, time
import psutil
from sandbox import Runtime

state, code, start, mode, pidfile = sys.argv[1:6]
rt = Runtime(state, isolation=False)  # the handler writes a pidfile on the host
rt.create_function("f", "app.handler", code, start=start, timeout_s=60)
if mode == "idle":
    r = rt.invoke("f", {})
    assert r.function_error is None, r.payload
    zygotes = [p.pid for p in psutil.Process().children()]
    print(json.dumps({"env": r.payload["pid"], "grandchild": r.payload["child"],
                      "zygotes": zygotes}), flush=True)
else:
    threading.Thread(target=rt.invoke, args=("f", {"pidfile": pidfile, "sleep": 30}),
                     daemon=True).start()
    while not (os.path.exists(pidfile) and open(pidfile).read()):
        time.sleep(0.01)
    env, grandchild = map(int, open(pidfile).read().split())
    zygotes = [p.pid for p in psutil.Process().children()]
    print(json.dumps({"env": env, "grandchild": grandchild, "zygotes": zygotes}), flush=True)
time.sleep(600)
"""


def _run_owner(tmp_path, start, mode):
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent(GRANDCHILD_SOURCE))
    script = tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    owner = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "state"), str(code), start, mode,
         str(tmp_path / "pidfile")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(REPO))
    try:
        line = owner.stdout.readline()
        assert line, owner.stderr.read().decode()
        pids = json.loads(line)
        everything = descendants(owner.pid)
    except BaseException:
        owner.kill()
        owner.wait()
        raise
    return owner, pids, everything


@pytest.mark.parametrize("mode", ["idle", "busy"])
def test_no_orphans_after_the_owner_is_killed(tmp_path, start, mode):
    owner, pids, everything = _run_owner(tmp_path, start, mode)
    named = {pids["env"], pids["grandchild"], *pids["zygotes"]}
    assert pids["zygotes"], "the owner has zygote children"
    assert {pids["env"], pids["grandchild"]} <= everything
    assert all(is_alive(p) for p in named)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    leftover = wait_gone(named | everything, 5)
    assert not leftover, f"processes outlived their SIGKILLed owner: {leftover}"


# -- zygotes --------------------------------------------------------------------------------
def test_threads_started_by_init_fall_back_to_cold(runtime, make_function):
    """Forking a multi-threaded process is unsound: such a function starts cold."""
    make_function("f", """
        import os, threading, time
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        COUNT = 0
        def handler(event, context):
            global COUNT
            COUNT += 1
            return {"count": COUNT, "threads": threading.active_count()}
        """, start="snapshot")
    r = runtime.invoke("f", {})
    assert r.function_error is None, r.payload
    pool = runtime._functions["f"].pool
    if pool.isolated_init:
        # The first start forks from the zygote tree and runs INIT itself; the
        # zygote booted meanwhile reports its threads, and is not used.
        assert r.report["start"] == "snapshot"
        assert wait_for(lambda: pool.fork_unsafe_reason is not None)
        assert runtime.shutdown_idle("f", wait=True) == 1
        r = runtime.invoke("f", {})
    assert r.report["start"] == "cold"
    assert r.payload["threads"] == 2  # a real INIT ran in this environment
    assert runtime.invoke("f", {}).report["start"] == "warm"


def test_zygote_killed_is_replaced(runtime, make_function):
    make_function("f", ACTIONS_SOURCE, start="snapshot")
    invoke_from_zygote(runtime, "f")
    runtime.shutdown_idle("f")
    zygote = function_zygote(runtime, "f")
    os.kill(zygote.pid, signal.SIGKILL)
    assert not wait_gone([zygote.pid], 3)
    assert wait_for(lambda: not zygote.alive, 3)
    r = runtime.invoke("f", {})
    assert r.function_error is None
    assert r.report["start"] == "snapshot"
    assert function_zygote(runtime, "f").pid != zygote.pid


def test_environments_die_with_their_zygote(runtime, make_function):
    make_function("f", ACTIONS_SOURCE, start="snapshot")
    r = invoke_from_zygote(runtime, "f")
    zygote = function_zygote(runtime, "f")
    os.kill(zygote.pid, signal.SIGKILL)
    assert not wait_gone([r.report["pid"]], 3), "parent-death signal did not fire"
