"""The isolation steps each environment takes before any function code runs,
probed once per host so that nothing is claimed that the host does not do.

Steps (all in native/child.pxi, in this order): its own mount, IPC and UTS
namespaces and, with ``network="none"``, a network namespace holding only a
loopback interface; the whole filesystem read-only but for a private tmpfs on
/tmp and /dev/shm; an empty capability bounding set with root's privileges
locked off; uid and gid ``nobody`` where the interpreter and code are
readable by it (else uid 0 with no capabilities at all); no_new_privs; and a
seccomp filter that kills the process with SIGSYS on a denied system call.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import stat
import sys
from typing import Any

from .. import _native

log = logging.getLogger("sandbox.limits")

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
HOSTNAME = "sandbox"
TIOCSTI = 0x5412
# personality(2) flags that weaken the process (ASLR off, executable data, ...)
PERSONALITY_FLAGS = (0x0040000, 0x0400000, 0x0100000, 0x0200000, 0x0800000)
# clone(2) flags that make namespaces: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
# NEWUSER, NEWPID, NEWNET, NEWTIME.
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                         0x20000000, 0x40000000, 0x00000080)
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr",
    "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "open_by_handle_at",
    "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm", "lookup_dcookie", "vhangup",
)
STEPS = ("namespaces", "network", "mounts", "capabilities", "uid", "no_new_privs", "seccomp")


def readable_by_others(path: str) -> str | None:
    """None if ``path`` and every directory above it let others read it;
    otherwise the first path that does not (ACLs are not consulted)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        current = os.sep.join(parts[:i]) or os.sep
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return current
        need = stat.S_IXOTH if stat.S_ISDIR(mode) else 0
        if current == path:
            need |= stat.S_IROTH
        if mode & need != need:
            return current
    return None


def runtime_paths() -> list[str]:
    """What every environment reads: the interpreter, its libraries, sandbox."""
    import msgpack

    return sorted({sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(__file__)),
                   os.path.dirname(os.path.dirname(msgpack.__file__))})


class Isolation:
    """The isolation this host supports, probed once.

    Args:
        enabled: False turns every step off (an explicit, reported choice).
        uid, gid: whom environments run as; default ``nobody``.
    """

    def __init__(self, enabled: bool = True, user: str = "nobody") -> None:
        self.reasons: dict[str, str] = {}
        self.seccomp_program = b""
        self.enabled = enabled
        try:
            entry = pwd.getpwnam(user)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        except KeyError:
            self.uid = self.gid = 65534
        if not enabled:
            self.supported = dict.fromkeys(STEPS, False)
            self.reasons = dict.fromkeys(STEPS, "isolation disabled by configuration")
            return
        self.supported = dict.fromkeys(STEPS, True)
        if os.geteuid() != 0:
            for step in ("namespaces", "network", "mounts", "capabilities", "uid"):
                self.supported[step] = False
                self.reasons[step] = "needs root (no user-namespace mode yet)"
        try:
            program, unknown = _native.seccomp_program(DENIED_SYSCALLS, [TIOCSTI],
                                                        PERSONALITY_FLAGS, CLONE_NAMESPACE_FLAGS)
            self.seccomp_program = program
            if unknown:
                self.reasons["seccomp"] = f"unknown here, not filtered: {', '.join(unknown)}"
        except OSError as exc:
            self.supported["seccomp"] = False
            self.reasons["seccomp"] = f"libseccomp: {exc}"
        self.unreadable_runtime = next(
            (p for p in map(readable_by_others, runtime_paths()) if p), None)
        if self.unreadable_runtime:
            self.supported["uid"] = False
            self.reasons["uid"] = (f"{self.unreadable_runtime} is not readable by uid "
                                   f"{self.uid}: environments keep uid 0 with no capabilities")
        self._probe()
        missing = [f"{s} ({self.reasons.get(s, 'unsupported')})"
                   for s in STEPS if not self.supported[s]]
        if missing:
            log.warning("isolation steps this host does not enforce: %s", "; ".join(missing))

    def spec(self, network: str = "none", code_dir: str | None = None,
             ephemeral_mb: int = 512, read_paths: tuple[str, ...] = ()) -> dict[str, Any]:
        """The ``isolation`` mapping for one environment's spawn.

        ``read_paths``: more directories the function reads (its PYTHONPATH).
        """
        s = self.supported
        flags = 0
        if s["namespaces"]:
            flags |= CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
        if s["network"] and network == "none":
            flags |= CLONE_NEWNET
        switch = s["uid"] and (code_dir is None or readable_by_others(code_dir) is None)
        # What the environment reads and the private /tmp would hide.
        needed = [*runtime_paths(), *([code_dir] if code_dir else []), *read_paths]
        keep = sorted({os.path.realpath(p) for p in needed
                       if os.path.realpath(p).startswith("/tmp/") and os.path.isdir(p)})
        return {
            "keep_paths": keep,
            "unshare": flags,
            "private_mounts": s["mounts"] and s["namespaces"],
            "tmp_options": f"size={ephemeral_mb}m,mode=1777",
            "hostname": HOSTNAME if s["namespaces"] else None,
            "loopback_up": bool(flags & CLONE_NEWNET),
            "drop_capabilities": s["capabilities"],
            "uid": self.uid if switch else None,
            "gid": self.gid if switch else None,
            "no_new_privs": s["no_new_privs"],
            "seccomp": self.seccomp_program if s["seccomp"] else None,
        }

    def _probe(self) -> None:
        """Runs the full set once in a throwaway child (exec of /bin/true);
        a failing step is switched off, with the child's reason."""
        for _ in range(len(STEPS)):
            spec = self.spec()
            ours, theirs = socket.socketpair()
            log_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                pid = _native.spawn(theirs.fileno(), log_fd, ["/bin/true"], {}, (), (), spec)
                os.waitpid(pid, 0)
                return
            except _native.SpawnError as exc:
                step = _STAGE_TO_STEP.get(exc.stage)
                if step is None or not self.supported.get(step):
                    raise
                self.supported[step] = False
                self.reasons[step] = f"child set-up stage '{exc.stage}' failed: {exc.strerror}"
            finally:
                ours.close()
                theirs.close()
                os.close(log_fd)

    def describe(self) -> dict[str, Any]:
        return {step: {"enforced": self.supported[step], "reason": self.reasons.get(step)}
                for step in STEPS}


_STAGE_TO_STEP = {
    "unshare": "namespaces", "hostname": "namespaces", "loopback": "network",
    "mounts": "mounts", "capabilities": "capabilities", "ids": "uid",
    "no_new_privs": "no_new_privs", "seccomp": "seccomp",
}
