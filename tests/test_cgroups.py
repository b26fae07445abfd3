"""Cgroups (sandbox/limits/cgroups.py): detection from mount tables, both
backends' file-level logic against directory trees that mirror cgroupfs (v2
cannot run live on this cgroup v1 host), the stale sweep, and the v1 backend
live on this machine.

A plain directory is not cgroupfs: mkdir creates no control files, writes
replace instead of adding, and rmdir refuses a directory holding files. The
tests create the files a backend reads, and ``cgroupfs_rmdir`` stands in for
the kernel's rmdir where removal is under test.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import is_alive, wait_gone

from sandbox import Runtime
from sandbox.limits import cgroups
from sandbox.limits.cgroups import CgroupError, CgroupV1, CgroupV2, Limits
from sandbox.limits.host import HostLimits

MIB = 1024 * 1024

# Mount tables and /proc/self/cgroup texts of three kinds of host.
V2_MOUNTINFO = textwrap.dedent("""\
    22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
    23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
    24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
    30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
    """)
V2_PROC_CGROUP = "0::/system.slice/app.service\n"

# This machine: v1 controllers, plus an empty v2 hierarchy at unified/.
HYBRID_MOUNTINFO = textwrap.dedent("""\
    22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
    31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
    32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
    33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
    34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
    36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
    37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
    38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
    39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
    40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
    """)
HYBRID_PROC_CGROUP = textwrap.dedent("""\
    9:name=systemd:/
    8:pids:/
    7:blkio:/
    6:freezer:/
    5:devices:/
    4:memory:/process_api/abc123
    3:cpuset:/
    2:cpuacct:/
    1:cpu:/
    0::/
    """)
NO_CGROUP_MOUNTINFO = textwrap.dedent("""\
    22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
    23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
    """)


def cgroupfs_rmdir(path: str, timeout_s: float = 1.0) -> bool:
    """rmdir as cgroupfs does it: control files go with the directory, child
    cgroups make it fail (EBUSY)."""
    if not os.path.exists(path):
        return True
    if any(entry.is_dir() for entry in os.scandir(path)):
        return False
    shutil.rmtree(path)
    return True


@pytest.fixture
def fake_rmdir(monkeypatch):
    monkeypatch.setattr(cgroups, "_rmdir", cgroupfs_rmdir)


@pytest.fixture
def writes(monkeypatch):
    """Every (path, value) a backend writes, in order (the files are still written)."""
    log: list[tuple[str, str]] = []
    real_write = cgroups._write

    def write(path: str, value: str) -> None:  # _try_write goes through _write too
        log.append((path, value))
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", write)
    return log


@pytest.fixture
def sleeper():
    """A process to put into fake cgroup.procs files (and to be killed)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1  # never a live process


def read(path: str | Path) -> str:
    return Path(path).read_text()


# -- parsing and detection ----------------------------------------------------------------
def test_parse_mountinfo_keeps_cgroup_mounts_only():
    mounts = cgroups.parse_mountinfo(HYBRID_MOUNTINFO)
    assert [m.mountpoint for m in mounts] == [
        f"/sys/fs/cgroup/{n}" for n in ("cpu", "cpuacct", "cpuset", "memory", "devices",
                                        "freezer", "blkio", "pids", "systemd", "unified")]
    by_point = {m.mountpoint: m for m in mounts}
    assert by_point["/sys/fs/cgroup/memory"].fstype == "cgroup"
    assert by_point["/sys/fs/cgroup/memory"].controllers == ("memory",)
    assert by_point["/sys/fs/cgroup/systemd"].controllers == ()  # name=systemd is no controller
    assert by_point["/sys/fs/cgroup/unified"].fstype == "cgroup2"
    assert by_point["/sys/fs/cgroup/unified"].controllers == ()


def test_parse_mountinfo_combined_controllers_escapes_and_bind_roots():
    text = ("50 31 0:40 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup "
            "rw,cpu,cpuacct\n"
            "51 31 0:41 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"
            "garbage line\n")
    cpu, spaced = cgroups.parse_mountinfo(text)
    assert cpu.controllers == ("cpu", "cpuacct")
    assert cpu.root == "/docker/abc"
    assert spaced.mountpoint == "/mnt/with space"


