"""Cgroups: one per execution environment, on cgroup v2 or v1.

Detection reads the kernel's mount table (/proc/self/mountinfo), so the
filesystem type decides, never a guess from paths. Both backends put an
environment's cgroups under one directory per Runtime::

    <parent>/sandbox/rt-<pid>-<start time>/env-<id>

where <parent> is the runtime's own cgroup in each hierarchy (on v2, its
parent: a v2 cgroup holding processes cannot have controller-enabled
children). A Runtime whose process is gone leaves a stale ``rt-*`` directory;
the next Runtime on the host sweeps it. The child writes itself into the
``cgroup.procs`` files the dispatcher opened for it, before any function code
runs (see native/child.pxi).

Every path is relative to roots given to the constructors, so the tests run
both backends' file-level logic against directory trees that mirror cgroupfs.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

CGROUP_V2 = "cgroup2"
CGROUP_V1 = "cgroup"
V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")
REQUIRED = ("memory", "pids")
# CFS period; quota = period * vCPUs.
CPU_PERIOD_US = 100_000
TOP = "sandbox"

log = logging.getLogger("sandbox.limits")


class CgroupError(OSError):
    """A cgroup could not be created, configured or removed."""


@dataclasses.dataclass(frozen=True)
class Mount:
    fstype: str  # "cgroup2" or "cgroup"
    mountpoint: str
    root: str  # the mount's root inside the hierarchy ("/" unless bind-mounted)
    controllers: tuple[str, ...]


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup mounts in a /proc/<pid>/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in (CGROUP_V2, CGROUP_V1):
            continue
        controllers: tuple[str, ...] = ()
        if tail[0] == CGROUP_V1:
            known = set(V1_CONTROLLERS) | {"cpuacct", "cpuset", "blkio", "devices", "hugetlb",
                                            "net_cls", "net_prio", "perf_event", "rdma", "misc"}
            controllers = tuple(o for o in tail[2].split(",") if o in known)
        mounts.append(Mount(tail[0], _unescape(fields[4]), _unescape(fields[3]), controllers))
    return mounts


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Maps controller (or "" for v2) to this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if not names:
            paths[""] = path
        for name in names.split(","):
            if name:
                paths[name] = path
    return paths


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _try_write(path: str, value: str) -> bool:
    try:
        _write(path, value)
        return True
    except OSError:
        return False


_runtime_seq = itertools.count(1)


def _keyed_counter(path: str, name: str) -> int:
    """The value of ``name`` in a file of "key value" lines (0 when absent)."""
    try:
        text = _read(path)
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


def runtime_dir_name(pid: int | None = None) -> str:
    """``rt-<pid>-<start time>-<n>``: unique per Runtime, even across pid reuse
    and with several Runtimes in one process."""
    pid = os.getpid() if pid is None else pid
    return f"rt-{pid}-{_start_time(pid)}-{next(_runtime_seq)}"


def _start_time(pid: int) -> str:
    try:
        stat = _read(f"/proc/{pid}/stat")
    except OSError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[19]


def _runtime_alive(name: str) -> bool:
    parts = name.split("-")
    if len(parts) not in (3, 4) or not parts[1].isdigit():
        return False
    return _start_time(int(parts[1])) == parts[2]


def _kill_pids(procs_file: str) -> int:
    killed = 0
    try:
        pids = [int(p) for p in _read(procs_file).split()]
    except OSError:
        return 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def _rmdir(path: str, timeout_s: float = 1.0) -> bool:
    """rmdir, retried while the last processes are still exiting (EBUSY)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            time.sleep(0.002)


@dataclasses.dataclass
class Limits:
    """What one environment's cgroup enforces."""

    memory_bytes: int
    pids_max: int
    cpu_vcpus: float | None  # None: no CPU quota


