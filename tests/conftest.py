"""Shared fixtures: runtimes, handler modules written on the fly, process helpers.

Everything runs real processes: zygotes, forked (snapshot) and exec'd (cold)
execution environments. Behavioural tests are parametrized over both start
kinds with the ``start`` fixture, so one implementation is checked against
the other (as msgpack's test suite does for its two implementations).
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandbox import Runtime

START_KINDS = ("snapshot", "cold")

# A handler whose behaviour is chosen by the event: one function (one zygote
# or one cold start) can then exercise every way of succeeding and failing.
ACTIONS_SOURCE = """
import os
import signal
import sys
import time

COUNT = 0


def handler(event, context):
    global COUNT
    COUNT += 1
    action = (event or {}).get("action")
    if action == "raise":
        raise ValueError(f"boom {COUNT}")
    if action == "exit":
        os._exit(3)
    if action == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
    if action == "sleep":
        print("about to sleep", event["seconds"])
        time.sleep(event["seconds"])
    if action == "marshal":
        return {1, 2, 3}
    if action == "huge":
        return "x" * (6 * 1024 * 1024)
    if action == "echo":
        return event
    if action == "print":
        print(event["text"])
        sys.stderr.write("to stderr\\n")
    return {"count": COUNT, "pid": os.getpid()}
"""


def write_handler(directory: Path, source: str, module: str = "app") -> Path:
    """Writes ``source`` (dedented) as ``<directory>/<module>.py``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    return path


def make_function(rt: Runtime, name: str, source: str, **config: Any) -> Path:
    """Writes ``source`` as app.py under the runtime's state dir and registers it.

    ``config`` goes to ``create_function`` (handler defaults to app.handler).
    Returns the code directory.
    """
    code = Path(rt.state_dir) / "code" / name
    write_handler(code, source)
    config.setdefault("handler", "app.handler")
    rt.create_function(name, code=str(code), **config)
    return code


@pytest.fixture(params=START_KINDS)
def start(request: pytest.FixtureRequest) -> str:
    """Both start kinds: "snapshot" (forked from a zygote) and "cold" (exec'd)."""
    return str(request.param)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    rt = Runtime(idle_timeout_s=120)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def host_runtime() -> Iterator[Runtime]:
    """A Runtime without the isolation steps (cgroups stay): for tests that
    watch a running handler through files it writes on the host, which an
    isolated environment's read-only root and private /tmp would hide."""
    rt = Runtime(idle_timeout_s=120, isolation=False)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture(name="make_function")
def make_function_fixture(runtime: Runtime) -> Callable[..., Path]:
    """``make_function(name, source, **config)`` on the test's ``runtime``;
    pass ``rt=`` to use another Runtime."""

    def make(name: str, source: str, *, rt: Runtime | None = None, **config: Any) -> Path:
        return make_function(rt or runtime, name, source, **config)

    return make


@pytest.fixture
def actions(runtime: Runtime, start: str) -> str:
    """A function running ACTIONS_SOURCE with timeout_s=1; returns its name."""
    make_function(runtime, "actions", ACTIONS_SOURCE, start=start, timeout_s=1)
    return "actions"


# -- processes ---------------------------------------------------------------------
def is_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: Any, timeout: float = 5.0) -> set[int]:
    """Waits until none of ``pids`` is alive; returns those still alive at the end."""
    deadline = time.monotonic() + timeout
    remaining = {p for p in pids if is_alive(p)}
    while remaining and time.monotonic() < deadline:
        time.sleep(0.02)
        remaining = {p for p in remaining if is_alive(p)}
    return remaining


def function_zygote(rt: Runtime, name: str) -> Any:
    """The function's zygote, once up (after a first invoke): where INIT runs
    isolated, a function's first start forks from the zygote tree and boots
    its zygote meanwhile."""
    pool = rt._functions[name].pool
    assert wait_for(lambda: pool._zygote is not None and pool._zygote.alive), name
    return pool._zygote


def invoke_from_zygote(rt: Runtime, name: str, event: Any = None) -> Any:
    """An invocation in a new environment forked from the function's zygote:
    a first invoke boots the zygote, then idle environments (which may come
    from the tree) are shut down."""
    pool = rt._functions[name].pool
    if pool._zygote is None:
        rt.invoke(name, {})
    function_zygote(rt, name)
    rt.shutdown_idle(name, wait=True)
    return rt.invoke(name, event if event is not None else {})


def tree_zygote_pids(rt: Runtime) -> dict[tuple[str, ...], int]:
    """The base zygote's and the tree nodes' pids, by the packages each holds
    beyond the base (the base: ())."""
    return {tuple(n["packages"]): n["pid"] for n in rt.zygote_tree()["tree"] if n["alive"]}


def spares_of(rt: Runtime, zygote_pid: int, exclude: Any = ()) -> set[int]:
    """The spare children a zygote of the tree keeps made for first starts:
    its children running Python that are neither zygotes (nodes, functions'
    zygotes) nor in ``exclude`` (environments it started)."""
    described = rt.zygote_tree()
    zygotes = ({n["pid"] for n in described["tree"]}
               | {f["pid"] for f in described["functions"].values()})
    spares = set()
    for child in psutil.Process(zygote_pid).children():
        try:
            if child.pid not in zygotes and child.pid not in exclude \
                    and child.name() == "python":
                spares.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return spares


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Polls ``predicate`` until it is truthy; returns its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def descendants(pid: int | None = None) -> set[int]:
    """Pids of every live descendant of ``pid`` (default: this process)."""
    try:
        proc = psutil.Process(pid or os.getpid())
        return {p.pid for p in proc.children(recursive=True) if is_alive(p.pid)}
    except psutil.NoSuchProcess:
        return set()


def environment_tree(result: Any) -> set[int]:
    """Host pids of the environment that ran ``result`` and its descendants.

    Inside its pid namespace the handler is pid 2, so tests find its processes
    from the host side: the pid the report names and that process's children.
    """
    pid = result.report["pid"]
    return {pid} | descendants(pid)
# -- invocation models ---------------------------------------------------------------
def take_messages(rt: Runtime, queue: str, count: int, timeout: float = 20.0) -> list[dict]:
    """Receives and deletes messages from ``queue`` until ``count`` arrived
    (fewer if ``timeout`` passes first); returns them in arrival order."""
    deadline = time.monotonic() + timeout
    taken: list[dict] = []
    while len(taken) < count and time.monotonic() < deadline:
        wait = min(max(deadline - time.monotonic(), 0.0), 1.0)
        for message in rt.receive_messages(queue, min(10, count - len(taken)), wait_s=wait):
            rt.delete_message(queue, message["receipt_handle"])
            taken.append(message)
    return taken


def take_records(rt: Runtime, queue: str, count: int, timeout: float = 20.0) -> list[dict]:
    """``take_messages`` with each body parsed as JSON (destination records)."""
    import json

    return [json.loads(m["body"]) for m in take_messages(rt, queue, count, timeout)]


# -- stores: the same behavioural tests on SQLite and on a real Redis ------------------
STORES = ("sqlite", "redis")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One ``redis-server`` (AOF on) per test module (so that it is gone before
    tests that check no child process is left); tests flush their database."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """Both stores: "sqlite" (the default) and a Redis URL on an empty database."""
    if request.param == "sqlite":
        return "sqlite"
    import redis

    server = request.getfixturevalue("redis_server")
    client = redis.Redis(port=server.port)
    client.flushdb()
    client.close()
    return str(server.url())