def test_parse_proc_cgroup():
    paths = cgroups.parse_proc_cgroup(HYBRID_PROC_CGROUP + "10:cpu,cpuacct:/a/b\n")
    assert paths[""] == "/"
    assert paths["memory"] == "/process_api/abc123"
    assert paths["name=systemd"] == "/"
    assert paths["cpu"] == paths["cpuacct"] == "/a/b"


def test_detect_v2_only_host(tmp_path):
    slice_dir = tmp_path / "sys/fs/cgroup/system.slice"
    (slice_dir / "app.service").mkdir(parents=True)
    (slice_dir / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    detection = cgroups.detect(V2_MOUNTINFO, V2_PROC_CGROUP, prefix=str(tmp_path))
    # The parent of the runtime's own cgroup: a v2 cgroup with processes
    # cannot have controller-enabled children.
    assert detection == cgroups.Detection(2, {"": f"{slice_dir}/sandbox"}, "cgroup v2")
    backend = cgroups.backend_for(detection)
    assert isinstance(backend, CgroupV2) and backend.version == 2


def test_detect_v2_at_the_root_cgroup(tmp_path):
    root = tmp_path / "sys/fs/cgroup"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    detection = cgroups.detect(V2_MOUNTINFO, "0::/\n", prefix=str(tmp_path))
    assert detection.version == 2
    assert detection.parents == {"": f"{root}/sandbox"}


def test_detect_v2_without_memory_controller_and_no_v1(tmp_path):
    slice_dir = tmp_path / "sys/fs/cgroup/system.slice"
    slice_dir.mkdir(parents=True)
    (slice_dir / "cgroup.controllers").write_text("cpu io\n")
    detection = cgroups.detect(V2_MOUNTINFO, V2_PROC_CGROUP, prefix=str(tmp_path))
    assert detection.version is None
    assert detection.parents == {}
    assert "cgroup v2 at /sys/fs/cgroup has no memory, pids controller" in detection.reason
    assert "no cgroup v1 hierarchy mounted" in detection.reason
    assert cgroups.backend_for(detection) is None


def test_detect_v2_unreadable_controllers_gives_the_error(tmp_path):
    detection = cgroups.detect(V2_MOUNTINFO, V2_PROC_CGROUP, prefix=str(tmp_path))
    assert detection.version is None
    assert "cgroup v2 at /sys/fs/cgroup: No such file or directory" in detection.reason


def test_detect_v1_hybrid_like_this_host(tmp_path):
    unified = tmp_path / "sys/fs/cgroup/unified"
    unified.mkdir(parents=True)
    (unified / "cgroup.controllers").write_text("\n")  # v2 mounted, no controllers
    detection = cgroups.detect(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP, prefix=str(tmp_path))
    base = f"{tmp_path}/sys/fs/cgroup"
    assert detection == cgroups.Detection(1, {
        "cpu": f"{base}/cpu/sandbox",
        "memory": f"{base}/memory/process_api/abc123/sandbox",
        "freezer": f"{base}/freezer/sandbox",
        "pids": f"{base}/pids/sandbox",
    }, "cgroup v1")
    backend = cgroups.backend_for(detection)
    assert isinstance(backend, CgroupV1) and backend.version == 1


def test_detect_v1_bind_mounted_root_in_a_container():
    mountinfo = ("35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
                 "39 31 0:36 /docker/abc /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids\n")
    proc = "8:pids:/docker/abc\n4:memory:/docker/abc/inner\n"
    detection = cgroups.detect(mountinfo, proc)
    assert detection.parents == {"memory": "/sys/fs/cgroup/memory/inner/sandbox",
                                 "pids": "/sys/fs/cgroup/pids/sandbox"}


def test_detect_v1_without_pids_hierarchy():
    mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    detection = cgroups.detect(mountinfo, "4:memory:/\n")
    assert detection.version is None
    assert detection.reason == "cgroup v1 lacks the pids hierarchy"


def test_detect_no_cgroups_at_all():
    detection = cgroups.detect(NO_CGROUP_MOUNTINFO, "")
    assert detection == cgroups.Detection(None, {}, "no cgroup v1 hierarchy mounted")
    assert cgroups.backend_for(detection) is None


def test_detect_this_host():
    detection = cgroups.detect()
    assert detection.version == 1, detection.reason
    assert set(detection.parents) == {"memory", "pids", "cpu", "freezer"}
    for controller, parent in detection.parents.items():
        assert parent.startswith(f"/sys/fs/cgroup/{controller}/")
        assert parent.endswith("/sandbox")


def test_runtime_dir_name_is_pid_and_start_time():
    name = cgroups.runtime_dir_name()
    prefix, pid, start, seq = name.split("-")
    assert prefix == "rt" and int(pid) == os.getpid() and start.isdigit() and seq.isdigit()
    assert cgroups.runtime_dir_name() != name  # one per Runtime, even in one process
    assert cgroups._runtime_alive(name)
    assert cgroups._runtime_alive(f"rt-{pid}-{start}")  # the older three-part form
    assert not cgroups._runtime_alive(f"rt-{os.getpid()}-{int(start) + 1}")  # pid reused
    assert not cgroups._runtime_alive(f"rt-{dead_pid()}-1")
    assert not cgroups._runtime_alive("rt-garbage")


# -- v2 backend, file level ---------------------------------------------------------------------
def v2_backend(tmp_path: Path) -> tuple[CgroupV2, Path]:
    parent = tmp_path / "cg/system.slice"
    parent.mkdir(parents=True)
    (parent / "cgroup.controllers").write_text("cpu memory pids\n")
    return CgroupV2(str(parent / "sandbox")), parent


def test_v2_setup_creates_the_runtime_dir_and_enables_controllers(tmp_path, writes):
    backend, parent = v2_backend(tmp_path)
    assert backend.setup() == 0
    runtime_dir = backend.runtime_dirs[""]
    name = os.path.basename(runtime_dir)
    assert runtime_dir == f"{parent}/sandbox/{name}" and cgroups._runtime_alive(name)
    assert os.path.isdir(runtime_dir)
    # From the directory holding sandbox/ (the parent of this process's own
    # cgroup) down: a controller reaches a cgroup only if every ancestor enables it.
    for directory in (str(parent), f"{parent}/sandbox", runtime_dir):
        enabled = [v for p, v in writes if p == f"{directory}/cgroup.subtree_control"]
        assert enabled == ["+memory", "+pids", "+cpu"]
    assert backend.cpu_quota is True


def test_v2_setup_fails_when_controllers_cannot_be_enabled(tmp_path):
    backend, parent = v2_backend(tmp_path)
    os.makedirs(backend.runtime_dirs[""])
    # cgroupfs answers EBUSY/ENOENT here (no delegation); a directory in the way fails alike.
    for directory in (parent, parent / "sandbox", Path(backend.runtime_dirs[""])):
        (directory / "cgroup.subtree_control").mkdir()
    with pytest.raises(OSError, match=f"cannot enable the memory controller for {parent}'s"):
        backend.setup()


def test_v2_controllers_already_on_are_accepted_and_cpu_is_optional(tmp_path, monkeypatch):
    backend, parent = v2_backend(tmp_path)
    real_write = cgroups._write

    def refuse_cpu_and_the_top(path: str, value: str) -> None:
        if value == "+cpu" or os.path.dirname(path) == str(parent):
            raise OSError(16, "Device or resource busy")
        real_write(path, value)

    (parent / "cgroup.subtree_control").write_text("memory pids\n")  # on already
    monkeypatch.setattr(cgroups, "_write", refuse_cpu_and_the_top)
    backend.setup()
    assert backend.cpu_quota is False
    cg = backend.create("env-1", Limits(128 * MIB, 1024, 0.5))
    assert not os.path.exists(os.path.join(cg.dirs[""], "cpu.max"))


def test_v2_host_without_delegation_falls_back_to_rlimits(tmp_path, monkeypatch):
    backend, parent = v2_backend(tmp_path)
    (parent / "cgroup.subtree_control").mkdir()
    monkeypatch.setattr(cgroups, "detect", lambda: cgroups.Detection(2, {"": str(parent)},
                                                                     "cgroup v2"))
    monkeypatch.setattr(cgroups, "backend_for", lambda detection: backend)
    host = HostLimits(use_cgroups=None, isolate=False)
    try:
        report = host.describe()
        assert host.cgroup is None
        assert report["memory"] == {"enforced": True, "by": "RLIMIT_AS", "reason": None}
        assert report["pids"]["enforced"] is False
        assert "cannot enable the memory controller" in report["cgroup"]["reason"]
    finally:
        host.close()


def test_v2_create_writes_the_limits(tmp_path, writes):
    backend, _ = v2_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(128 * MIB, 1024, 0.5))
    d = Path(backend.runtime_dirs[""]) / "env-1"
    assert cg.dirs == {"": str(d)}
    assert read(d / "memory.max") == str(128 * MIB)
    assert read(d / "memory.swap.max") == "0"
    assert read(d / "memory.oom.group") == "1"
    assert read(d / "pids.max") == "1024"
    assert read(d / "cpu.max") == "50000 100000"
    assert cg.procs_files == [f"{d}/cgroup.procs"]