class EnvCgroup:
    """One environment's cgroup (one directory per hierarchy on v1)."""

    def __init__(self, backend: CgroupBackend, dirs: dict[str, str]) -> None:
        self.backend = backend
        self.dirs = dirs  # controller (or "" on v2) -> directory
        self._peak_fd = -1
        self.removed = False

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the child writes itself into."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    def open_procs(self) -> list[int]:
        """Opened for writing by the dispatcher, passed to the child."""
        fds: list[int] = []
        try:
            for path in self.procs_files:
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def oom_kills(self) -> int:
        return self.backend.oom_kills(self)

    def peak_bytes(self) -> int | None:
        """Peak memory charged to the environment, in bytes (None: unknown).

        Read on every invocation, so the file stays open (a pread is ~1 us).
        """
        if self._peak_fd < 0:
            path = self.backend.peak_file(self)
            if path is None:
                return None
            try:
                self._peak_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        try:
            return int(os.pread(self._peak_fd, 32, 0))
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL to every process in the cgroup, descendants that left the
        session included."""
        self.backend.kill(self)

    def remove(self) -> bool:
        """Kills what is left and removes the directories; True when all went."""
        if self._peak_fd >= 0:
            os.close(self._peak_fd)
            self._peak_fd = -1
        self.kill()
        self.removed = all(_rmdir(d) for d in reversed(list(self.dirs.values())))
        return self.removed


class CgroupBackend:
    """Shared shape of the v1 and v2 backends."""

    version = 0

    def __init__(self, parents: dict[str, str]) -> None:
        # controller (or "" on v2) -> the directory under which rt-* dirs live
        self.parents = parents
        name = runtime_dir_name()
        self.runtime_dirs = {key: os.path.join(p, name) for key, p in parents.items()}
        # Whether environments' CPU can be limited: on v1, where a cpu
        # hierarchy is mounted; on v2, where setup could enable the controller.
        self.cpu_quota = "cpu" in parents

    def setup(self) -> int:
        """Creates this Runtime's directory; sweeps stale ones. Returns the
        number of stale runtime directories removed."""
        swept = self.sweep_stale()
        for key, path in self.runtime_dirs.items():
            os.makedirs(path, exist_ok=True)
            self._prepare_runtime_dir(key, path)
        return swept

    def _prepare_runtime_dir(self, key: str, path: str) -> None:
        pass

    def sweep_stale(self) -> int:
        """Removes rt-* directories whose Runtime process is gone."""
        swept = 0
        for key, parent in self.parents.items():
            try:
                names = os.listdir(parent)
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(parent, name)
                if not name.startswith("rt-") or _runtime_alive(name):
                    continue
                for env_dir in self._children(path):
                    self._kill_dir(key, env_dir)
                    _rmdir(env_dir)
                if _rmdir(path):
                    swept += 1
        return swept

    @staticmethod
    def _children(path: str) -> Iterator[str]:
        try:
            for entry in os.scandir(path):
                if entry.is_dir(follow_symlinks=False):
                    yield entry.path
        except FileNotFoundError:
            return

    def _kill_dir(self, key: str, path: str) -> None:
        _kill_pids(os.path.join(path, "cgroup.procs"))

    def create(self, name: str, limits: Limits | None) -> EnvCgroup:
        """A new cgroup of this Runtime with ``limits`` (None: none yet,
        see :meth:`fit`).

        Raises:
            CgroupError: it could not be made or configured (nothing is left).
        """
        dirs: dict[str, str] = {}
        try:
            for key, runtime_dir in self.runtime_dirs.items():
                if key == "cpu" and (limits is None or limits.cpu_vcpus is None):
                    continue  # a v1 hierarchy with nothing to limit: one write less per start
                path = os.path.join(runtime_dir, name)
                os.mkdir(path)
                dirs[key] = path
            cgroup = EnvCgroup(self, dirs)
            if limits is not None:
                self.configure(cgroup, limits)
        except OSError as exc:
            for path in reversed(list(dirs.values())):
                _rmdir(path, 0.0)
            raise CgroupError(exc.errno, f"cannot create cgroup {name}: {exc}") from exc
        return cgroup

    def fit(self, cgroup: EnvCgroup, limits: Limits) -> None:
        """Gives a cgroup made without limits (``create(name, None)``) its
        limits, and the v1 cpu hierarchy's directory when they need it.

        Raises:
            CgroupError: a directory or limit could not be written.
        """
        try:
            if limits.cpu_vcpus is not None and "cpu" in self.runtime_dirs \
                    and "cpu" not in cgroup.dirs:
                any_dir = next(iter(cgroup.dirs.values()))
                path = os.path.join(self.runtime_dirs["cpu"], os.path.basename(any_dir))
                os.mkdir(path)
                cgroup.dirs["cpu"] = path
            self.configure(cgroup, limits)
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot configure cgroup {cgroup.dirs}: {exc}") from exc

    def configure(self, cgroup: EnvCgroup, limits: Limits) -> None:
        raise NotImplementedError

    def oom_kills(self, cgroup: EnvCgroup) -> int:
        raise NotImplementedError

    def peak_file(self, cgroup: EnvCgroup) -> str | None:
        raise NotImplementedError

    def kill(self, cgroup: EnvCgroup) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Removes this Runtime's (by now empty) directories."""
        for key, path in self.runtime_dirs.items():
            for env_dir in self._children(path):
                self._kill_dir(key, env_dir)
                _rmdir(env_dir)
            _rmdir(path)


