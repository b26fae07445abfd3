"""A uid of its own for each execution environment, leased from a host-wide range.

With its own uid an environment cannot signal, ptrace or read /proc of any
other process (no capability, no matching uid), and RLIMIT_NPROC counts its
processes alone. Leases are open-file-description locks (F_OFD_SETLK) on one
byte per uid of a lock file, so every Runtime on the host, in this process or
another, sees the others' leases, and a crashed Runtime's leases vanish with
its descriptors.
"""

from __future__ import annotations

import fcntl
import os
import random
import struct
import threading

from ..errors import ServiceException

# Above the ranges container tools hand out (subuid ranges start at 100000;
# systemd-nspawn's dynamic ranges end at 1879048191) and below 2**31, which
# some tools still read as a signed number.
DEFAULT_UID_BASE = 1_900_000_000
DEFAULT_UID_COUNT = 65_536
LOCK_FILE = "/run/sandbox/uid-leases"

_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)


def _flock(lock_type: int, offset: int) -> bytes:
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)
    return struct.pack("@hhqqi4x", lock_type, os.SEEK_SET, offset, 1, 0)


def end_processes_of(uid: int, rounds: int = 50) -> bool:
    """SIGKILLs every process whose real uid is ``uid``, until none is left
    (one that forks between the scan and the kill is found by the next
    round). For an environment without a cgroup, whose uid is its own: its
    descendants, even those that left its session and pid namespace.

    Returns:
        Whether none is left.
    """
    for _ in range(rounds):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                # Not the owner of /proc/PID: an undumpable process's is root.
                with open(f"/proc/{entry}/status", "rb") as status:
                    uids = next(line for line in status if line.startswith(b"Uid:"))
                if int(uids.split()[1]) != uid:
                    continue
                os.kill(int(entry), 9)
                found = True
            except (OSError, StopIteration):
                continue  # gone meanwhile
        if not found:
            return True
    return False


class UidLease:
    """One uid, held until :meth:`release`."""

    __slots__ = ("uid", "_range", "_released")

    def __init__(self, uid: int, owner: UidRange) -> None:
        self.uid = uid
        self._range = owner
        self._released = False

    def release(self) -> None:
        """Returns the uid to the range (idempotent). Call it only once no
        process of the environment can remain."""
        if not self._released:
            self._released = True
            self._range._release(self.uid)


class UidRange:
    """``count`` uids from ``base``, leased one per environment.

    Raises:
        OSError: the lock file cannot be created (not root, no /run).
    """

    def __init__(self, base: int = DEFAULT_UID_BASE, count: int = DEFAULT_UID_COUNT,
                 lock_file: str = LOCK_FILE) -> None:
        if base < 1 or count < 1 or base + count > 2**32 - 1:
            raise ValueError(f"uid range must lie within 1..2**32-2, got {base}+{count}")
        self.base = base
        self.count = count
        os.makedirs(os.path.dirname(lock_file), mode=0o700, exist_ok=True)
        self._fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held: set[int] = set()
        self._lock = threading.Lock()

    def lease(self) -> UidLease:
        """A uid no other environment on this host holds.

        Raises:
            ServiceException: every uid of the range is leased.
        """
        start = random.randrange(self.count)
        with self._lock:
            for i in range(self.count):
                offset = (start + i) % self.count
                # OFD locks never conflict with their own description: the set
                # keeps this Runtime's own leases apart.
                if offset in self._held:
                    continue
                try:
                    fcntl.fcntl(self._fd, _F_OFD_SETLK, _flock(fcntl.F_WRLCK, offset))
                except OSError:
                    continue
                self._held.add(offset)
                return UidLease(self.base + offset, self)
        raise ServiceException(
            f"all {self.count} uids from {self.base} are leased to environments")

    def _release(self, uid: int) -> None:
        offset = uid - self.base
        with self._lock:
            if offset in self._held and self._fd >= 0:
                fcntl.fcntl(self._fd, _F_OFD_SETLK, _flock(fcntl.F_UNLCK, offset))
            self._held.discard(offset)

    @property
    def leased(self) -> int:
        return len(self._held)

    def close(self) -> None:
        """Drops every lease of this range at once."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._held.clear()