def test_v2_cpu_quota_optional_and_floored(tmp_path):
    backend, _ = v2_backend(tmp_path)
    backend.setup()
    no_quota = backend.create("env-none", Limits(MIB, 10, None))
    assert not os.path.exists(os.path.join(no_quota.dirs[""], "cpu.max"))
    tiny = backend.create("env-tiny", Limits(MIB, 10, 0.001))
    assert read(os.path.join(tiny.dirs[""], "cpu.max")) == "1000 100000"
    full = backend.create("env-full", Limits(1769 * MIB, 10, 1.0))
    assert read(os.path.join(full.dirs[""], "cpu.max")) == "100000 100000"


def test_v2_create_failure_is_a_cgroup_error(tmp_path):
    backend, _ = v2_backend(tmp_path)  # no setup: the runtime dir does not exist
    with pytest.raises(CgroupError) as info:
        backend.create("env-1", Limits(MIB, 10, None))
    assert info.value.errno == errno.ENOENT
    assert "cannot create cgroup env-1" in str(info.value)


def test_v2_oom_kills_from_memory_events(tmp_path):
    backend, _ = v2_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    assert cg.oom_kills() == 0  # no memory.events yet
    Path(cg.dirs[""], "memory.events").write_text(
        "low 0\nhigh 0\nmax 17\noom 3\noom_kill 2\noom_group_kill 1\n")
    assert cg.oom_kills() == 2
    Path(cg.dirs[""], "memory.events").write_text("low 0\nhigh 0\nmax 17\noom 3\n")
    assert cg.oom_kills() == 0


