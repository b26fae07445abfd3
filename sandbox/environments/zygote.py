"""Dispatcher-side handle of a zygote (fork-server) process."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ProtocolError, ServiceException
from ..limits.cgroups import EnvCgroup
from ..limits.userns import admit_child
from ..protocol import (
    HELLO,
    MAX_CONTROL_FRAME,
    MAX_SYNC_FRAME,
    SPAWN,
    Channel,
    check_version,
    decode_packet,
    encode,
)
from .environment import Environment, ExitRecord, Placement, release_placed

log = logging.getLogger("sandbox.environments")

ZYGOTE_ENTRY = "from sandbox.worker.zygote import main; main()"
COLD_ENTRY = "from sandbox.worker.cold import main; main()"


def new_memfd(name: str) -> int:
    """An anonymous file for a process's stdout/stderr, in append mode so the
    dispatcher can empty it while the process keeps writing."""
    import fcntl

    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)
    return fd


def _wait_status(returncode: int) -> int:
    """The raw wait status of a Popen return code (a signal is negative there)."""
    return -returncode if returncode < 0 else returncode << 8


class ZygoteExited(Exception):
    """The zygote process ended before its HELLO: INIT exited or crashed."""

    def __init__(self, wait_status: int | None, output: bytes, out_of_memory: bool) -> None:
        super().__init__(f"zygote ended with wait status {wait_status} during INIT")
        self.output = output
        self.out_of_memory = out_of_memory  # the OOM killer did it (cgroup counter)
        self.wait_status = wait_status  # raw; None when unknown (its base died too)


# A rebuilt zygote that dies sooner than this after its predecessor is a crash loop.
REBUILT_STABLE_S = 60.0


class Rebuilds:
    """What a zygote's death means: the first is logged and the zygote
    rebuilt; one rebuilt that dies within REBUILT_STABLE_S is a crash loop,
    reported to the caller (and the next start tries again).

    Args:
        what: the zygote, in words ("the base zygote").
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._rebuilt_at: float | None = None

    def died(self, zygote: Zygote) -> None:
        """Called once for a zygote that ended on its own.

        Raises:
            ServiceException: it died again soon after it was rebuilt.
        """
        now = time.monotonic()
        if self._rebuilt_at is not None and now - self._rebuilt_at < REBUILT_STABLE_S:
            self._rebuilt_at = None
            raise ServiceException(f"{self.what} died again ({zygote.describe_end()}) "
                                   f"within {REBUILT_STABLE_S:g} s of being rebuilt")
        log.warning("%s died (%s); starting another", self.what, zygote.describe_end())
        self._rebuilt_at = now


class ForkedZygote:
    """The base zygote's record of a function zygote it forked: its host pid
    (from the base's SPAWNED, never from the zygote itself, whose pid
    namespace is its own), its exit, and the cgroup and uid lease it holds
    until then. The supervisor treats it like an environment of the base."""

    def __init__(self, env_id: str, placement: Placement) -> None:
        self.env_id = env_id
        self.pid = 0
        self.placement = placement
        self.exit_record: ExitRecord | None = None
        self._spawned = threading.Event()
        self._exited = threading.Event()
        self._released = False

    def mark_spawned(self, pid: int) -> None:
        self.pid = pid
        self._spawned.set()

    def wait_spawned(self, timeout: float) -> bool:
        return self._spawned.wait(timeout)

    def mark_exited(self, record: ExitRecord) -> None:
        self.exit_record = record
        self._exited.set()
        self._spawned.set()  # no report of the fork will come now (its base died)

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def wait_exit(self, timeout: float) -> ExitRecord | None:
        self._exited.wait(timeout)
        return self.exit_record

    def wait_gone(self, timeout_s: float) -> bool:
        """Whether the process has ended (reaped or not) within ``timeout_s``:
        watched through a pidfd, not the base's report, which the supervisor
        thread (perhaps the caller) delivers."""
        if self.exited:
            return True
        self._spawned.wait(min(timeout_s, 1.0))
        if not self.pid:
            return self.exited
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return True
        try:
            return bool(select.select([fd], [], [], timeout_s)[0]) or self.exited
        finally:
            os.close(fd)

    def kill(self) -> None:
        """SIGKILL, once its pid is known and while it has not been reaped."""
        if self.pid and not self.exited:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def release(self) -> None:
        """Removes its cgroup, then returns its uid (after its exit)."""
        if self._released:
            return
        self._released = True
        release_placed(self.placement.cgroup, self.placement.uid_lease)


