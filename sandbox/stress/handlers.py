"""The functions ``sandbox stress`` runs, one per kind, and the outcomes
(``report["status"]`` values) each kind may legitimately end with.

* noop: returns at once.
* cpu: burns about 20 ms of CPU time (slower in wall time under the CPU
  quota that follows memory, as in Lambda).
* alloc: allocates past its memory size: the OOM killer ends it (cgroups),
  or a MemoryError is raised (RLIMIT_AS only).
* crash: dies of SIGSEGV mid-invocation.
* orphan: forks a grandchild that leaves its session (setsid) and sleeps,
  then dies of SIGSEGV: the runtime must report the crash at once and kill
  the grandchild too (not in the default mix).
* timeout: sleeps past its 1 s timeout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..constants import DEFAULT_MEMORY_MB

if TYPE_CHECKING:
    from ..api import Runtime


@dataclass(frozen=True)
class Kind:
    name: str
    source: str
    timeout_s: float
    expected: frozenset[str]  # report["status"] values that count as right


_NOOP = """\
def handler(event, context):
    return None
"""
_CPU = """\
import time


def handler(event, context):
    end = time.process_time() + 0.02
    spins = 0
    while time.process_time() < end:
        spins += 1
    return spins
"""
_ALLOC = """\
def handler(event, context):
    blocks = []
    while True:  # touched pages (b"x" * n writes them), until the limit stops us
        blocks.append(b"x" * (16 * 1024 * 1024))
"""
_CRASH = """\
import os
import signal
import time


def handler(event, context):
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)
"""
_ORPHAN = """\
import os
import signal
import time


def handler(event, context):
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:  # the grandchild escapes the session; the runtime must still end it
        os.setsid()
        time.sleep(60)
        os._exit(0)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)
"""
_TIMEOUT = """\
import time


def handler(event, context):
    time.sleep(30)
"""

# Generous timeouts for the kinds that should finish: a loaded host must not
# turn them into timeouts.
KIND_LIST = (
    Kind("noop", _NOOP, 10.0, frozenset({"ok"})),
    Kind("cpu", _CPU, 10.0, frozenset({"ok"})),
    Kind("alloc", _ALLOC, 10.0, frozenset({"oom", "error"})),
    Kind("crash", _CRASH, 10.0, frozenset({"signal", "exit", "crashed"})),
    Kind("orphan", _ORPHAN, 3.0, frozenset({"signal", "exit", "crashed"})),
    Kind("timeout", _TIMEOUT, 1.0, frozenset({"timeout"})),
)
KINDS: dict[str, Kind] = {kind.name: kind for kind in KIND_LIST}
MEMORY_MB = DEFAULT_MEMORY_MB  # Lambda's default, where alloc meets its limit soonest


def register(rt: Runtime, kinds: list[str], code_root: str) -> dict[str, str]:
    """Writes and registers one function per kind; returns function name by kind."""
    names = {}
    for name in kinds:
        kind = KINDS[name]
        code = os.path.join(code_root, name)
        os.makedirs(code, exist_ok=True)
        with open(os.path.join(code, "app.py"), "w") as file:
            file.write(kind.source)
        function = f"stress-{name}"
        rt.create_function(function, handler="app.handler", code=code, memory_mb=MEMORY_MB,
                           timeout_s=kind.timeout_s)
        names[name] = function
    return names