def test_v2_peak_from_memory_peak(tmp_path):
    backend, _ = v2_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    assert cg.peak_bytes() is None  # kernel before 5.19: no memory.peak
    peak = Path(cg.dirs[""], "memory.peak")
    peak.write_text("123456789\n")
    assert cg.peak_bytes() == 123456789
    with open(peak, "r+") as f:  # the kernel updates the same file
        f.write("987654321\n")
    assert cg.peak_bytes() == 987654321
    with open(peak, "r+") as f:
        f.write("garbage!!\n")
    assert cg.peak_bytes() is None


def test_v2_kill_writes_cgroup_kill(tmp_path):
    backend, _ = v2_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    cg.kill()
    assert read(os.path.join(cg.dirs[""], "cgroup.kill")) == "1"


def test_v2_kill_without_cgroup_kill_signals_every_process(tmp_path, sleeper):
    backend, _ = v2_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    os.mkdir(os.path.join(cg.dirs[""], "cgroup.kill"))  # before Linux 5.14: no such file
    Path(cg.dirs[""], "cgroup.procs").write_text(f"{sleeper.pid}\n")
    cg.kill()
    assert sleeper.wait(5) == -9


def test_v2_open_procs_opens_for_writing_and_leaks_nothing(tmp_path):
    backend, _ = v2_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        cg.open_procs()
    assert set(os.listdir("/proc/self/fd")) == before
    Path(cg.procs_files[0]).touch()
    fds = cg.open_procs()
    try:
        assert len(fds) == 1
        os.write(fds[0], b"0")
        assert os.get_inheritable(fds[0]) is False
    finally:
        for fd in fds:
            os.close(fd)
    assert read(cg.procs_files[0]) == "0"


def test_v2_remove_and_close(tmp_path, fake_rmdir):
    backend, parent = v2_backend(tmp_path)
    backend.setup()
    kept = backend.create("env-kept", Limits(MIB, 10, None))
    gone = backend.create("env-gone", Limits(MIB, 10, None))
    Path(gone.dirs[""], "memory.peak").write_text("1\n")
    assert gone.peak_bytes() == 1  # opens the file
    assert gone.remove() is True and gone.removed
    assert not os.path.exists(gone.dirs[""])
    assert read(os.path.join(backend.runtime_dirs[""], "env-kept", "memory.max")) == str(MIB)
    backend.close()
    assert not os.path.exists(kept.dirs[""])
    assert not os.path.exists(backend.runtime_dirs[""])
    assert os.listdir(parent / "sandbox") == ["cgroup.subtree_control"]


