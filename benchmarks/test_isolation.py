"""What isolation costs: per step, and for a whole snapshot start.

isolation-step     sandbox._native.spawn of /bin/true (exec path: no Python in
                   the child) with the isolation steps added one group at a
                   time; each step's cost is its median minus the previous row's.
snapshot-bare-noop a snapshot start through a Runtime with neither cgroups nor
                   isolation, to set against snapshot-noop (everything on),
                   measured in the same run by test_core.py.
warm-bare-noop     the same for warm invokes: isolation must cost them nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import Runtime, _native
from sandbox.limits.isolation import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    INIT_PATH,
    Isolation,
)

from .conftest import HANDLERS
from .test_core import _bench_new_env, _bench_warm

ROUNDS = 200

# Cumulative: each row adds one group of steps to the row before it.
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("1-none", {}),
    ("2-mount,ipc,uts ns", {"unshare": CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS,
                            "hostname": "sandbox"}),
    ("3-pid ns + its init", {"pid_namespace": True, "init_path": INIT_PATH}),
    ("4-net ns", {"unshare": CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET,
                  "loopback_up": True}),
    # keep_paths, mask_paths: filled from the host's Isolation
    ("5-ro root, private /tmp, covered dirs, /proc",
     {"private_mounts": True, "tmp_options": "size=64m,mode=1777", "mount_proc": True,
      "keep_paths": None, "mask_paths": None}),
    ("6-caps, own uid, no_new_privs", {"drop_capabilities": True, "no_new_privs": True,
                                       "uid": None, "gid": None}),
    ("7-seccomp", {"seccomp": None}),
]


@pytest.fixture(scope="module")
def isolation() -> Isolation:
    return Isolation()


def _spec(upto: int, isolation: Isolation) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for _, step in STEPS[: upto + 1]:
        spec.update(step)
    host = isolation.spec()
    for key in ("seccomp", "keep_paths", "mask_paths"):
        if key in spec:
            spec[key] = host[key]
    if "uid" in spec:
        # A uid of the range the Runtime leases from (not leased: nothing else
        # of this benchmark runs as it).
        uid = isolation.uids.base if isolation.uids is not None else host["uid"]
        spec.update(uid=uid, gid=uid)
    return spec


@pytest.mark.parametrize("index", range(len(STEPS)), ids=[name for name, _ in STEPS])
@pytest.mark.benchmark(group="isolation-step")
def test_isolation_step(benchmark: Any, isolation: Isolation, index: int) -> None:
    if os.geteuid() != 0 and index > 0:
        pytest.skip("isolation steps need root")
    spec = _spec(index, isolation)
    ours, theirs = socket.socketpair()
    log_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    def spawn_and_wait() -> None:
        pid = _native.spawn(theirs.fileno(), log_fd, ["/bin/true"], {}, (), (), spec)
        _, status = os.waitpid(pid, 0)
        _native.end_pid_namespace(pid)
        assert status == 0

    try:
        benchmark.pedantic(spawn_and_wait, rounds=ROUNDS, warmup_rounds=5)
    finally:
        ours.close()
        theirs.close()
        os.close(log_fd)


@pytest.fixture(scope="module")
def bare_runtime() -> Iterator[Runtime]:
    with Runtime(cgroups=False, isolation=False) as rt:
        rt.create_function("noop-bare", handler="app.handler", code=HANDLERS["noop"])
        assert rt.invoke("noop-bare", {}).function_error is None
        yield rt


@pytest.mark.benchmark(group="snapshot-bare-noop")
def test_snapshot_bare_noop(benchmark: Any, bare_runtime: Runtime) -> None:
    _bench_new_env(benchmark, bare_runtime, "noop-bare", "snapshot", 300)


@pytest.mark.benchmark(group="warm-bare-noop")
def test_warm_bare_noop(benchmark: Any, bare_runtime: Runtime) -> None:
    _bench_warm(benchmark, bare_runtime, "noop-bare")
