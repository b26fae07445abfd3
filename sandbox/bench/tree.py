"""The zygote tree's cases of ``sandbox bench`` (issue 8): a new function's first start.

One pair of cases per handler of :data:`TREE_HANDLERS`, each sample the first
invocation of a function created just before it (a new name every sample,
deleted after it), with ``preload`` naming the handler's imports:

* ``tree-first-<handler>``: a snapshot function. A function with the same
  ``preload`` was started before the cases, so the tree already holds the
  imports: the sample forks the function's zygote from that node (checked
  after every sample), runs INIT (which imports only the handler's module),
  forks the environment and invokes it.
* ``cold-first-<handler>``: ``start="cold"``: a new interpreter imports the
  runtime and the handler.

Only ``Runtime.invoke`` is timed; creating and deleting the function are not.
"""

from __future__ import annotations

import ast
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

import psutil

from ..api import Runtime
from ..errors import ServiceException
from .cases import EXAMPLES, CaseSet, Sampler, Skipped, check_start


@dataclass(frozen=True)
class TreeHandler:
    """A handler of the tree cases.

    Attributes:
        name: ``stdlib``, ``thirdparty`` or ``base``.
        code: its directory (an ``app.py`` with ``handler``).
        preload: the modules its ``app.py`` imports, declared with the function.
        node: whether its imports need a tree node (False: the base holds them).
        description: what it imports.
    """

    name: str
    code: str
    preload: tuple[str, ...]
    node: bool
    description: str


def imports_of(path: str) -> tuple[str, ...]:
    """The modules a Python file imports at its top level (``import a.b`` gives
    ``a.b``, ``from a.b import c`` gives ``a.b``), sorted: what a function
    with this file as its handler module declares in ``preload``."""
    with open(path) as file:
        tree = ast.parse(file.read(), path)
    found: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.Import):
            found.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
            found.add(statement.module)
    return tuple(sorted(found))


def _handler(name: str, directory: str, node: bool, description: str) -> TreeHandler:
    code = os.path.join(EXAMPLES, directory)
    return TreeHandler(name, code, imports_of(os.path.join(code, "app.py")), node, description)


TREE_HANDLERS = (
    _handler("stdlib", "stdlib-heavy", True,
             "stdlib beyond the base: asyncio, sqlite3, email, ..."),
    _handler("thirdparty", "thirdparty", True, "PyYAML and rich"),
    _handler("base", "base-stdlib", False, "only modules the base holds"),
)
TREE_HANDLER_NAMES = tuple(h.name for h in TREE_HANDLERS)


def tree_case_name(handler: str) -> str:
    return f"tree-first-{handler}"


def cold_case_name(handler: str) -> str:
    return f"cold-first-{handler}"


def warm_tree(rt: Runtime, handler: TreeHandler) -> int:
    """Starts a function with ``handler``'s preload (it stays registered), so
    that the tree holds its imports; returns the pid of the zygote its first
    environment forked from (the node holding them, or the base).

    Raises:
        ServiceException: the invocation failed, or the tree did not fork it
            from a node (``handler.node``) or from the base (otherwise).
    """
    name = f"tree-warm-{handler.name}"
    rt.create_function(name, handler="app.handler", code=handler.code,
                       preload=list(handler.preload))
    result = rt.invoke(name, {})
    check_start(result, "snapshot")
    described = rt.zygote_tree()
    parent = parent_of(result)
    nodes = {n["pid"]: n for n in described["tree"]}
    if parent is None or parent not in nodes:
        raise ServiceException(f"the first environment of {name} was not forked from the "
                               "zygote tree (is isolated INIT off on this host?)")
    from_node = nodes[parent]["parent"] is not None
    if from_node != handler.node:
        raise ServiceException(
            f"the first environment of {name} forked from "
            f"{'a node' if from_node else 'the base'}, expected "
            f"{'a node' if handler.node else 'the base'}: preload {list(handler.preload)}")
    return parent


def parent_of(result: Any) -> int | None:
    """The parent pid of the environment that ran an invocation (None: gone)."""
    try:
        return int(psutil.Process(result.report["pid"]).ppid())
    except psutil.Error:
        return None


class FirstStarts:
    """New functions of one handler and start kind, for timing their first
    invocation: :meth:`create` (untimed), ``invoke`` (timed), :meth:`finish`
    (untimed: checks the result, then deletes the function).

    Args:
        parent_pid: for snapshot starts, the pid of the tree node (or base)
            that :func:`warm_tree` found: every new function's first
            environment must fork from it, or the sample did not measure the
            warm tree.
    """

    def __init__(self, rt: Runtime, handler: TreeHandler, start: str,
                 parent_pid: int | None) -> None:
        self.rt = rt
        self.handler = handler
        self.start = start
        self.parent_pid = parent_pid
        self._numbers = itertools.count()

    def create(self) -> str:
        name = f"first-{self.start}-{self.handler.name}-{next(self._numbers)}"
        self.rt.create_function(name, handler="app.handler", code=self.handler.code,
                                start=self.start, preload=list(self.handler.preload))
        return name

    def finish(self, name: str, result: Any) -> dict[str, Any]:
        """Checks the first invocation's result and where its zygote forked
        from, then deletes the function (its processes gone on return);
        returns the invocation's report.

        Raises:
            ServiceException: it failed, started otherwise than expected, or
                its first environment forked from another parent than ``parent_pid``.
        """
        try:
            check_start(result, self.start)
            if self.start == "snapshot":
                parent = parent_of(result)
                if parent != self.parent_pid:
                    raise ServiceException(
                        f"{name}'s first environment forked from pid {parent}, not from the "
                        f"warm tree node {self.parent_pid}: the sample did not measure the "
                        "warm tree")
            report: dict[str, Any] = result.report
            return report
        finally:
            # The zygote its first start began to boot is done before the next
            # sample, so that it takes no CPU from it.
            self.rt.wait_zygote_boot(name)
            self.rt.shutdown_idle(name, wait=True)
            self.rt.delete_function(name)

    def sampler(self) -> Sampler:
        invoke = self.rt.invoke

        def sample(n: int) -> list[float]:
            times = []
            for _ in range(n):
                name = self.create()
                t0 = time.perf_counter()
                result = invoke(name, {})
                times.append(time.perf_counter() - t0)
                self.finish(name, result)
            return times

        return sample


def add_cases(case_set: CaseSet, tree_per_round: int = 4, cold_per_round: int = 1) -> None:
    """Adds the ``tree-first-*`` and ``cold-first-*`` cases on the case
    set's Runtime (built already, with the ``sandbox`` family), after
    warming the tree for each handler. A ``tree-first-*`` case whose tree
    could not be warmed (see :func:`warm_tree`) is skipped, with the reason.

    Raises:
        ValueError: the case set has no Runtime.
    """
    rt = case_set.runtime
    if rt is None:
        raise ValueError("the tree cases need the sandbox family's Runtime: build it first")
    for handler in TREE_HANDLERS:
        try:
            parent = warm_tree(rt, handler)
        except ServiceException as exc:
            case_set.skipped.append(Skipped(tree_case_name(handler.name), exc.message))
        else:
            case_set.add(tree_case_name(handler.name), "sandbox", handler.name, "snapshot",
                         tree_per_round, FirstStarts(rt, handler, "snapshot", parent).sampler(),
                         f"first invoke of a new function, forked from the warm tree "
                         f"({handler.description})")
        case_set.add(cold_case_name(handler.name), "sandbox", handler.name, "cold",
                     cold_per_round, FirstStarts(rt, handler, "cold", None).sampler(),
                     f"first invoke of a new cold function ({handler.description})")
