"""The zygote tree: a base interpreter that imported what handlers commonly
use, and nodes forked from it that imported more, from which function
zygotes are forked (the SOCK/OpenLambda import cache).

The base is the launcher zygote (it also execs cold environments). A node
holds the packages of one set on top of its parent's; a function zygote is
forked from the node with the most packages among those holding only
packages the function asked for (``preload``, or what its first INIT
imported), so that a function never inherits a package it did not ask for.
Neither the base nor a node runs function code: they import packages of this
interpreter's environment, and hold nothing but the host's PATH, locale and
time zone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ServiceException
from .supervisor import Supervisor
from .zygote import Rebuilds, Zygote, ZygoteExited

log = logging.getLogger("sandbox.environments")

# The base zygote's imports: the runtime itself (imported anyway) and the
# standard library modules handlers commonly import.
DEFAULT_PRELOAD = (
    "base64", "collections", "copy", "csv", "dataclasses", "datetime", "decimal", "enum",
    "functools", "gzip", "hashlib", "hmac", "http.client", "io", "itertools", "json",
    "logging", "math", "random", "re", "string", "struct", "textwrap", "time", "traceback",
    "typing", "urllib.parse", "urllib.request", "uuid", "xml.etree.ElementTree", "zlib",
)
# How long the base or a node may take to import its packages.
NODE_BOOT_TIMEOUT_S = 30.0


@dataclasses.dataclass
class _Node:
    zygote: Zygote
    packages: frozenset[str]  # top-level packages it imported beyond the base's
    parent: _Node | None
    last_used: float


class ZygoteTree:
    """The base zygote (started on first use, rebuilt once after it died) and
    the nodes under it (made on demand, retired when idle)."""

    def __init__(self, supervisor: Supervisor, environ: Mapping[str, str], python: str,
                 preload: tuple[str, ...], check_open: Callable[[], None]) -> None:
        self._supervisor = supervisor
        self._environ = dict(environ)
        self._python = python
        self.preload = preload
        self._check_open = check_open
        self._lock = threading.Lock()
        self._base: _Node | None = None
        self._base_modules: frozenset[str] = frozenset()  # top-level, as the base reported
        self._base_rebuilds = Rebuilds("the base zygote")
        self._nodes: dict[frozenset[str], _Node] = {}
        self._unloadable: set[frozenset[str]] = set()

    # -- the base --------------------------------------------------------------
    def base(self) -> Zygote:
        """The base zygote, started on first use or after it ended.

        Raises:
            ServiceException: it did not start, or died twice in a row.
        """
        with self._lock:
            return self._base_node().zygote

    def _base_node(self) -> _Node:
        self._check_open()
        node = self._base
        if node is not None and node.zygote.alive:
            node.last_used = time.monotonic()
            return node
        if node is not None:
            self._forget_subtree(node)
            if not node.zygote.ended_by_us:
                try:
                    self._base_rebuilds.died(node.zygote)
                except ServiceException:
                    self._base = None  # reported: the next call starts one anew
                    raise
        zygote = Zygote("launcher", self._environ, "/", self._python, preload=self.preload)
        hello = zygote.start(NODE_BOOT_TIMEOUT_S)
        if not zygote.alive:
            raise ServiceException(f"the base zygote cannot fork: it runs "
                                   f"{hello.get('threads')} threads after its imports")
        self._supervisor.watch(zygote)
        self._base_modules = frozenset(hello.get("modules") or ())
        self._base = _Node(zygote, frozenset(), None, time.monotonic())
        return self._base

    # -- nodes -----------------------------------------------------------------
    def parent_for(self, wanted: frozenset[str]) -> Zygote:
        """The zygote to fork a function's zygote (or first environments)
        from: the node holding the most of ``wanted`` (module names) and
        nothing else, made now when no node holds exactly what the base
        lacks of it.

        Raises:
            ServiceException: the base zygote cannot start.
        """
        with self._lock:
            base = self._base_node()
            extra = wanted - self._base_modules
            if not extra:
                return base.zygote
            best = max((n for n in self._nodes.values()
                        if n.packages <= extra and n.zygote.alive),
                       key=lambda n: len(n.packages), default=base)
            if best.packages != extra and extra not in self._unloadable:
                made = self._make_node(best, extra)
                if made is not None:
                    best = made
            best.last_used = time.monotonic()
            return best.zygote

    def _make_node(self, parent: _Node, packages: frozenset[str]) -> _Node | None:
        """A node forked from ``parent`` that imports what it lacks of
        ``packages``; None (and a warning) when it cannot serve."""
        try:
            zygote, hello = Zygote.fork_node(parent.zygote, sorted(packages - parent.packages),
                                             NODE_BOOT_TIMEOUT_S)
        except (ServiceException, ZygoteExited) as exc:
            log.warning("cannot make a zygote-tree node for %s: %s", sorted(packages), exc)
            self._unloadable.add(packages)
            return None
        if not zygote.alive:
            log.warning("no zygote-tree node for %s: its imports left %s threads running",
                        sorted(packages), hello.get("threads"))
            self._unloadable.add(packages)
            return None
        self._supervisor.watch(zygote)
        # A package it could not import is left to the function's INIT,
        # which reports it as Lambda does.
        node = _Node(zygote, packages, parent, time.monotonic())
        self._nodes[packages] = node
        return node

    def _forget_subtree(self, root: _Node) -> None:
        """Nodes under ``root`` (which ended): they ended with it."""
        for key, node in list(self._nodes.items()):
            ancestor: _Node | None = node
            while ancestor is not None and ancestor is not root:
                ancestor = ancestor.parent
            if ancestor is root:
                del self._nodes[key]
                node.zygote.close(grace_s=0.5)

    # -- lifecycle -------------------------------------------------------------
    def retire_idle(self, idle_for_s: float) -> int:
        """Closes nodes unused for ``idle_for_s`` seconds (leaves first, so a
        parent in use by a child is kept); returns how many."""
        cutoff = time.monotonic() - idle_for_s
        with self._lock:
            parents = {id(n.parent) for n in self._nodes.values()}
            retired = [k for k, n in self._nodes.items()
                       if n.last_used <= cutoff and id(n) not in parents]
            nodes = [self._nodes.pop(k) for k in retired]
        for node in nodes:
            node.zygote.close()
        return len(nodes)

    def close(self) -> None:
        with self._lock:
            nodes = list(self._nodes.values())
            self._nodes.clear()
            base, self._base = self._base, None
        for node in reversed(nodes):
            node.zygote.close()
        if base is not None:
            base.zygote.close()

    def describe(self) -> list[dict[str, Any]]:
        """The base and each node: pid, parent pid, packages beyond the base."""
        with self._lock:
            nodes = ([self._base] if self._base is not None else []) + list(self._nodes.values())
            return [{"pid": n.zygote.pid,
                     "parent": n.parent.zygote.pid if n.parent is not None else None,
                     "packages": sorted(n.packages), "alive": n.zygote.alive}
                    for n in nodes]