class CgroupV2(CgroupBackend):
    version = 2
    REQUIRED_CONTROLLERS = ("memory", "pids")

    def __init__(self, parent: str) -> None:
        super().__init__({"": parent})
        self.cpu_quota = True

    def _prepare_runtime_dir(self, key: str, path: str) -> None:
        """Enables the controllers for the environments below, top-down from
        the directory that holds sandbox/ (the parent of this process's own
        cgroup). Without delegation of memory and pids no limit could be set:
        raise, so that the Runtime falls back to rlimits and says why."""
        sandbox_dir = os.path.dirname(path)
        for directory in (os.path.dirname(sandbox_dir), sandbox_dir, path):
            for controller in (*self.REQUIRED_CONTROLLERS, "cpu"):
                if self._enable(directory, controller):
                    continue
                if controller == "cpu":
                    self.cpu_quota = False  # CPU is not limited; reported as such
                    continue
                raise OSError(f"cannot enable the {controller} controller for "
                              f"{directory}'s children (is it delegated to this user?)")

    @staticmethod
    def _enable(directory: str, controller: str) -> bool:
        subtree = os.path.join(directory, "cgroup.subtree_control")
        if _try_write(subtree, f"+{controller}"):
            return True
        try:  # already on (a write can fail on a busy parent that has it)
            return controller in _read(subtree).split()
        except OSError:
            return False

    def configure(self, cgroup: EnvCgroup, limits: Limits) -> None:
        d = cgroup.dirs[""]
        _write(os.path.join(d, "memory.max"), str(limits.memory_bytes))
        # No swap: the limit is a limit on memory, as in Lambda.
        _try_write(os.path.join(d, "memory.swap.max"), "0")
        # An OOM kill takes the whole environment, not one random process.
        _try_write(os.path.join(d, "memory.oom.group"), "1")
        _write(os.path.join(d, "pids.max"), str(limits.pids_max))
        if limits.cpu_vcpus is not None and self.cpu_quota:
            quota = max(int(CPU_PERIOD_US * limits.cpu_vcpus), 1000)
            _write(os.path.join(d, "cpu.max"), f"{quota} {CPU_PERIOD_US}")

    def oom_kills(self, cgroup: EnvCgroup) -> int:
        return _keyed_counter(os.path.join(cgroup.dirs[""], "memory.events"), "oom_kill")

    def peak_file(self, cgroup: EnvCgroup) -> str | None:
        path = os.path.join(cgroup.dirs[""], "memory.peak")  # Linux 5.19+
        return path if os.path.exists(path) else None

    def kill(self, cgroup: EnvCgroup) -> None:
        self._kill_dir("", cgroup.dirs[""])

    def _kill_dir(self, key: str, path: str) -> None:
        if not _try_write(os.path.join(path, "cgroup.kill"), "1"):  # Linux 5.14+
            _kill_pids(os.path.join(path, "cgroup.procs"))


class CgroupV1(CgroupBackend):
    version = 1

    def configure(self, cgroup: EnvCgroup, limits: Limits) -> None:
        memory = cgroup.dirs["memory"]
        _write(os.path.join(memory, "memory.limit_in_bytes"), str(limits.memory_bytes))
        # memsw exists only with swap accounting; it must not be below the limit.
        _try_write(os.path.join(memory, "memory.memsw.limit_in_bytes"), str(limits.memory_bytes))
        _write(os.path.join(cgroup.dirs["pids"], "pids.max"), str(limits.pids_max))
        if limits.cpu_vcpus is not None and "cpu" in cgroup.dirs:
            quota = max(int(CPU_PERIOD_US * limits.cpu_vcpus), 1000)
            cpu = cgroup.dirs["cpu"]
            _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))

    def oom_kills(self, cgroup: EnvCgroup) -> int:
        # oom_kill in memory.oom_control needs Linux 4.13+
        return _keyed_counter(os.path.join(cgroup.dirs["memory"], "memory.oom_control"),
                              "oom_kill")

    def peak_file(self, cgroup: EnvCgroup) -> str | None:
        return os.path.join(cgroup.dirs["memory"], "memory.max_usage_in_bytes")

    def kill(self, cgroup: EnvCgroup) -> None:
        # Freeze first so nothing forks between reading the list and the kills.
        freezer = cgroup.dirs.get("freezer")
        frozen = freezer is not None and _try_write(
            os.path.join(freezer, "freezer.state"), "FROZEN")
        procs = os.path.join(cgroup.dirs["pids"], "cgroup.procs")
        _kill_pids(procs)
        if frozen and freezer is not None:
            # Killed tasks stay listed while frozen; they die once thawed.
            _try_write(os.path.join(freezer, "freezer.state"), "THAWED")
        for _ in range(100):  # anything that forked before the freeze took
            if not _kill_pids(procs):
                break
            time.sleep(0.001)


