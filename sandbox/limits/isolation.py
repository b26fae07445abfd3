"""The isolation steps each environment takes before any function code runs,
probed once per host so that nothing is claimed that the host does not do.

Steps (all in native/child.pxi, in this order, once native/pidns.pxi made it
pid 2 of a pid namespace of its own): its own mount, IPC and UTS namespaces
and, with ``network="none"``, a network namespace holding only a loopback
interface; the whole filesystem read-only but for a private tmpfs on
/tmp and /dev/shm, directories others may not enter covered by an empty tmpfs
with what the environment reads bound back, and a /proc that lists only its
own processes; an empty capability bounding set with root's privileges locked
off; a uid and gid of its own, leased from a host-wide range (or one
configured user; uid 0 with no capabilities at all where the interpreter or
code cannot be made readable); no_new_privs; and a seccomp filter that kills
the process with SIGSYS on a denied system call.

A snapshot function's zygote takes the same steps before its INIT (it is a
child of the base zygote, which runs no function code). Having no capability
left, it cannot give its own children namespaces or uids: each child makes a
user namespace of its own for them (``forked_spec``), into which the
dispatcher maps the child's uid. The zygote's filter lets it, and only it:
unshare(2) of a user namespace and of the namespaces an environment gets,
and mount(2) with the flags of its private /tmp.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import stat
import sys
import threading
from typing import Any

from .. import _native
from ..errors import InvalidParameterValueException
from .uids import UidLease, UidRange

log = logging.getLogger("sandbox.limits")

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC = 0x2, 0x4, 0x8, 0x1000, 0x4000
# What a zygote's child mounts in its user namespace: /tmp, /dev/shm, binds.
CHILD_MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_BIND | MS_REC
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
STEPS = ("namespaces", "pid_namespace", "network", "mounts", "capabilities", "uid",
         "no_new_privs", "seccomp", "isolated_init")
# Sysctls that forbid user namespaces to unprivileged processes, and the value that does.
USERNS_SYSCTLS = (("/proc/sys/user/max_user_namespaces", "0"),
                  ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                  ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"))
# pid 1 of each environment's pid namespace (native/init.c, built by setup.py).
INIT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "sandbox-init")


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


def plan_paths(paths: list[str]) -> tuple[list[str], list[str], str | None]:
    """How an environment's mount namespace makes ``paths`` (directories)
    readable by an unprivileged uid.

    Returns:
        (keep, masks, unreadable): directories to bind back at their own
        paths; the directories others may not enter that hide them, to be
        covered by an empty tmpfs; the first path that is not readable by
        others itself (no mount fixes that), or None.
    """
    keep: set[str] = set()
    masks: set[str] = set()
    unreadable = None
    for path in paths:
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            continue
        blocked = readable_by_others(real)
        own_mode = os.stat(real).st_mode
        if own_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
            unreadable = unreadable or real  # a bind keeps its modes
            if real.startswith("/tmp/"):
                keep.add(real)  # for uid 0 without capabilities, its owner
        elif blocked == os.sep:
            unreadable = unreadable or blocked
        elif real.startswith("/tmp/"):
            keep.add(real)  # the private /tmp hides it, whatever its modes
        elif blocked is not None:
            masks.add(blocked)
            keep.add(real)
    return _outermost(keep), _outermost(masks), unreadable


def _outermost(paths: set[str]) -> list[str]:
    """``paths`` without those inside another of them."""
    return sorted(p for p in paths if not any(p.startswith(o + os.sep) for o in paths))


def _per_mount_proc_options() -> bool:
    """Linux 5.8 made each procfs mount an instance with its own options;
    before it, hidepid on a new mount would change the host's /proc too."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


def runtime_paths() -> list[str]:
    """What every environment reads: the interpreter, its libraries, sandbox."""
    import msgpack

    return sorted({sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(__file__)),
                   os.path.dirname(os.path.dirname(msgpack.__file__))})