class Zygote:
    """A fork-server process: ``function`` mode (snapshot starts, holds one
    function's INIT) or ``launcher`` mode (execs fresh interpreters: cold
    starts; and the base that forks function zygotes, see :meth:`fork`).

    The zygote exits, killing its children, as soon as its control socket
    closes, which is also what happens when this process dies.
    """

    def __init__(self, mode: str, environ: Mapping[str, str], cwd: str,
                 python: str = sys.executable, no_network: bool = False,
                 cgroup: EnvCgroup | None = None, preload: tuple[str, ...] = ()) -> None:
        self.mode = mode
        self.no_network = no_network
        self.preload = preload
        # The parent's record of it, for a zygote forked from another (fork,
        # fork_node) rather than started as a process of its own.
        self.forked: ForkedZygote | None = None
        # A function zygote that ran INIT without capabilities (``fork``): its
        # children ask for their ids (userns.py), and nothing it reports
        # about pids is taken for true.
        self.untrusted = False
        self.ended_by_us = False  # closed by the dispatcher, not dead on its own
        self.parent_pid: int | None = None  # of a zygote forked from another
        self.last_used = time.monotonic()
        # The function's limits for INIT: the zygote joins it before INIT.
        self.cgroup = cgroup
        self.environ = dict(environ)
        self.cwd = cwd
        self.python = python
        self.pid = 0
        self.hello: dict[str, Any] = {}
        self.init_output = b""
        self.alive = False
        # Spawned and not yet known dead (a base's function zygotes, too).
        self.envs: dict[str, Environment | ForkedZygote] = {}
        self._ctrl: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._send_lock = threading.Lock()

    @property
    def ctrl(self) -> socket.socket:
        assert self._ctrl is not None, "zygote not started"
        return self._ctrl

    def start(self, timeout_s: float) -> dict[str, Any]:
        """Boots the process and waits for its HELLO (after INIT in function mode).

        Returns:
            The HELLO frame: ``init_ms``, ``init_error``, ``fork_safe``, ...
        Raises:
            ServiceException: it did not boot, or spoke garbage.
        """
        def launch(channel: int, log_fd: int, procs_fds: list[int]) -> None:
            self._proc = subprocess.Popen(
                [self.python, "-c", ZYGOTE_ENTRY, str(channel), self.mode,
                 *(["--no-network"] if self.no_network else []),
                 *([f"--preload={','.join(self.preload)}"] if self.preload else []),
                 *([f"--cgroup-fds={','.join(map(str, procs_fds))}"] if procs_fds else [])],
                pass_fds=(channel, *procs_fds), stdin=subprocess.DEVNULL,
                stdout=log_fd, stderr=log_fd, env=self.environ, cwd=self.cwd,
                start_new_session=True,
            )

        log_fd = self._launch(self.cgroup, launch, self.remove_cgroup, "cannot start a zygote")
        assert self._proc is not None
        self.pid = self._proc.pid
        return self._await_hello(log_fd, timeout_s)

    @classmethod
    def fork(cls, parent: Zygote, environ: Mapping[str, str], cwd: str,
             placement: Placement, timeout_s: float) -> tuple[Zygote, dict[str, Any]]:
        """A function zygote forked from ``parent`` (the base or a node of the
        zygote tree), which takes ``placement`` (the function's cgroup,
        rlimits and isolation, its own uid) before it runs INIT; waits for
        its HELLO. Its children ask for their ids (:meth:`admit`).

        Returns:
            The zygote and its HELLO frame.
        Raises:
            ServiceException: the parent is gone, or the zygote did not boot.
            ZygoteExited: INIT ended the process.
        """
        zygote = cls("function", environ, cwd, parent.python)
        zygote.untrusted = True
        return zygote, zygote._boot_forked(parent, {"zygote": True, "environ": dict(environ)},
                                           placement, timeout_s)

    @classmethod
    def fork_node(cls, parent: Zygote, modules: list[str],
                  timeout_s: float) -> tuple[Zygote, dict[str, Any]]:
        """A node of the zygote tree forked from ``parent``: it imports
        ``modules`` and forks function zygotes as the base does.

        Raises:
            ServiceException: the parent is gone, or the node did not boot.
            ZygoteExited: an import ended the process.
        """
        zygote = cls("launcher", parent.environ, parent.cwd, parent.python)
        return zygote, zygote._boot_forked(parent, {"node": modules}, Placement(), timeout_s)

    def _boot_forked(self, parent: Zygote, request: dict[str, Any], placement: Placement,
                     timeout_s: float) -> dict[str, Any]:
        tracker = ForkedZygote(f"zygote-{uuid.uuid4().hex}", placement)
        self.forked = tracker
        self.parent_pid = parent.pid
        frame = {"t": SPAWN, "env": tracker.env_id, "exec": None,
                 "rlimits": [list(r) for r in placement.rlimits],
                 "isolation": placement.isolation, **request}

        def launch(channel: int, log_fd: int, procs_fds: list[int]) -> None:
            parent.send_spawn(tracker, frame, [channel, log_fd, *procs_fds])

        log_fd = self._launch(placement.cgroup, launch, tracker.release,
                              f"cannot fork a zygote from {parent.pid}")
        tracker.wait_spawned(timeout_s)
        self.pid = tracker.pid
        return self._await_hello(log_fd, timeout_s)

    def _launch(self, cgroup: EnvCgroup | None,
                launch: Callable[[int, int, list[int]], None],
                undo: Callable[[], None], failure: str) -> int:
        """Starts the zygote's process by ``launch(channel fd, log fd,
        cgroup.procs fds)``: a process of its own, or a fork of another
        zygote. Keeps this end of the control socket; closes the fds handed
        over.

        Returns:
            The log memfd, which _await_hello reads and closes.
        Raises:
            ServiceException: ``failure``, after ``undo`` (launch raised OSError).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log_fd = new_memfd(f"zygote-{self.mode}")
        procs_fds: list[int] = []
        try:
            procs_fds = cgroup.open_procs() if cgroup is not None else []
            launch(theirs.fileno(), log_fd, procs_fds)
        except OSError as exc:
            ours.close()
            os.close(log_fd)
            undo()
            raise ServiceException(f"{failure}: {exc}") from exc
        finally:
            theirs.close()
            for fd in procs_fds:
                os.close(fd)
        self._ctrl = ours
        return log_fd

    def _await_hello(self, log_fd: int, timeout_s: float) -> dict[str, Any]:
        """Reads the HELLO on the control socket; closes ``log_fd``."""
        ours = self.ctrl
        try:
            ours.settimeout(timeout_s)
            try:
                packet = ours.recv(MAX_CONTROL_FRAME + 8)
            except TimeoutError:
                raise ServiceException(
                    f"zygote did not finish INIT within {timeout_s:g} s") from None
            finally:
                ours.settimeout(None)
            if not packet:
                ended, status = self._wait_ended(2.0)
                output = self._read_output(log_fd)
                if not ended:
                    text = output.decode(errors="replace")[-2000:]
                    raise ServiceException(f"zygote closed its control socket: {text}")
                raise ZygoteExited(status, output, self.init_out_of_memory())
            hello = decode_packet(packet)
            if hello["t"] != HELLO:
                raise ProtocolError(f"zygote sent {hello['t']!r} before {HELLO!r}")
            check_version(hello, "zygote")
        except (ServiceException, ProtocolError, ZygoteExited):
            self.close()
            self.release_socket()
            os.close(log_fd)
            raise
        self.init_output = self._read_output(log_fd)
        os.close(log_fd)
        self.hello = hello
        self.alive = not hello.get("init_error") and bool(hello.get("fork_safe"))
        if not self.alive:
            self.close()
            self.release_socket()
        return hello

    def _wait_ended(self, timeout_s: float) -> tuple[bool, int | None]:
        """Whether the process ended within ``timeout_s``, and its raw wait
        status (None when unknown)."""
        if self.forked is not None:
            record = self.forked.wait_exit(timeout_s)
            return record is not None, record.status if record is not None else None
        assert self._proc is not None
        try:
            returncode = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False, None
        return True, _wait_status(returncode)

    @staticmethod
    def _read_output(fd: int) -> bytes:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0) if size else b""
        os.ftruncate(fd, 0)
        return data

    def spawn(self, env_id: str, generation: int, start_kind: str,
              environ: Mapping[str, str] | None, exec_argv: list[str] | None = None,
              placement: Placement | None = None, become: str | None = None) -> Environment:
        """Asks the zygote to fork an environment; does not wait for READY.

        ``environ`` is the whole environment of an exec'd (cold) child, or the
        variables a snapshot child adds to the zygote's own, or (``become``
        "environment": a child of a tree node or the base, which runs INIT
        itself) the whole environment of its INIT. The child joins
        the placement's cgroup and takes its rlimits and isolation steps
        before any function code runs; the environment owns the placement's
        cgroup and uid lease from here on, also when this fails.

        Raises:
            ServiceException: the zygote is gone.
        """
        placement = placement or Placement()
        cgroup = placement.cgroup
        self.last_used = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.untrusted:
            # The child asks for its ids on its channel (admit): the kernel
            # attaches its credentials to the byte it writes.
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        log_fd = new_memfd(f"env-{env_id}")
        frame: dict[str, Any] = {"t": SPAWN, "env": env_id, "exec": exec_argv,
                                 "environ": dict(environ) if environ else None,
                                 "rlimits": [list(r) for r in placement.rlimits],
                                 "isolation": placement.isolation}
        if become is not None:
            frame[become] = True
        env = Environment(env_id, Channel(ours, MAX_SYNC_FRAME), log_fd, self, start_kind,
                          generation, cgroup, placement.uid_lease)
        try:
            # A forked zygote's child cannot write into its cgroup: admit() moves it.
            procs_fds = (cgroup.open_procs() if cgroup is not None and not self.untrusted
                         else [])
        except OSError as exc:
            theirs.close()
            env.close()
            env.mark_exited(ExitRecord(None, spawn_error=f"cannot open its cgroup: {exc}"))
            raise ServiceException(f"cannot place environment {env_id} in its cgroup: "
                                   f"{exc}") from exc
        try:
            self.send_spawn(env, frame, [theirs.fileno(), log_fd, *procs_fds])
        except OSError as exc:
            env.close()
            env.mark_exited(ExitRecord(None, spawn_error=f"spawn request failed: {exc}"))
            raise ServiceException(f"zygote {self.pid} is gone: {exc}") from exc
        finally:
            theirs.close()
            for fd in procs_fds:
                os.close(fd)
        return env

    def send_spawn(self, child: Environment | ForkedZygote, frame: dict[str, Any],
                   fds: list[int]) -> None:
        """Sends a SPAWN frame with its fds; ``child`` hears of the outcome
        (through the supervisor).

        Raises:
            OSError: the zygote is gone (it is marked dead).
        """
        try:
            self.envs[child.env_id] = child
            with self._send_lock:
                socket.send_fds(self.ctrl, [encode(frame)], fds)
        except OSError:
            self.envs.pop(child.env_id, None)
            self.alive = False
            raise

    def admit(self, env: Environment, deadline: float) -> None:
        """For a forked zygote's child: maps its uid into its user namespace
        and moves it into its cgroup when it asks (limits/userns.py); its pid
        is the kernel's word from then on.

        Raises:
            ServiceException: it did not ask, or could not be set up (killed).
        """
        lease = env.uid_lease
        assert lease is not None, "a forked zygote's environment has a uid of its own"
        sock = env.channel.sock
        assert isinstance(sock, socket.socket)
        cgroup = env.cgroup
        pid = admit_child(sock, lease.uid, cgroup.procs_files if cgroup is not None else [],
                          deadline)
        env.mark_spawned(pid)

    def cold_argv(self, undumpable: bool = False) -> list[str]:
        """The command of a cold environment; ``undumpable`` when it shares its
        uid with others (execve makes a process dumpable again)."""
        return [self.python, "-c", COLD_ENTRY, *(["--undumpable"] if undumpable else [])]

    def describe_end(self) -> str:
        """How the process ended, in Lambda's words."""
        if self.forked is not None:
            record = self.forked.exit_record
            return record.describe() if record is not None else "unknown"
        code = self._proc.poll() if self._proc is not None else None
        return "unknown" if code is None else ExitRecord(_wait_status(code)).describe()

    def close(self, grace_s: float = 2.0) -> None:
        """Hangs up; the zygote kills its environments and exits."""
        if self.alive:
            self.ended_by_us = True
        self.alive = False
        if self._ctrl is not None:
            try:
                self._ctrl.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.forked is not None:
            if not self.forked.wait_gone(grace_s):
                self.forked.kill()
                self.forked.wait_gone(grace_s)
            self.forked.release()
            return
        proc = self._proc
        if proc is None:
            return
        deadline = time.monotonic() + grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self.remove_cgroup()

    def init_out_of_memory(self) -> bool:
        """Whether the OOM killer acted in the zygote's cgroup (during INIT)."""
        cgroup = self.forked.placement.cgroup if self.forked is not None else self.cgroup
        return cgroup is not None and cgroup.oom_kills() > 0

    def remove_cgroup(self) -> None:
        if self.forked is not None:
            self.forked.release()
        cgroup, self.cgroup = self.cgroup, None
        if cgroup is not None:
            cgroup.remove()

    def release_socket(self) -> None:
        """Closes the control socket once nothing reads it any more."""
        if self._ctrl is not None:
            self._ctrl.close()
