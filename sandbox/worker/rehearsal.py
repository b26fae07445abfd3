"""A zygote's rehearsal: before it forks, it runs the code its children run first.

CPython 3.11 counts a code object's first runs and then rewrites its bytecode
in place (quickening, then specialization), and caches the attribute lookups
of types. A forked child that runs code its zygote never ran writes to those
pages, and each first write copies a page it shared with the zygote: a fault
(about 3 µs here) and 4 KiB of memory of its own, in every child. So a zygote
runs, ten times and with no function code, what each child runs first:

* the invocation path of an environment: an INVOKE frame in over a pipe,
  ``run_one`` with a no-op handler, the RESULT frame out;
* the after-fork hooks that CPython runs in every child, of the modules this
  zygote holds (threading, logging, random): a process with one thread is in
  the state they restore, so running them changes nothing here;
* taking an environment: emptying ``os.environ`` and filling it again.

It is called only once the zygote knows it has one thread.
"""

from __future__ import annotations

import os
import sys
import time

from ..protocol import INVOKE, Channel, FdStream
from . import context
from .invoke_loop import run_one

# typing is not imported at run time: every cold start would pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# CPython quickens a code object after 8 runs; a few more specialize it.
REHEARSALS = 10


def rehearse(rounds: int = REHEARSALS) -> None:
    """Runs the three rehearsals above; never fails the zygote (a hook that
    raises is left to the children, which run it anyway)."""
    _invocation_path(rounds)
    _after_fork_hooks(rounds)
    _environment(rounds)


def _invocation_path(rounds: int) -> None:
    read_fd, write_fd = os.pipe()
    try:
        sender, receiver = Channel(FdStream(write_fd)), Channel(FdStream(read_fd))
        invoke = {"t": INVOKE, "id": "rehearsal", "event": b'{"rehearsal": [1, 2.5, "x"]}',
                  "arn": "arn:aws:lambda:rehearsal", "deadline_ms": time.time() * 1000.0,
                  "client_context": None, "identity": None}
        for _ in range(rounds):
            sender.send(invoke)
            frame = receiver.recv()
            if frame is None:
                return
            sender.send(run_one(_no_op_handler, frame))
            receiver.recv()
    finally:
        os.close(read_fd)
        os.close(write_fd)
        # The facts of the function are read again in the child, from its
        # own environment.
        context.forget_function_facts()


def _no_op_handler(event: Any, lambda_context: Any) -> Any:
    return {"event": event, "remaining": lambda_context.get_remaining_time_in_millis()}


def _after_fork_hooks(rounds: int) -> None:
    """The after_in_child hooks of threading, logging and random, where this
    zygote imported them (they are CPython's, registered with
    os.register_at_fork; each child runs them before anything else)."""
    hooks = []
    threading = sys.modules.get("threading")
    if threading is not None and hasattr(threading, "_after_fork"):
        hooks.append(threading._after_fork)
    logging = sys.modules.get("logging")
    if logging is not None and hasattr(logging, "_after_at_fork_child_reinit_locks"):
        hooks.append(logging._after_at_fork_child_reinit_locks)
    random = sys.modules.get("random")
    if random is not None and hasattr(random, "_inst"):
        hooks.append(random._inst.seed)
    for hook in hooks:
        try:
            for _ in range(rounds):
                hook()
        except Exception as exc:  # not this zygote's to fix: its children run it too
            sys.stderr.write(f"zygote {os.getpid()}: rehearsing {hook!r}: {exc}\n")


def _environment(rounds: int) -> None:
    """What a child does to take its environment: clear, then update."""
    saved = dict(os.environ)
    for _ in range(rounds):
        os.environ.clear()
        os.environ.update(saved)
