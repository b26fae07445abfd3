"""The dispatcher's half of a zygote child's user namespace (native/child.pxi,
_child_isolate_in_user_namespace).

A function zygote ran the function's INIT without capabilities, so its
children make a user namespace of their own, which only a privileged process
may map other ids into. Each such child writes one byte on its channel and
waits; the kernel attaches the writer's credentials to the byte, so the pid
read here is the child's true pid in this process's pid namespace, whatever
the zygote reports. The dispatcher then moves the child into its cgroup,
maps its uid and gid (the same number inside and out) and lets it go on.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from ..errors import ServiceException

# struct ucred: pid, uid, gid
_UCRED = struct.Struct("3i")
ASK = b"U"
GO = b"G"


def admit_child(sock: socket.socket, uid: int, procs_files: list[str],
                deadline: float | None = None) -> int:
    """Answers the child waiting on ``sock`` (which has SO_PASSCRED set, since
    before the child could write).

    Args:
        uid: its uid and gid, inside its namespace and on the host.
        procs_files: the ``cgroup.procs`` files of its cgroup.
        deadline: monotonic time by which the child must have asked.
    Returns:
        The child's pid, from the kernel.
    Raises:
        ServiceException: it did not ask in time, asked without credentials,
            or could not be placed or mapped (it is killed then).
    """
    if deadline is not None:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
    try:
        data, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(_UCRED.size))
    except TimeoutError:
        raise ServiceException("a zygote's child did not ask for its user namespace "
                               "in time") from None
    except OSError as exc:
        raise ServiceException(f"a zygote's child failed before its user namespace: "
                               f"{exc}") from exc
    finally:
        if deadline is not None:
            sock.settimeout(None)
    pid = _sender_pid(ancillary)
    if data != ASK or pid is None:
        raise ServiceException(f"a zygote's child sent {data!r} instead of asking for its "
                               "user namespace")
    try:
        for path in procs_files:
            _write(path, str(pid).encode())
        # No setgroups(2) in the namespace: supplementary groups stay empty.
        _write(f"/proc/{pid}/setgroups", b"deny")
        mapping = f"{uid} {uid} 1\n".encode()
        _write(f"/proc/{pid}/uid_map", mapping)
        _write(f"/proc/{pid}/gid_map", mapping)
        sock.sendall(GO)
    except OSError as exc:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        raise ServiceException(f"cannot set up the user namespace of process {pid}: "
                               f"{exc}") from exc
    return pid


def _write(path: str, data: bytes) -> None:
    """One write(2) of ``data`` (these files take a whole value at once);
    without the buffered file object, a start's path is shorter."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return int(_UCRED.unpack(data[:_UCRED.size])[0])
    return None
