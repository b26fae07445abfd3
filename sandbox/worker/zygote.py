"""Entry point of a zygote (fork-server) process.

Started by the dispatcher as ``python -c <this main> CTRL_FD MODE``:

- ``function`` mode runs the function's INIT (imports its module) once, freezes
  the GC so forked children do not dirty the shared heap, and forks snapshot
  environments that continue from right here;
- ``launcher`` mode runs no function code and execs a fresh interpreter per
  environment: the cold start. It is also the base of the zygote tree: it
  imports the packages functions commonly use (``--preload``), then forks
  function zygotes that continue from there (``_become_function_zygote``):
  each takes the function's isolation, then runs its INIT as above, so a
  function's first start skips the interpreter's boot and those imports.

Either way it waits in the native loop (``sandbox._native.serve``) and stays
single-threaded, so fork is sound.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import sys
import time

from .. import _native
from ..errors import ProtocolError
from ..protocol import (
    EXITED,
    HELLO,
    PROTOCOL_VERSION,
    SPAWN,
    SPAWN_FAILED,
    SPAWNED,
    Channel,
    FdStream,
    decode_packet,
    encode,
)
from .cold import init_and_serve
from .handler import initialize
from .invoke_loop import exit_environment, line_buffered_stdio, serve_invocations
from .rehearsal import rehearse

CLONE_NEWNET = 0x40000000

# typing is not imported at run time: every cold start would pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .handler import Handler

    SpawnRequest = tuple[int, int, Any, Any, list[int], list[Any], Any, dict[str, Any]]


def thread_count() -> int:
    """Threads in this process, from the kernel: imports can start threads too."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"Threads:"):
                return int(line.split()[1])
    return 1


# Namespaces a zygote keeps made for its next environments, of each kind.
NAMESPACES_AHEAD = 2
# Spare children a privileged zygote (the base, a tree node) keeps made for
# its next first start: forked, in their namespaces, waiting for a function.
SPARES_AHEAD = 1
# Work ahead waits until no frame came for this long, so that it takes no
# CPU from the start that a frame asked for (on 2 cores, it would).
AHEAD_QUIET_S = 0.002
# A first start's written pages are read this long after it (its INIT and
# first invocation done, most likely), again at most this often, and at
# most so many (16 MiB) are written ahead by each spare.
LEARN_AFTER_S = 0.1
RELEARN_EVERY_S = 30.0
WRITE_AHEAD_MAX_PAGES = 4096


def spare_shape(isolation: dict[str, Any]) -> dict[str, Any]:
    """What of a child's isolation a spare takes before it is assigned: its
    network and pid namespaces and the namespaces it unshares."""
    pid_namespace = bool(isolation.get("pid_namespace"))
    return {"own_network": bool(isolation.get("own_network")), "pid_namespace": pid_namespace,
            "init_path": isolation.get("init_path") if pid_namespace else None,
            "unshare": isolation.get("unshare", 0)}


def _ms_until(when: float, now: float) -> int:
    return max(1, int((when - now) * 1000.0 + 0.999))