class Isolation:
    """The isolation this host supports, probed once.

    Args:
        enabled: False turns every step off (an explicit, reported choice).
        user: whom environments run as: None for a uid and gid of their own
            each, leased from ``uid_range`` (base, count); or a user name
            shared by every environment.
    """

    def __init__(self, enabled: bool = True, user: str | None = None,
                 uid_range: tuple[int, int] | None = None) -> None:
        self.reasons: dict[str, str] = {}
        self.seccomp_program = b""
        self.zygote_seccomp_program = b""
        self.enabled = enabled
        self.uids: UidRange | None = None
        self.user = user
        self.uid = self.gid = 65534
        if user is not None:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise InvalidParameterValueException(
                    f"no such user to run environments as: {user!r}") from None
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.proc_hidepid = _per_mount_proc_options()
        if not enabled:
            self.supported = dict.fromkeys(STEPS, False)
            self.reasons = dict.fromkeys(STEPS, "isolation disabled by configuration")
            return
        self.supported = dict.fromkeys(STEPS, True)
        if not os.access(INIT_PATH, os.X_OK):
            self.supported["pid_namespace"] = False
            self.reasons["pid_namespace"] = f"{INIT_PATH} is missing (run make)"
        if os.geteuid() != 0:
            for step in ("namespaces", "pid_namespace", "network", "mounts", "capabilities",
                         "uid"):
                self.supported[step] = False
                self.reasons[step] = "needs root (no user-namespace mode yet)"
        try:
            self.seccomp_program, self.zygote_seccomp_program, unknown = seccomp_programs()
            if unknown:
                self.reasons["seccomp"] = f"unknown here, not filtered: {', '.join(unknown)}"
        except OSError as exc:
            self.supported["seccomp"] = False
            self.reasons["seccomp"] = f"libseccomp: {exc}"
        _, masks, unreadable = plan_paths(runtime_paths())
        if unreadable:
            self.supported["uid"] = False
            self.reasons["uid"] = (f"{unreadable} is not readable by other users: "
                                   "environments keep uid 0 with no capabilities")
        elif user is None and self.supported["uid"]:
            try:
                self.uids = UidRange(*(uid_range or ()))
            except OSError as exc:
                self.supported["uid"] = False
                self.reasons["uid"] = f"cannot lease per-environment uids: {exc}"
        self._probe()
        if masks and self.supported["uid"] and not self.supported["mounts"]:
            self.supported["uid"] = False
            self.reasons["uid"] = (f"{masks[0]} is not open to other users and no mount "
                                   "namespace can cover it: environments keep uid 0")
        self._probe_isolated_init()
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
        mounts = s["mounts"] and s["namespaces"]
        # What the environment reads, which the private /tmp or a directory
        # others may not enter would hide from it.
        needed = [*runtime_paths(), *([code_dir] if code_dir else []), *read_paths]
        keep, masks, unreadable = plan_paths(needed)
        switch = s["uid"] and unreadable is None and (mounts or not masks)
        per_environment = switch and self.uids is not None
        if not (mounts and switch):
            masks = []
        return {
            "keep_paths": [k for k in keep if k.startswith("/tmp/") or masks] if mounts else [],
            "mask_paths": masks,
            "mount_proc": mounts and self.proc_hidepid,
            "unshare": flags,
            "pid_namespace": s["pid_namespace"],
            "init_path": INIT_PATH,
            "private_mounts": mounts,
            "tmp_options": f"size={ephemeral_mb}m,mode=1777",
            "hostname": HOSTNAME if s["namespaces"] else None,
            "loopback_up": bool(flags & CLONE_NEWNET),
            "drop_capabilities": s["capabilities"],
            # Per-environment uids are filled in at each spawn (lease_uid).
            "uid": self.uid if switch and not per_environment else None,
            "gid": self.gid if switch and not per_environment else None,
            "uid_per_environment": per_environment,
            "no_new_privs": s["no_new_privs"],
            # Environments that share a uid must not read each other's memory.
            "undumpable": s["capabilities"] and not per_environment,
            "seccomp": self.seccomp_program if s["seccomp"] else None,
        }

    def zygote_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The isolation of a snapshot function's zygote, for its INIT, from
        its environments' ``spec``: the same, but with the filter that lets
        its children make a user namespace of their own (``forked_spec``).
        Its uid is leased like an environment's (``uid_per_environment``)."""
        return dict(with_network_made_ahead(spec), seccomp=self.zygote_seccomp_program,
                    undumpable=False)

    def forked_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The isolation of an environment forked by a zygote that runs with
        zygote_spec(``spec``): it keeps the zygote's read-only filesystem, pid
        namespace and /proc, and makes in a user namespace of its own the
        rest: mount (a fresh /tmp and /dev/shm, its directories under /tmp
        bound back), IPC, UTS and network namespaces, its uid (leased per
        environment, mapped by the dispatcher), no capability, the filter."""
        flags = spec["unshare"]
        return {
            "user_namespace": True,
            "unshare": flags,
            "private_mounts": True,
            "tmp_only": True,
            "tmp_options": spec["tmp_options"],
            "keep_paths": [p for p in spec["keep_paths"] if p.startswith("/tmp/")],
            "hostname": spec["hostname"],
            "loopback_up": bool(flags & CLONE_NEWNET),
            "drop_capabilities": True,
            "uid": None,
            "gid": None,
            "uid_per_environment": True,
            "no_new_privs": True,
            "seccomp": self.seccomp_program if self.supported["seccomp"] else None,
        }

    def lease_uid(self) -> UidLease:
        """A uid for one environment (for a spec with uid_per_environment).

        Raises:
            ServiceException: the range is exhausted.
        """
        if self.uids is None:
            raise RuntimeError("this host runs environments without per-environment uids")
        return self.uids.lease()

    def close(self) -> None:
        if self.uids is not None:
            self.uids.close()

    def _probe(self) -> None:
        """Runs the full set once in a throwaway child (exec of /bin/true);
        a failing step is switched off, with the child's reason."""
        for _ in range(len(STEPS)):
            spec = self.spec()
            lease = self.lease_uid() if spec["uid_per_environment"] else None
            if lease is not None:
                spec.update(uid=lease.uid, gid=lease.uid)
            ours, theirs = socket.socketpair()
            log_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                pid = _native.spawn(theirs.fileno(), log_fd, ["/bin/true"], {}, (), (), spec)
                os.waitpid(pid, 0)
                _native.end_pid_namespace(pid)
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
                if lease is not None:
                    lease.release()
                _native.close_namespace_fds()

    def _probe_isolated_init(self) -> None:
        """Whether snapshot INIT can run isolated: its zygote's children must
        be able to make user namespaces without privileges, and set up
        their mounts in them. Checked by the sysctls that forbid the first,
        then by one child that does the second (exec of /bin/true)."""
        needs = ("namespaces", "mounts", "capabilities", "uid", "no_new_privs")
        missing = [step for step in needs if not self.supported[step]]
        reason = None
        if missing or self.uids is None:
            reason = ("needs " + ", ".join(missing) if missing
                      else "needs a uid of its own for each environment")
        for path, forbidding in USERNS_SYSCTLS:
            if reason is None and _read_sysctl(path) == forbidding:
                reason = f"{path} is {forbidding}: no user namespaces without privileges"
        if reason is None:
            try:
                self._probe_user_namespace_child()
            except OSError as exc:
                reason = f"a child could not set up a user namespace: {exc}"
        if reason is not None:
            self.supported["isolated_init"] = False
            self.reasons["isolated_init"] = (
                f"{reason}; snapshot INIT runs in its zygote as root with capabilities")

    def _probe_user_namespace_child(self) -> None:
        from .userns import admit_child

        spec = self.forked_spec(self.spec())
        lease = self.lease_uid()
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.settimeout(5.0)
        log_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        result: list[BaseException | int] = []  # the wait status, or what went wrong
        # spawn() waits for the child's set-up, which waits for our answer.
        thread = threading.Thread(target=_spawn_into, args=(
            result, theirs.fileno(), log_fd, dict(spec, uid=lease.uid, gid=lease.uid)))
        thread.start()
        try:
            admit_child(ours, lease.uid, [])
        finally:
            thread.join()
            ours.close()
            theirs.close()
            os.close(log_fd)
            lease.release()
        if isinstance(result[0], BaseException):
            raise result[0]
        if result[0] != 0:
            raise OSError(0, f"the probe child ended with wait status {result[0]:#x}")

    def describe(self) -> dict[str, Any]:
        return {step: {"enforced": self.supported[step], "reason": self.reasons.get(step)}
                for step in STEPS}

    def run_as(self) -> str:
        """Whom environments run as, in words (``sandbox doctor``)."""
        if not self.supported["uid"]:
            return "uid 0 without capabilities" if self.supported["capabilities"] else "uid 0"
        if self.uids is not None:
            return (f"a uid and gid of its own, leased from "
                    f"{self.uids.base}..{self.uids.base + self.uids.count - 1}")
        return f"user {self.user} (uid {self.uid}, gid {self.gid})"