class CgroupsAhead:
    """Cgroups made ahead of demand for the environments of any function:
    the first start of a function would otherwise make its own on its way
    (four directories on a v1 host, a third of a millisecond), as a
    function's later starts do not (its pool keeps one made ahead). They are
    made with the limits the last one taken needed (functions mostly share
    their memory size), and given others when taken, if need be.

    Args:
        backend: where they are made.
        count: how many are kept made.
    """

    def __init__(self, backend: CgroupBackend, count: int = 2) -> None:
        self.backend = backend
        self.count = count
        self._made: list[tuple[EnvCgroup, Limits | None]] = []
        self._likely: Limits | None = None  # what the last one taken needed
        self._lock = threading.Lock()
        self._closed = False

    def names(self) -> set[str]:
        """The directory names of those held (the same in every hierarchy)."""
        with self._lock:
            return {os.path.basename(next(iter(c.dirs.values()))) for c, _ in self._made}

    def take(self, limits: Limits) -> EnvCgroup | None:
        """One made ahead, with ``limits`` now; None when none is left (or
        it could not be configured: it is removed)."""
        with self._lock:
            self._likely = limits
            if not self._made:
                return None
            cgroup, made_with = self._made.pop()
        if made_with == limits:
            return cgroup
        try:
            self.backend.fit(cgroup, limits)
        except CgroupError as exc:
            log.warning("a cgroup made ahead could not be configured: %s", exc)
            cgroup.remove()
            return None
        return cgroup

    def refill(self) -> None:
        """Makes what is missing (on the supervisor thread, off any start)."""
        while True:
            with self._lock:
                if self._closed or len(self._made) >= self.count:
                    return
                limits = self._likely
            try:
                cgroup = self.backend.create(f"env-{uuid.uuid4().hex}", limits)
            except CgroupError as exc:
                log.warning("cannot make a cgroup ahead: %s", exc)
                return
            with self._lock:
                if not self._closed:
                    self._made.append((cgroup, limits))
                    continue
            cgroup.remove()
            return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            made, self._made = self._made, []
        for cgroup, _ in made:
            cgroup.remove()


@dataclasses.dataclass(frozen=True)
class Detection:
    """What the host offers; ``backend`` is None when no cgroup can be made."""

    version: int | None
    parents: dict[str, str]
    reason: str


def detect(mountinfo: str | None = None, proc_cgroup: str | None = None,
           prefix: str = "") -> Detection:
    """Chooses a backend from the mount table and this process's cgroups.

    ``prefix`` is prepended to mount points (tests use a fake tree).
    """
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo")
    if proc_cgroup is None:
        proc_cgroup = _read("/proc/self/cgroup")
    mounts = parse_mountinfo(mountinfo)
    own = parse_proc_cgroup(proc_cgroup)
    reasons = []
    for mount in mounts:
        if mount.fstype != CGROUP_V2 or "" not in own:
            continue
        own_dir = prefix + mount.mountpoint + _relative(own[""], mount.root)
        parent = os.path.dirname(own_dir.rstrip("/")) if own[""] != "/" else own_dir
        try:
            available = _read(os.path.join(parent, "cgroup.controllers")).split()
        except OSError as exc:
            reasons.append(f"cgroup v2 at {mount.mountpoint}: {exc.strerror}")
            continue
        missing = [c for c in REQUIRED if c not in available]
        if missing:
            reasons.append(f"cgroup v2 at {mount.mountpoint} has no {', '.join(missing)} "
                           "controller")
            continue
        return Detection(2, {"": os.path.join(parent, TOP)}, "cgroup v2")
    parents: dict[str, str] = {}
    for mount in mounts:
        if mount.fstype != CGROUP_V1:
            continue
        for controller in mount.controllers:
            if controller in V1_CONTROLLERS and controller in own and controller not in parents:
                own_dir = prefix + mount.mountpoint + _relative(own[controller], mount.root)
                parents[controller] = os.path.join(own_dir, TOP)
    missing = [c for c in REQUIRED if c not in parents]
    if not missing:
        return Detection(1, parents, "cgroup v1")
    reasons.append(f"cgroup v1 lacks the {', '.join(missing)} hierarchy" if parents
                   else "no cgroup v1 hierarchy mounted")
    return Detection(None, {}, "; ".join(reasons))


def _relative(path: str, root: str) -> str:
    if root != "/" and path.startswith(root):
        path = path[len(root):] or "/"
    return "" if path == "/" else path


def backend_for(detection: Detection) -> CgroupBackend | None:
    """The backend, or None when none can be used (say why: detection.reason)."""
    if detection.version == 2:
        return CgroupV2(detection.parents[""])
    if detection.version == 1:
        return CgroupV1(detection.parents)
    return None