# -- v1 backend, file level ---------------------------------------------------------------------
def v1_backend(tmp_path: Path, controllers=("memory", "pids", "cpu", "freezer")) -> CgroupV1:
    parents = {c: str(tmp_path / c / "sandbox") for c in controllers}
    return CgroupV1(parents)


def test_v1_setup_creates_one_runtime_dir_per_hierarchy(tmp_path):
    backend = v1_backend(tmp_path)
    assert backend.setup() == 0
    name = os.path.basename(backend.runtime_dirs["memory"])
    assert cgroups._runtime_alive(name)
    assert backend.runtime_dirs == {c: f"{tmp_path}/{c}/sandbox/{name}"
                                    for c in ("memory", "pids", "cpu", "freezer")}
    assert all(os.path.isdir(d) for d in backend.runtime_dirs.values())


def test_v1_create_writes_the_limits(tmp_path, writes):
    backend = v1_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(64 * MIB, 100, 0.25))
    dirs = {c: Path(d) for c, d in cg.dirs.items()}
    assert set(dirs) == {"memory", "pids", "cpu", "freezer"}
    assert read(dirs["memory"] / "memory.limit_in_bytes") == str(64 * MIB)
    assert read(dirs["memory"] / "memory.memsw.limit_in_bytes") == str(64 * MIB)
    assert read(dirs["pids"] / "pids.max") == "100"
    assert read(dirs["cpu"] / "cpu.cfs_period_us") == "100000"
    assert read(dirs["cpu"] / "cpu.cfs_quota_us") == "25000"
    # memsw after the memory limit: the kernel refuses memsw below memory.limit_in_bytes.
    order = [os.path.basename(p) for p, _ in writes]
    assert order.index("memory.limit_in_bytes") < order.index("memory.memsw.limit_in_bytes")
    assert order.index("cpu.cfs_period_us") < order.index("cpu.cfs_quota_us")
    assert sorted(cg.procs_files) == sorted(f"{d}/cgroup.procs" for d in dirs.values())


def test_v1_without_cpu_hierarchy_or_quota(tmp_path):
    backend = v1_backend(tmp_path, ("memory", "pids"))
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, 0.5))
    assert set(cg.dirs) == {"memory", "pids"}
    full = v1_backend(tmp_path / "full")
    full.setup()
    # No quota: no directory in the cpu hierarchy (one cgroup.procs write less).
    no_quota = full.create("env-2", Limits(MIB, 10, None))
    assert set(no_quota.dirs) == {"memory", "pids", "freezer"}


def test_v1_create_failure_rolls_back_created_dirs(tmp_path):
    backend = v1_backend(tmp_path, ("memory", "pids"))
    backend.setup()
    os.rmdir(backend.runtime_dirs["pids"])  # the second mkdir fails
    with pytest.raises(CgroupError) as info:
        backend.create("env-1", Limits(MIB, 10, None))
    assert info.value.errno == errno.ENOENT
    assert not os.path.exists(os.path.join(backend.runtime_dirs["memory"], "env-1"))


# -- cgroups made ahead for first starts ------------------------------------------------------
def test_cgroups_made_ahead_carry_the_limits_last_asked_for(tmp_path, writes, fake_rmdir):
    """Made without limits at first, then with those the last one taken
    needed: taken with the same limits, nothing is written on the way; with
    others, they (and the cpu directory) are written then."""
    backend = v1_backend(tmp_path)
    backend.setup()
    ahead = cgroups.CgroupsAhead(backend, count=2)
    ahead.refill()
    small = Limits(64 * MIB, 100, None)
    first = ahead.take(small)
    assert first is not None and set(first.dirs) == {"memory", "pids", "freezer"}
    assert read(Path(first.dirs["memory"], "memory.limit_in_bytes")) == str(64 * MIB)
    ahead.refill()  # one was left from before, one is made with `small`
    writes.clear()
    assert ahead.take(small) is not None
    assert writes == []  # made with these limits already
    quota = Limits(256 * MIB, 50, 0.5)
    other = ahead.take(quota)
    assert other is not None and set(other.dirs) == {"memory", "pids", "freezer", "cpu"}
    assert read(Path(other.dirs["memory"], "memory.limit_in_bytes")) == str(256 * MIB)
    assert read(Path(other.dirs["pids"], "pids.max")) == "50"
    assert read(Path(other.dirs["cpu"], "cpu.cfs_quota_us")) == "50000"
    assert os.path.basename(other.dirs["cpu"]) == os.path.basename(other.dirs["memory"])
    assert ahead.take(quota) is None  # none left until the next refill


