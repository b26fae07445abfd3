"""Memory of the zygote tree in ``sandbox bench`` (issue 8): what its processes share.

On a fresh Runtime, one function per handler of
:data:`sandbox.bench.tree.TREE_HANDLERS` (its module imports what the
handler's does, plus a handler that can hold its environment busy) gets a few
idle environments. Then every process under the base zygote is measured with
psutil's ``memory_full_info()``:

* RSS: resident pages, shared ones counted in full in every process;
* USS: pages only this process maps (what ending it would free);
* PSS: each resident page divided by the number of processes mapping it, so
  that the PSS of all processes adds up to the memory they really use.

The tree's sharing shows as the sum of USS against the sum of RSS, and as
the mean PSS of an idle environment against that of a fresh interpreter that
imported the same handler (a cold start's process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import psutil

from ..api import Runtime
from ..environments.tree import DEFAULT_PRELOAD
from ..errors import ServiceException
from .sweeps import HOLD_SOURCE, MIB, cold_interpreter_memory, write_code
from .tree import TREE_HANDLERS, TreeHandler

ROLES = ("base", "node", "function zygote", "environment", "spare", "helper")
# How long each concurrent invocation holds its environment, so that each
# takes an environment of its own.
HOLD_S = 0.3


def hold_source(handler: TreeHandler) -> str:
    """A handler module with the imports of ``handler``'s module, whose
    handler sleeps for ``event["hold"]`` seconds (to hold its environment)."""
    return "".join(f"import {module}  # noqa: F401\n" for module in handler.preload) + HOLD_SOURCE


def _idle_environments(rt: Runtime, name: str, count: int) -> set[int]:
    """``count`` concurrent invocations of ``name`` after a first one (which
    builds its zygote) has ended; returns the pids of the environments that
    ran them (forked from the zygote)."""
    pids: set[int] = set()
    errors: list[str] = []

    def hold() -> None:
        result = rt.invoke(name, {"hold": HOLD_S})
        if result.function_error is not None or result.report is None:
            errors.append(f"{name}: {result.payload}")
            return
        pids.add(result.report["pid"])

    hold()
    # The first start forked from the tree and booted the zygote meanwhile:
    # the measured environments are the zygote's.
    rt.wait_zygote_boot(name)
    rt.shutdown_idle(name, wait=True)
    pids.clear()
    threads = [threading.Thread(target=hold) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise ServiceException(f"tree memory: an invocation failed: {errors[0]}")
    return pids


def _figures(info: Any) -> dict[str, float]:
    return {"rss_mb": info.rss / MIB, "uss_mb": info.uss / MIB, "pss_mb": info.pss / MIB}


def _sum(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """How many processes, and the sums of their RSS, USS and PSS."""
    listed = list(rows)
    return {"count": len(listed),
            **{key: sum(r[key] for r in listed) for key in ("rss_mb", "uss_mb", "pss_mb")}}


def measure_tree(rt: Runtime, env_functions: dict[int, str]) -> list[dict[str, Any]]:
    """Every process under ``rt``'s base zygote, base first: its role, pid,
    parent pid, what it holds (packages beyond the base for a node, the
    function for a function zygote or environment) and its memory in MiB.

    Args:
        env_functions: the function of each environment, by pid; other
            Python processes under the base or a node are spares (children
            made ahead for first starts), others helpers (the init of a pid
            namespace made ahead).
    Raises:
        ServiceException: the base zygote is not running.
    """
    described = rt.zygote_tree()
    tree = {n["pid"]: n for n in described["tree"] if n["alive"]}
    base_pid = next((pid for pid, n in tree.items() if n["parent"] is None), None)
    if base_pid is None:
        raise ServiceException("tree memory: the base zygote is not running")
    zygotes = {f["pid"]: name for name, f in described["functions"].items()
               if f["pid"] is not None}
    base = psutil.Process(base_pid)
    rows = []
    for proc in (base, *base.children(recursive=True)):
        pid = proc.pid
        if pid == base_pid:
            role, holds = "base", f"{len(DEFAULT_PRELOAD)} preloaded modules"
        elif pid in tree:
            role, holds = "node", ", ".join(tree[pid]["packages"])
        elif pid in zygotes:
            role, holds = "function zygote", zygotes[pid]
        elif pid in env_functions:
            role, holds = "environment", env_functions[pid]
        else:
            try:
                spare = proc.name() == "python" and proc.ppid() in tree
                role, holds = ("spare", "") if spare else ("helper", proc.name())
            except psutil.NoSuchProcess:
                continue
        try:
            rows.append({"role": role, "pid": pid, "parent": proc.ppid(), "holds": holds,
                         **_figures(proc.memory_full_info())})
        except psutil.NoSuchProcess:
            continue  # a helper that ended meanwhile
    rows.sort(key=lambda r: ROLES.index(r["role"]))
    return rows


def tree_memory(idle_envs: int = 2) -> dict[str, Any]:
    """The memory report of a tree holding one function per tree handler,
    each with ``idle_envs`` idle environments (on a Runtime of its own,
    closed on return).

    Returns:
        ``processes`` (see :func:`measure_tree`), ``by_role`` and ``totals``
        (count and sums of RSS, USS, PSS in MiB; ``uss_over_rss``: the part
        of the resident memory that is not shared), and ``handlers``: for
        each, its idle environments' mean RSS/USS/PSS, the same of a fresh
        interpreter that imported the handler (``cold_interpreter``) and
        ``env_pss_over_cold_pss``; ``cold_equivalent_pss_mb`` is what as many
        fresh interpreters as there are environments would use (their PSS),
        against ``totals.pss_mb`` for the whole tree.
    Raises:
        ServiceException: an environment or the base zygote was not found.
    """
    with Runtime(cpu_follows_memory=False, idle_timeout_s=3600) as rt:
        env_functions: dict[int, str] = {}
        for handler in TREE_HANDLERS:
            name = f"memory-{handler.name}"
            code = write_code(rt, name, hold_source(handler))
            rt.create_function(name, handler="app.handler", code=code,
                               preload=list(handler.preload))
            env_functions.update(dict.fromkeys(_idle_environments(rt, name, idle_envs), name))
        time.sleep(0.1)  # let the environments settle into their idle wait
        processes = measure_tree(rt, env_functions)
    handlers: dict[str, Any] = {}
    for handler in TREE_HANDLERS:
        envs = [r for r in processes
                if r["role"] == "environment" and r["holds"] == f"memory-{handler.name}"]
        if not envs:
            raise ServiceException(f"tree memory: no idle environment of {handler.name} found")
        mean = {key: sum(r[key] for r in envs) / len(envs)
                for key in ("rss_mb", "uss_mb", "pss_mb")}
        cold = cold_interpreter_memory(handler.code)
        handlers[handler.name] = {
            "idle_envs": len(envs), "env_rss_mb": mean["rss_mb"], "env_uss_mb": mean["uss_mb"],
            "env_pss_mb": mean["pss_mb"], "cold_interpreter": cold,
            "env_pss_over_cold_pss": mean["pss_mb"] / cold["pss_mb"],
        }
    totals = _sum(processes)
    totals["uss_over_rss"] = totals["uss_mb"] / totals["rss_mb"]
    return {
        "processes": processes,
        "by_role": {role: _sum(r for r in processes if r["role"] == role)
                    for role in ROLES if any(r["role"] == role for r in processes)},
        "totals": totals,
        "handlers": handlers,
        "cold_equivalent_pss_mb": sum(h["idle_envs"] * h["cold_interpreter"]["pss_mb"]
                                      for h in handlers.values()),
    }
