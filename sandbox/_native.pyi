"""Type stub of the private native core built from native/_native.pyx."""

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

DEBUG: bool
CHANNEL_FD: int

class SpawnError(OSError):
    """A child set-up step failed between fork and its first instruction."""

    stage: str

class _Dispatch(Protocol):
    def packet(
        self, data: bytes, fds: list[int], truncated: bool
    ) -> list[tuple[int, int, Any, Any, list[int], list[Any], Any, dict[str, Any]]] | None: ...
    def spawned(self, tag: dict[str, Any], pid: int, error: OSError | None) -> None: ...
    def exited(
        self, pid: int, status: int, maxrss_kb: int, utime: float, stime: float
    ) -> None: ...
    def idle(self) -> bool: ...

def spawn(
    chan_fd: int,
    log_fd: int,
    exec_argv: Sequence[str] | None = None,
    exec_env: Mapping[str, str] | None = None,
    cgroup_fds: Sequence[int] = (),
    rlimits: Sequence[Sequence[int | None]] = (),
    isolation: Mapping[str, Any] | None = None,
) -> int: ...
def end_pid_namespace(pid: int) -> bool: ...
def forget_namespace_init(pid: int) -> bool: ...
def seccomp_program(
    deny: Sequence[str],
    deny_ioctl_requests: Sequence[int] = (),
    deny_personality_flags: Sequence[int] = (),
    deny_clone_flags: Sequence[int] = (),
) -> tuple[bytes, list[str]]: ...
def serve(ctrl_fd: int, dispatch: _Dispatch) -> dict[str, Any] | None: ...
def fork_exit_wait(rounds: int) -> list[float]: ...
def enter_network_namespace() -> None: ...
def make_undumpable() -> None: ...
def prepare_network_namespace() -> int: ...
