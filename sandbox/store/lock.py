"""One Runtime per state dir: an exclusive lock on ``STATE_DIR/runtime.lock``.

Two Runtimes on one state dir would both deliver its stored events and poll
its mappings. The lock is an ``flock`` on a close-on-exec descriptor, so it
goes away with the process that holds it, however that process ends (a
SIGKILLed Runtime's successor can open the state dir at once).
"""

from __future__ import annotations

import fcntl
import os

from ..errors import ResourceConflictException

LOCK_NAME = "runtime.lock"


class StateDirLock:
    """Holds the state dir's lock from construction until ``release()``.

    Raises:
        ResourceConflictException: another Runtime (in this or another
            process) holds it.
    """

    def __init__(self, state_dir: str) -> None:
        path = os.path.join(state_dir, LOCK_NAME)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise ResourceConflictException(
                f"state dir {state_dir} is in use by another Runtime (pid {holder})") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
