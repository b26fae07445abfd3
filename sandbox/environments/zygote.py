"""Dispatcher-side handle of a zygote (fork-server) process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..errors import ProtocolError, ServiceException
from ..limits.cgroups import EnvCgroup
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
from .environment import Environment, ExitRecord, Placement

ZYGOTE_ENTRY = "from sandbox.worker.zygote import main; main()"
COLD_ENTRY = "from sandbox.worker.cold import main; main()"


def new_memfd(name: str) -> int:
    """An anonymous file for a process's stdout/stderr, in append mode so the
    dispatcher can empty it while the process keeps writing."""
    import fcntl

    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)
    return fd


class ZygoteExited(Exception):
    """The zygote process ended before its HELLO: INIT exited or crashed."""

    def __init__(self, returncode: int, output: bytes, out_of_memory: bool) -> None:
        super().__init__(f"zygote exited with return code {returncode} during INIT")
        self.output = output
        self.out_of_memory = out_of_memory  # the OOM killer did it (cgroup counter)
        # As a raw wait status (Popen reports a signal as a negative code).
        self.wait_status = -returncode if returncode < 0 else returncode << 8


class Zygote:
    """A fork-server process: ``function`` mode (snapshot starts, holds one
    function's INIT) or ``launcher`` mode (execs fresh interpreters: cold starts).

    The zygote exits, killing its children, as soon as its control socket
    closes, which is also what happens when this process dies.
    """

    def __init__(self, mode: str, environ: Mapping[str, str], cwd: str,
                 python: str = sys.executable, no_network: bool = False,
                 cgroup: EnvCgroup | None = None) -> None:
        self.mode = mode
        self.no_network = no_network
        # The function's limits for INIT: the zygote joins it before INIT.
        self.cgroup = cgroup
        self.environ = dict(environ)
        self.cwd = cwd
        self.python = python
        self.pid = 0
        self.hello: dict[str, Any] = {}
        self.init_output = b""
        self.alive = False
        self.envs: dict[str, Environment] = {}  # spawned and not yet known dead
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
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log_fd = new_memfd(f"zygote-{self.mode}")
        procs_fds: list[int] = []
        try:
            procs_fds = self.cgroup.open_procs() if self.cgroup is not None else []
            self._proc = subprocess.Popen(
                [self.python, "-c", ZYGOTE_ENTRY, str(theirs.fileno()), self.mode,
                 *(["--no-network"] if self.no_network else []),
                 *([f"--cgroup-fds={','.join(map(str, procs_fds))}"] if procs_fds else [])],
                pass_fds=(theirs.fileno(), *procs_fds), stdin=subprocess.DEVNULL,
                stdout=log_fd, stderr=log_fd, env=self.environ, cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            os.close(log_fd)
            self.remove_cgroup()
            raise ServiceException(f"cannot start a zygote: {exc}") from exc
        finally:
            theirs.close()
            for fd in procs_fds:
                os.close(fd)
        self._ctrl = ours
        self.pid = self._proc.pid
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
                assert self._proc is not None
                try:
                    returncode = self._proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    returncode = None
                output = self._read_output(log_fd)
                if returncode is None:
                    text = output.decode(errors="replace")[-2000:]
                    raise ServiceException(f"zygote closed its control socket: {text}")
                raise ZygoteExited(returncode, output, self.init_out_of_memory())
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

    @staticmethod
    def _read_output(fd: int) -> bytes:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0) if size else b""
        os.ftruncate(fd, 0)
        return data

    def spawn(self, env_id: str, generation: int, start_kind: str,
              environ: Mapping[str, str] | None, exec_argv: list[str] | None = None,
              placement: Placement | None = None) -> Environment:
        """Asks the zygote to fork an environment; does not wait for READY.

        ``environ`` is the whole environment of an exec'd (cold) child, or the
        variables a snapshot child adds to the zygote's own. The child joins
        the placement's cgroup and takes its rlimits and isolation steps
        before any function code runs; the environment owns the placement's
        cgroup and uid lease from here on, also when this fails.

        Raises:
            ServiceException: the zygote is gone.
        """
        placement = placement or Placement()
        cgroup = placement.cgroup
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_fd = new_memfd(f"env-{env_id}")
        frame = {"t": SPAWN, "env": env_id, "exec": exec_argv,
                 "environ": dict(environ) if environ else None,
                 "rlimits": [list(r) for r in placement.rlimits],
                 "isolation": placement.isolation}
        env = Environment(env_id, Channel(ours, MAX_SYNC_FRAME), log_fd, self, start_kind,
                          generation, cgroup, placement.uid_lease)
        try:
            procs_fds = cgroup.open_procs() if cgroup is not None else []
        except OSError as exc:
            theirs.close()
            env.close()
            env.mark_exited(ExitRecord(None, spawn_error=f"cannot open its cgroup: {exc}"))
            raise ServiceException(f"cannot place environment {env_id} in its cgroup: "
                                   f"{exc}") from exc
        try:
            self.envs[env_id] = env
            with self._send_lock:
                socket.send_fds(self.ctrl, [encode(frame)],
                                [theirs.fileno(), log_fd, *procs_fds])
        except OSError as exc:
            self.envs.pop(env_id, None)
            env.close()
            env.mark_exited(ExitRecord(None, spawn_error=f"spawn request failed: {exc}"))
            self.alive = False
            raise ServiceException(f"zygote {self.pid} is gone: {exc}") from exc
        finally:
            theirs.close()
            for fd in procs_fds:
                os.close(fd)
        return env

    def cold_argv(self, undumpable: bool = False) -> list[str]:
        """The command of a cold environment; ``undumpable`` when it shares its
        uid with others (execve makes a process dumpable again)."""
        return [self.python, "-c", COLD_ENTRY, *(["--undumpable"] if undumpable else [])]

    def close(self, grace_s: float = 2.0) -> None:
        """Hangs up; the zygote kills its environments and exits."""
        self.alive = False
        if self._ctrl is not None:
            try:
                self._ctrl.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
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
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def remove_cgroup(self) -> None:
        cgroup, self.cgroup = self.cgroup, None
        if cgroup is not None:
            cgroup.remove()

    def release_socket(self) -> None:
        """Closes the control socket once nothing reads it any more."""
        if self._ctrl is not None:
            self._ctrl.close()