def test_cgroups_made_ahead_go_with_close(tmp_path, fake_rmdir):
    backend = v1_backend(tmp_path)
    backend.setup()
    ahead = cgroups.CgroupsAhead(backend, count=3)
    ahead.refill()
    made = [p for p in os.listdir(backend.runtime_dirs["memory"]) if p.startswith("env-")]
    assert len(made) == 3
    ahead.close()
    assert not [p for p in os.listdir(backend.runtime_dirs["memory"]) if p.startswith("env-")]
    ahead.refill()  # closed: makes none
    assert not os.listdir(backend.runtime_dirs["memory"])
    assert ahead.take(Limits(MIB, 10, None)) is None


def test_v1_oom_kills_from_oom_control(tmp_path):
    backend = v1_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    control = Path(cg.dirs["memory"], "memory.oom_control")
    assert cg.oom_kills() == 0
    control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert cg.oom_kills() == 3
    control.write_text("oom_kill_disable 0\nunder_oom 1\n")  # before Linux 4.13
    assert cg.oom_kills() == 0


def test_v1_peak_from_max_usage(tmp_path):
    backend = v1_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    assert backend.peak_file(cg) == f"{cg.dirs['memory']}/memory.max_usage_in_bytes"
    assert cg.peak_bytes() is None
    Path(cg.dirs["memory"], "memory.max_usage_in_bytes").write_text("4096\n")
    assert cg.peak_bytes() == 4096


def test_v1_kill_freezes_kills_and_thaws(tmp_path, writes, sleeper):
    backend = v1_backend(tmp_path)
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    Path(cg.dirs["pids"], "cgroup.procs").write_text(f"{sleeper.pid}\n")
    del writes[:]
    cg.kill()
    assert sleeper.wait(5) == -9
    freezer = f"{cg.dirs['freezer']}/freezer.state"
    assert [v for p, v in writes if p == freezer] == ["FROZEN", "THAWED"]
    assert read(freezer) == "THAWED"


def test_v1_kill_without_freezer(tmp_path, sleeper):
    backend = v1_backend(tmp_path, ("memory", "pids"))
    backend.setup()
    cg = backend.create("env-1", Limits(MIB, 10, None))
    Path(cg.dirs["pids"], "cgroup.procs").write_text(f"{sleeper.pid}\n")
    cg.kill()
    assert sleeper.wait(5) == -9


def test_v1_remove_and_close(tmp_path, fake_rmdir):
    backend = v1_backend(tmp_path)
    backend.setup()
    gone = backend.create("env-gone", Limits(MIB, 10, 0.5))
    kept = backend.create("env-kept", Limits(MIB, 10, 0.5))
    assert gone.remove() is True
    assert not any(os.path.exists(d) for d in gone.dirs.values())
    assert all(os.path.isdir(d) for d in kept.dirs.values())
    backend.close()
    assert not any(os.path.exists(d) for d in backend.runtime_dirs.values())
    for parent in backend.parents.values():
        assert os.listdir(parent) == []


# -- stale sweep ------------------------------------------------------------------------------
def test_sweep_removes_dead_runtimes_and_keeps_live_ones(tmp_path, fake_rmdir, sleeper):
    backend = v1_backend(tmp_path, ("memory", "pids"))
    mine = os.path.basename(backend.runtime_dirs["memory"])  # this Runtime's own
    _, pid, start, _ = mine.split("-")
    stale = [f"rt-{dead_pid()}-123", f"rt-{pid}-{int(start) + 1}"]  # gone; pid reused
    for parent in backend.parents.values():
        os.makedirs(os.path.join(parent, mine, "env-live"))
        os.makedirs(os.path.join(parent, "unrelated"))
        for name in stale:
            os.makedirs(os.path.join(parent, name, "env-a"))
    # A process left in a stale environment is killed by the sweep.
    Path(backend.parents["pids"], stale[0], "env-a", "cgroup.procs").write_text(
        f"{sleeper.pid}\n")
    assert backend.setup() == len(stale) * len(backend.parents)
    assert sleeper.wait(5) == -9
    for parent in backend.parents.values():
        assert sorted(os.listdir(parent)) == sorted([mine, "unrelated"])
        assert os.listdir(os.path.join(parent, mine)) == ["env-live"]