class _Dispatch:
    """Decodes control frames for the native loop and reports outcomes.

    While idle it makes namespaces ahead of demand, so that a spawn only
    enters them: network namespaces for environments that ask for one of
    their own (``own_network``), and pid namespaces with their init, once a
    spawn asked for one (``pid_namespace``). Once it forked an environment
    that runs INIT itself (a first start from the zygote tree), it also
    keeps a spare child of the same namespaces, which the next such spawn
    is handed to instead of a fork (see ``_native.take_placement``).
    """

    def __init__(self, ctrl_fd: int, network_namespaces_ahead: int = 0) -> None:
        self.ctrl_fd = ctrl_fd
        self.connected = True
        self.env_by_pid: dict[int, str] = {}
        self.netns_ahead = network_namespaces_ahead
        self.netns_ready: list[int] = []
        self.pidns_ahead = 0
        self.pidns_init_path = ""
        self.pidns_ready: list[tuple[int, int]] = []
        # The namespaces of the last first start (spare_shape), and spares
        # made with them: (pid, this process's end of the spare's fd 3).
        self.spare_isolation: dict[str, Any] | None = None
        self.spares: list[tuple[int, int]] = []
        self.spares_ahead = SPARES_AHEAD  # 0 once one could not be made
        # Pages a first start wrote, which each spare writes ahead
        # (_native.written_pages); the first start to learn them from.
        self.write_ahead: list[tuple[int, int]] = []
        self.learn_from: tuple[int, float] | None = None  # (pid, when)
        self.learned_at = -RELEARN_EVERY_S
        self.quiet_until = 0.0

    def idle(self) -> tuple[list[SpawnRequest], int]:
        """One step of work ahead, once no frame came for AHEAD_QUIET_S: a
        spare child, else learning the pages of a first start, else a
        namespace. Returns the spare's spawn request, if that is the step,
        and how long the loop may wait before the next step (-1: nothing
        more to do)."""
        now = time.monotonic()
        if now < self.quiet_until:
            return [], _ms_until(self.quiet_until, now)
        if self.spare_isolation is not None and len(self.spares) < self.spares_ahead:
            return [self._spare_request(self.spare_isolation)], 0
        if self.learn_from is not None and now >= self.learn_from[1]:
            self._learn_written_pages(self.learn_from[0], now)
            return [], 0
        if self._namespace_ahead():
            return [], 0
        if self.learn_from is not None:
            return [], _ms_until(self.learn_from[1], now)
        return [], -1

    def _learn_written_pages(self, pid: int, now: float) -> None:
        """The pages first start ``pid`` wrote, if it is still running: each
        spare made from now on writes them ahead."""
        self.learn_from = None
        if pid not in self.env_by_pid:
            return
        try:
            self.write_ahead = _native.written_pages(pid, WRITE_AHEAD_MAX_PAGES)
        except OSError:
            return  # it exited meanwhile: the next first start
        self.learned_at = now

    def _namespace_ahead(self) -> bool:
        """Makes one namespace ahead, when one is wanted; whether it did."""
        if len(self.netns_ready) < self.netns_ahead:
            try:
                self.netns_ready.append(_native.prepare_network_namespace())
            except OSError as exc:
                sys.stderr.write(f"zygote {os.getpid()}: cannot prepare a network "
                                 f"namespace ({exc}); children make their own\n")
                self.netns_ahead = 0
            return True
        if len(self.pidns_ready) < self.pidns_ahead:
            try:
                self.pidns_ready.append(_native.prepare_pid_namespace(self.pidns_init_path))
            except OSError as exc:
                sys.stderr.write(f"zygote {os.getpid()}: cannot prepare a pid namespace "
                                 f"({exc}); each spawn makes its own\n")
                self.pidns_ahead = 0
            return True
        return False

    def _with_pid_namespace(self, isolation: dict[str, Any],
                            frame: dict[str, Any]) -> dict[str, Any]:
        """The child's isolation, with a pid namespace made ahead when one is."""
        if not self.pidns_ahead:
            self.pidns_ahead = NAMESPACES_AHEAD
            self.pidns_init_path = isolation["init_path"]
        if not self.pidns_ready or isolation["init_path"] != self.pidns_init_path:
            return isolation
        init_pid, fd = self.pidns_ready.pop()
        frame["_fds"].append(fd)
        return dict(isolation, pid_namespace_ahead=(init_pid, fd))

    def _with_network(self, isolation: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
        """The child's isolation, with a network namespace of its own: one
        made ahead, else one made now, else the child's own unshare."""
        if not self.netns_ready:
            self.netns_ahead = max(self.netns_ahead, 1)
            self._namespace_ahead()
        if not self.netns_ready:
            return dict(isolation, unshare=isolation.get("unshare", 0) | CLONE_NEWNET,
                        loopback_up=True)
        fd = self.netns_ready.pop()
        frame["_fds"].append(fd)  # closed with the request's fds once spawned
        return dict(isolation, netns_fd=fd)

    def _with_namespaces(self, isolation: dict[str, Any],
                         frame: dict[str, Any]) -> dict[str, Any]:
        if isolation.get("own_network"):
            isolation = self._with_network(isolation, frame)
        if isolation.get("pid_namespace"):
            isolation = self._with_pid_namespace(isolation, frame)
        return isolation

    # -- spares ------------------------------------------------------------------
    def _spare_request(self, isolation: dict[str, Any]) -> SpawnRequest:
        """The spawn request of a spare child with ``isolation``'s namespaces."""
        ours, theirs = _native.spare_socketpair()
        tag: dict[str, Any] = {"spare": True, "_fds": [theirs], "_ours": ours,
                               "zygote_pid": os.getpid(), "write_ahead": self.write_ahead}
        isolation = self._with_namespaces(dict(isolation, spare=True), tag)
        tag["parent_pidfd"] = bool(isolation.get("pid_namespace"))
        return (theirs, -1, None, None, [], [], isolation, tag)

    def _use_spare(self, data: bytes, fds: list[int], frame: dict[str, Any]) -> bool:
        """Hands a first start to a spare made for its isolation, if there is
        one; whether it did (else the caller forks as usual)."""
        shape = spare_shape(frame["isolation"])
        if shape != self.spare_isolation:
            self._end_spares()
            self.spare_isolation = shape
            return False
        while self.spares:
            pid, ours = self.spares.pop()
            try:
                _native.assign_spare(ours, data, fds)
            except _native.SpawnError as exc:  # a set-up step failed there
                self.spawned(frame, pid, exc)
                return True
            except OSError:
                continue  # it died before its assignment: the next, or a fork
            self.spawned(frame, pid, None)
            return True
        return False

    def _end_spares(self) -> None:
        """Ends the spares (of an isolation no longer asked for); reaped by the loop."""
        for pid, ours in self.spares:
            os.close(ours)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.spares.clear()

    def send(self, frame: dict[str, Any]) -> None:
        if not self.connected:
            return
        try:
            os.write(self.ctrl_fd, encode(frame))
        except OSError:
            # The dispatcher is gone; the loop sees the hang-up next.
            self.connected = False

    def packet(self, data: bytes, fds: list[int], truncated: bool) -> list[SpawnRequest] | None:
        try:
            if truncated:
                raise ProtocolError("control packet truncated (oversized frame or too many fds)")
            frame = decode_packet(data)
            if frame["t"] != SPAWN:
                raise ProtocolError(f"zygote expected a {SPAWN!r} frame, got {frame['t']!r}")
            if len(fds) < 2:
                raise ProtocolError(f"{SPAWN!r} carries at least 2 fds (channel, log, cgroup "
                                    f"files), got {len(fds)}")
        except ProtocolError as exc:
            for fd in fds:
                os.close(fd)
            sys.stderr.write(f"zygote {os.getpid()}: closing the control channel: {exc}\n")
            return None
        frame["_fds"] = list(fds)
        isolation = frame.get("isolation")
        self.quiet_until = time.monotonic() + AHEAD_QUIET_S
        # Whatever INIT printed must not be printed again by every child.
        sys.stdout.flush()
        sys.stderr.flush()
        if frame.get("environment") and isolation and self._use_spare(data, fds, frame):
            return []
        if isolation:
            isolation = self._with_namespaces(isolation, frame)
        return [(fds[0], fds[1], frame.get("exec"), frame.get("environ"), fds[2:],
                 frame.get("rlimits") or [], isolation, frame)]

    def spawned(self, frame: dict[str, Any], pid: int, error: OSError | None) -> None:
        for fd in frame["_fds"]:
            os.close(fd)
        if frame.get("spare"):
            if error is None:
                self.spares.append((pid, frame["_ours"]))
            else:
                os.close(frame["_ours"])
                sys.stderr.write(f"zygote {os.getpid()}: cannot make a spare child "
                                 f"({error}); first starts fork instead\n")
                self.spares_ahead = 0
            return
        if error is None:
            self.env_by_pid[pid] = frame["env"]
            now = time.monotonic()
            if (frame.get("environment") and self.learn_from is None
                    and now - self.learned_at >= RELEARN_EVERY_S):
                self.learn_from = (pid, now + LEARN_AFTER_S)
            self.send({"t": SPAWNED, "env": frame["env"], "pid": pid})
            return
        self.send({"t": SPAWN_FAILED, "env": frame["env"], "errno": error.errno or 0,
                   "stage": getattr(error, "stage", "fork"), "message": str(error)})

    def exited(self, pid: int, status: int, maxrss_kb: int, utime: float, stime: float) -> None:
        spare = next((s for s in self.spares if s[0] == pid), None)
        if spare is not None:  # died before it was assigned: nothing to report
            self.spares.remove(spare)
            os.close(spare[1])
            return
        self.send({"t": EXITED, "pid": pid, "env": self.env_by_pid.pop(pid, None),
                   "status": status, "maxrss_kb": maxrss_kb, "utime": utime, "stime": stime})


def _become_environment(frame: dict[str, Any], handler: Handler, init_ms: float) -> None:
    """Runs in a snapshot child: it is now an execution environment."""
    gc.enable()
    os.environ.update(frame.get("environ") or {})
    line_buffered_stdio()
    channel = Channel(FdStream(_native.CHANNEL_FD))
    serve_invocations(channel, handler, None, init_ms)
    exit_environment(0)


# The most modules a zygote reports as imported by INIT (the zygote tree
# preloads them for the function's next zygote).
IMPORTS_REPORTED_MAX = 64


def imported_since(before: set[str], task_root: str) -> list[str]:
    """Top-level packages imported since ``before`` was taken, but not the
    function's own code nor private ones: what a tree node may hold for this
    function's next zygote."""
    found = set()
    for name in set(sys.modules) - before:
        top = name.partition(".")[0]
        if top.startswith("_") or top in found:
            continue
        path = getattr(sys.modules.get(top), "__file__", None) or ""
        if task_root and path.startswith(task_root + os.sep):
            continue
        found.add(top)
    return sorted(found)[:IMPORTS_REPORTED_MAX]


def preload(modules: list[str]) -> None:
    """Imports what the base zygote holds for every function zygote it forks."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing package is the functions' problem
            sys.stderr.write(f"zygote {os.getpid()}: cannot preload {name}: {exc}\n")


def _become_node(frame: dict[str, Any]) -> None:
    """Runs in a child of the base zygote (or of another node): a node of the
    zygote tree, which imports more packages and forks function zygotes and
    first environments, as the base does."""
    gc.enable()
    preload(list(frame["node"]))
    serve_function(_native.CHANNEL_FD, mode="launcher", netns_ahead=False)


def _take_function_environ(frame: dict[str, Any]) -> None:
    """A child of the base zygote (or a node) takes the function's
    environment as a fresh interpreter would."""
    environ = frame.get("environ") or {}
    os.environ.clear()
    os.environ.update(environ)
    # What the interpreter did with PYTHONPATH at start-up, after the script's
    # directory (here: none, as for ``python -c``).
    extra = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[1:1] = [p for p in extra if p not in sys.path]
    gc.enable()


def _become_fresh_environment(frame: dict[str, Any]) -> None:
    """Runs in a child of the base zygote (or a node), isolated already: an
    execution environment that runs INIT itself, as a cold one does."""
    _take_function_environ(frame)
    init_and_serve()


def _serve_as_spare(tag: dict[str, Any]) -> None:
    """Runs in a spare child of the base or a node (in its namespaces, still
    privileged, running nothing but this): waits for the SPAWN frame of a
    first start and its fds, takes that environment's placement and
    isolation, and becomes it. A failure before the set-up proper is
    reported, as the set-up's own are, on fd 3 to the zygote."""
    _native.write_ahead(tag["write_ahead"], _native.CHANNEL_FD)
    packet = _native.recv_packet(_native.CHANNEL_FD)
    if packet is None:  # the zygote ended
        exit_environment(0)
    data, fds = packet
    try:
        frame = decode_packet(data)
        _native.take_placement(fds[0], fds[1], fds[2:], frame.get("rlimits") or [],
                               frame.get("isolation"), tag["zygote_pid"],
                               tag["parent_pidfd"])
    except Exception as exc:
        number = getattr(exc, "errno", None) or errno.EPROTO
        os.write(_native.CHANNEL_FD, f"OSError:{number:x}:spare".encode())
        os._exit(255)
    _become_fresh_environment(frame)


def _become_function_zygote(frame: dict[str, Any]) -> None:
    """Runs in a child of the base zygote (or a node), isolated already: the
    function's zygote, which runs INIT and forks environments."""
    _take_function_environ(frame)
    # Without capabilities it makes no namespace ahead: each child makes its own.
    serve_function(_native.CHANNEL_FD, mode="function", netns_ahead=False)


def serve_function(ctrl_fd: int, mode: str, netns_ahead: bool) -> None:
    """INIT (in ``function`` mode), HELLO, then the fork-server loop. Does not
    return: the zygote exits when the dispatcher hangs up, and a child it
    forks continues as what its spawn asked for (an environment; from a
    launcher also a function zygote or a tree node)."""
    line_buffered_stdio()
    handler: Handler | None = None
    init_error: dict[str, Any] | None = None
    init_ms = 0.0
    hello: dict[str, Any] = {}
    if mode == "function":
        before = set(sys.modules)
        handler, init_error, init_ms = initialize()
        hello["imports"] = imported_since(before, os.environ.get("LAMBDA_TASK_ROOT", ""))
    else:
        hello["modules"] = sorted(sys.modules)
    threads = thread_count()
    dispatch = _Dispatch(ctrl_fd, NAMESPACES_AHEAD if netns_ahead else 0)
    dispatch.send({"t": HELLO, "v": PROTOCOL_VERSION, "pid": os.getpid(), "init_ms": init_ms,
                   "init_error": init_error, "fork_safe": threads == 1, "threads": threads,
                   **hello})
    if init_error is not None or threads != 1:
        # Nothing to fork from; the dispatcher reports the error or starts
        # this function cold instead.
        exit_environment(0)
    # The shared heap stays clean: the collector is off while this process
    # waits, and what exists now is frozen, so a child's collector (on again
    # in the child) never writes to these objects' pages.
    # What every child runs first runs here first, so that children share
    # its quickened code and caches (rehearsal.py).
    rehearse()
    gc.disable()
    gc.freeze()
    frame = _native.serve(ctrl_fd, dispatch)
    if frame is None:
        exit_environment(0)
    if handler is not None:
        _become_environment(frame, handler, init_ms)
    elif frame.get("zygote"):
        _become_function_zygote(frame)
    elif frame.get("node"):
        _become_node(frame)
    elif frame.get("environment"):
        _become_fresh_environment(frame)
    elif frame.get("spare"):
        _serve_as_spare(frame)
    else:
        raise RuntimeError("a launcher zygote never continues as an environment")
    exit_environment(0)


def main() -> None:
    ctrl_fd = int(sys.argv[1])
    mode = sys.argv[2]
    for arg in sys.argv[3:]:
        if arg.startswith("--cgroup-fds="):
            # INIT runs within the function's memory, process and CPU limits.
            for fd in map(int, arg.partition("=")[2].split(",")):
                os.write(fd, b"0")
                os.close(fd)
        elif arg.startswith("--preload="):
            preload([name for name in arg.partition("=")[2].split(",") if name])
    no_network = "--no-network" in sys.argv[3:]
    if no_network:
        # network="none" holds for INIT too; each child gets one of its own.
        _native.enter_network_namespace()
    serve_function(ctrl_fd, mode, netns_ahead=no_network)


if __name__ == "__main__":
    main()
