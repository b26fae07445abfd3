"""One live execution environment as the dispatcher sees it."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..limits.cgroups import EnvCgroup
from ..limits.uids import UidLease, end_processes_of
from ..protocol import Channel

# Output beyond this per invocation is dropped from the front (the tail is kept).
LOG_CAPTURE_MAX = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ExitRecord:
    """How an environment process ended, as its zygote reaped it."""

    status: int | None  # raw wait status; None when unknown (its zygote died)
    maxrss_kb: int = 0
    utime_s: float = 0.0
    stime_s: float = 0.0
    spawn_error: str | None = None  # a child set-up step failed before Python ran

    def describe(self) -> str:
        """Lambda's wording: 'exit status 1', 'signal: segmentation fault'."""
        if self.spawn_error is not None:
            return self.spawn_error
        if self.status is None:
            return "its zygote died"
        if os.WIFSIGNALED(self.status):
            number = os.WTERMSIG(self.status)
            name = signal.strsignal(number) or f"signal {number}"
            return f"signal: {name.lower()}"
        if os.WIFEXITED(self.status):
            return f"exit status {os.WEXITSTATUS(self.status)}"
        return f"wait status {self.status:#x}"


def release_placed(cgroup: EnvCgroup | None, lease: UidLease | None) -> None:
    """Once a process placed with ``cgroup`` and ``lease`` has exited: ends
    what is left of its descendants (by the cgroup; without one, by its uid,
    which is its own), removes the cgroup, then returns the uid, so that no
    process of it can meet the next holder of the uid."""
    if cgroup is not None:
        cgroup.remove()
    elif lease is not None:
        end_processes_of(lease.uid)
    if lease is not None:
        lease.release()


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a new environment runs: the cgroup it joins and the rlimits and
    isolation steps it takes before any function code, and the uid lease it
    holds until its last process is gone."""

    cgroup: EnvCgroup | None = None
    rlimits: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    isolation: Mapping[str, Any] | None = None
    uid_lease: UidLease | None = None


class EnvironmentLost(Exception):
    """The environment's channel broke or it exited while in use."""


class Environment:
    """A process running invocations one at a time, reached through ``channel``.

    Its stdout and stderr are ``log_fd``, a memfd shared with the process, which
    :meth:`take_output` drains after each invocation.
    """

    __slots__ = (
        "env_id", "pid", "channel", "log_fd", "zygote", "start_kind", "init_ms",
        "restore_ms", "generation", "last_used", "invocations", "exit_record", "_exited",
        "_closed", "cgroup", "uid_lease", "_cleanup_lock", "cpu_s", "_spawned",
    )

    def __init__(self, env_id: str, channel: Channel, log_fd: int, zygote: Any,
                 start_kind: str, generation: int, cgroup: EnvCgroup | None = None,
                 uid_lease: UidLease | None = None) -> None:
        self.env_id = env_id
        self.pid = 0  # as its zygote reported it: never what the process says
        self._spawned = threading.Event()
        self.channel = channel
        self.log_fd = log_fd
        self.zygote = zygote
        self.start_kind = start_kind
        self.init_ms: float | None = None
        self.restore_ms: float | None = None
        self.generation = generation
        self.last_used = time.monotonic()
        self.invocations = 0
        self.exit_record: ExitRecord | None = None
        self._exited = threading.Event()
        self._closed = False
        self.cgroup = cgroup
        self.uid_lease = uid_lease
        self._cleanup_lock = threading.Lock()
        self.cpu_s = 0.0  # CPU time the process has used, as of its last RESULT

    # -- called by the supervisor thread --------------------------------
    def mark_spawned(self, pid: int) -> None:
        self.pid = pid
        self._spawned.set()

    def mark_exited(self, record: ExitRecord) -> None:
        self.exit_record = record
        self._exited.set()
        # A descendant may still hold the environment's end of the channel: an
        # invocation waiting on it must wake now, not at its deadline. Frames
        # already received stay readable.
        sock = self.channel.sock
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already
        self._cleanup()

    # -- called by invoking threads ---------------------------------------
    def wait_spawned(self, timeout: float) -> bool:
        """Whether the zygote's report of the fork (with the pid) has come."""
        return self._spawned.wait(timeout)

    def wait_exit(self, timeout: float) -> ExitRecord | None:
        self._exited.wait(timeout)
        return self.exit_record

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def take_output(self) -> bytes:
        """Everything the process wrote since the last call, then empties the memfd."""
        size = os.fstat(self.log_fd).st_size
        if not size:
            return b""
        if size > LOG_CAPTURE_MAX:
            dropped = size - LOG_CAPTURE_MAX
            data = (f"[sandbox: {dropped} bytes of output dropped]\n".encode()
                    + os.pread(self.log_fd, LOG_CAPTURE_MAX, dropped))
        else:
            data = os.pread(self.log_fd, size, 0)
        os.ftruncate(self.log_fd, 0)
        return data

    def signal_group(self, signum: int) -> None:
        """Signals the environment's process group (it leads its own session)."""
        if self.pid and not self.exited:
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """Kills the whole environment and drops the dispatcher's ends."""
        self.kill_all()
        self.close()

    def close(self) -> None:
        """Drops the dispatcher's ends of the channel and log (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.channel.close()
        os.close(self.log_fd)
        self._cleanup()

    def _cleanup(self) -> None:
        """Removes the cgroup once the process has exited and the dispatcher is
        done reading its counters (whichever of the two comes last does it),
        then returns its uid: no process of it can remain to meet the next
        environment that gets the uid."""
        with self._cleanup_lock:
            if not (self._closed and self._exited.is_set()):
                return
            cgroup, lease = self.cgroup, self.uid_lease
            self.cgroup = self.uid_lease = None
        release_placed(cgroup, lease)

    def kill_all(self) -> None:
        """Kills the whole environment: its cgroup (descendants that left the
        session too) and its process group."""
        cgroup = self.cgroup
        if cgroup is not None:
            cgroup.kill()
        self.signal_group(signal.SIGKILL)