def test_sweep_v2_uses_cgroup_kill(tmp_path, fake_rmdir):
    backend, parent = v2_backend(tmp_path)
    stale = parent / "sandbox" / f"rt-{dead_pid()}-1" / "env-a"
    stale.mkdir(parents=True)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cgroups, "_try_write", lambda p, v: calls.append((p, v)) or True)
        assert backend.sweep_stale() == 1
    assert (f"{stale}/cgroup.kill", "1") in calls
    assert not stale.parent.exists()


def test_sweep_with_missing_parent_is_a_no_op(tmp_path):
    assert v1_backend(tmp_path).sweep_stale() == 0


# -- v1 live on this host ------------------------------------------------------------------------
@pytest.fixture
def live_v1():
    detection = cgroups.detect()
    if detection.version != 1:
        pytest.skip(f"no cgroup v1 here: {detection.reason}")
    backend = cgroups.backend_for(detection)
    assert isinstance(backend, CgroupV1)
    try:
        backend.setup()
    except OSError as exc:
        pytest.skip(f"cgroup v1 present but unusable: {exc}")
    yield backend
    backend.close()
    assert not any(os.path.exists(d) for d in backend.runtime_dirs.values())


PLACED = """
import os, sys
sys.stdin.readline()  # placed into the cgroup by the test
{body}
"""