def seccomp_programs() -> tuple[bytes, bytes, list[str]]:
    """The handler's seccomp program, a function zygote's (the handler's, but
    ``unshare`` may make user, mount, IPC, UTS and network namespaces, and
    ``mount`` take only CHILD_MOUNT_FLAGS: what its children need before
    they load the handler's), and the denied names unknown here.

    Raises:
        OSError: libseccomp failed.
    """
    program, unknown = _native.seccomp_program(DENIED_SYSCALLS, [TIOCSTI],
                                                PERSONALITY_FLAGS, CLONE_NAMESPACE_FLAGS)
    zygote_program, _ = _native.seccomp_program(
        [name for name in DENIED_SYSCALLS if name not in ("unshare", "mount")],
        [TIOCSTI], PERSONALITY_FLAGS, CLONE_NAMESPACE_FLAGS,
        unshare_user_namespace_with=CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET,
        mount_only_with=CHILD_MOUNT_FLAGS)
    return program, zygote_program, unknown


def with_network_made_ahead(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` for a child of a privileged zygote (the base, a tree node, or
    a zygote that runs INIT as root): the zygote makes its network namespace
    ahead of time (``own_network``) instead of the child making one."""
    flags = spec["unshare"]
    return dict(spec, unshare=flags & ~CLONE_NEWNET, loopback_up=False,
                own_network=bool(flags & CLONE_NEWNET))


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _spawn_into(result: list[BaseException | int], chan_fd: int, log_fd: int,
                spec: dict[str, Any]) -> None:
    """Spawns /bin/true and waits for it, in the thread that is its parent
    (its parent-death signal follows the thread)."""
    try:
        pid = _native.spawn(chan_fd, log_fd, ["/bin/true"], {}, (), (), spec)
        result.append(os.waitpid(pid, 0)[1])
    except BaseException as exc:  # handed to the probing thread
        result.append(exc)


_STAGE_TO_STEP = {
    "pid_namespace": "pid_namespace", "unshare": "namespaces", "hostname": "namespaces",
    "loopback": "network",
    "mounts": "mounts", "capabilities": "capabilities", "ids": "uid",
    "no_new_privs": "no_new_privs", "seccomp": "seccomp",
}