def start_placed(cg, body: str) -> subprocess.Popen:
    """A Python process moved into ``cg`` before it runs ``body``."""
    proc = subprocess.Popen([sys.executable, "-c", PLACED.format(body=textwrap.dedent(body))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for path in cg.procs_files:
        with open(path, "w") as f:
            f.write(str(proc.pid))
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc


def test_v1_live_limits_in_the_real_files(live_v1):
    cg = live_v1.create("env-live-limits", Limits(64 * MIB, 17, 0.5))
    try:
        d = cg.dirs
        assert set(d) == {"memory", "pids", "cpu", "freezer"}
        assert int(read(f"{d['memory']}/memory.limit_in_bytes")) == 64 * MIB
        if os.path.exists(f"{d['memory']}/memory.memsw.limit_in_bytes"):
            assert int(read(f"{d['memory']}/memory.memsw.limit_in_bytes")) == 64 * MIB
        assert read(f"{d['pids']}/pids.max").strip() == "17"
        assert read(f"{d['cpu']}/cpu.cfs_period_us").strip() == "100000"
        assert read(f"{d['cpu']}/cpu.cfs_quota_us").strip() == "50000"
        assert read(f"{d['freezer']}/freezer.state").strip() == "THAWED"
        assert cg.oom_kills() == 0
        assert cg.peak_bytes() == 0  # nothing charged yet
    finally:
        assert cg.remove() is True
    assert not any(os.path.exists(p) for p in cg.dirs.values())


def test_v1_live_process_is_placed_killed_and_removed(live_v1):
    cg = live_v1.create("env-live-kill", Limits(64 * MIB, 50, None))
    proc = start_placed(cg, """
        print(open("/proc/self/cgroup").read(), flush=True)
        import time
        time.sleep(60)
    """)
    try:
        lines = []
        assert proc.stdout is not None
        while len(lines) < 10:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        text = "\n".join(lines)
        for controller, path in cg.dirs.items():
            assert f":{path.split(f'/sys/fs/cgroup/{controller}', 1)[1]}" in text, text
        cg.kill()
        assert proc.wait(5) == -9
    finally:
        proc.kill()
        proc.wait()
    assert cg.remove() is True


def test_v1_live_pids_max_is_enforced(live_v1):
    cg = live_v1.create("env-live-pids", Limits(256 * MIB, 5, None))
    proc = start_placed(cg, """
        import errno, time
        children = 0
        try:
            for _ in range(10):
                if os.fork() == 0:
                    os.close(1)
                    time.sleep(30)
                    os._exit(0)
                children += 1
            print(children, "none", flush=True)
        except OSError as exc:
            print(children, errno.errorcode[exc.errno], flush=True)
        os._exit(0)
    """)
    try:
        out, _ = proc.communicate(timeout=10)
    finally:
        cg.kill()
    # pids.max 5: the process itself and four children.
    assert out.split() == ["4", "EAGAIN"]
    assert cg.remove() is True


def test_v1_live_oom_is_counted_and_peak_is_the_limit(live_v1):
    cg = live_v1.create("env-live-oom", Limits(32 * MIB, 50, None))
    proc = start_placed(cg, """
        import mmap
        area = mmap.mmap(-1, 128 << 20)
        for offset in range(0, len(area), mmap.PAGESIZE):
            area[offset] = 1
        print("survived", flush=True)
    """)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == -9, out
    assert cg.oom_kills() == 1
    peak = cg.peak_bytes()
    assert peak is not None and 30 * MIB <= peak <= 32 * MIB
    assert cg.remove() is True


def test_v1_live_stale_runtime_is_swept(live_v1):
    stale = f"rt-{dead_pid()}-42"
    for parent in live_v1.parents.values():
        os.makedirs(os.path.join(parent, stale, "env-left"))
    fresh = cgroups.backend_for(cgroups.detect())
    assert fresh is not None
    assert fresh.setup() >= len(live_v1.parents)
    assert not any(os.path.exists(os.path.join(p, stale)) for p in live_v1.parents.values())
    # Its own (live) runtime dirs are kept: they are this process's.
    assert all(os.path.isdir(d) for d in live_v1.runtime_dirs.values())


def test_v1_live_runtime_close_leaves_nothing(tmp_path):
    rt = Runtime(tmp_path / "state")
    try:
        dirs = dict(rt._host.cgroup.runtime_dirs)
        assert rt._host.cgroup.version == 1
    finally:
        rt.close()
    assert [d for d in dirs.values() if os.path.exists(d)] == []


def test_two_runtimes_in_one_process_do_not_share_cgroups(tmp_path):
    from conftest import make_function

    source = "import os\ndef handler(event, context):\n    return os.getpid()\n"
    a = Runtime(tmp_path / "a")
    b = Runtime(tmp_path / "b")
    try:
        make_function(a, "f", source)
        make_function(b, "f", source)
        a.invoke("f")
        pid = b.invoke("f").report["pid"]
        a.close()
        time.sleep(0.2)
        assert is_alive(pid), "closing Runtime a killed Runtime b's environment"
        r = b.invoke("f")
        assert r.report["pid"] == pid and r.report["start"] == "warm"
        assert b.shutdown_idle("f", wait=True) == 1
        assert b.invoke("f").function_error is None
    finally:
        a.close()
        b.close()
    assert not wait_gone([pid])


def test_a_cgroup_is_made_ahead_and_removed_with_its_function(tmp_path):
    """Each pool keeps one cgroup made ahead for its next environment; it goes
    when the function does (and with the Runtime)."""
    from conftest import make_function, wait_for

    with Runtime(tmp_path / "s") as rt:
        if rt._host.cgroup is None:
            pytest.skip("no cgroups here")
        memory_dir = rt._host.cgroup.runtime_dirs.get("memory") or rt._host.cgroup.runtime_dirs[""]

        def env_dirs() -> set[str]:
            return {d for d in os.listdir(memory_dir) if d.startswith("env-")}

        make_function(rt, "f", "def handler(e, c):\n    return 1\n")
        rt.invoke("f", {})
        assert wait_for(lambda: len(env_dirs()) == 2), env_dirs()  # its own, one ahead
        rt.shutdown_idle("f", wait=True)
        assert wait_for(lambda: len(env_dirs()) == 1), env_dirs()
        (spare,) = env_dirs()
        second = rt.invoke("f", {})
        assert second.report["start"] == "snapshot"
        assert spare in env_dirs(), "the next environment did not take the cgroup made ahead"
        pid = second.report["pid"]
        with open(os.path.join(memory_dir, spare, "cgroup.procs")) as procs:
            assert str(pid) in procs.read().split()
        rt.delete_function("f")
        assert wait_for(lambda: not env_dirs(), 5), env_dirs()
