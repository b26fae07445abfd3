"""What the runtime says it enforces (Runtime.capabilities(), sandbox doctor)
against what an environment actually gets, and the pieces behind it:
sandbox/limits/isolation.py (steps, probe, spec, readable_by_others),
sandbox/limits/host.py (EnvironmentLimits, rlimits_for) and the seccomp
program built by sandbox._native.seccomp_program.

The rule under test: nothing is claimed that is not enforced, and what is
not enforced comes with a reason.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import stat
import struct
import tempfile
import threading

import psutil
import pytest
from conftest import invoke_from_zygote, make_function, wait_for, wait_gone

from sandbox import Runtime, _native
from sandbox.limits import EnvironmentLimits, rlimits_for
from sandbox.limits import isolation as iso_mod
from sandbox.limits.host import CPU_BACKSTOP_S, NOFILE, PIDS_MAX
from sandbox.limits.isolation import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    DENIED_SYSCALLS,
    PERSONALITY_FLAGS,
    STEPS,
    TIOCSTI,
    Isolation,
    plan_paths,
    readable_by_others,
    runtime_paths,
)
from sandbox.limits.uids import DEFAULT_UID_BASE, DEFAULT_UID_COUNT

MIB = 1024 * 1024
ZERO_CAPS = "0000000000000000"

# Reports what the environment really got.
PROBE = r'''
import os
import resource
import socket


def handler(event, context):
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    rlimits = {name: list(resource.getrlimit(getattr(resource, name)))
               for name in ("RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CPU",
                            "RLIMIT_AS", "RLIMIT_NPROC")}
    st = os.statvfs("/")
    with open("/proc/self/cgroup") as f:
        cgroup = f.read()
    return {
        "uid": os.getuid(), "gid": os.getgid(), "status": status,
        "ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in ("mnt", "ipc", "uts", "net", "pid")},
        "hostname": socket.gethostname(),
        "interfaces": [n for _, n in socket.if_nameindex()],
        "root_read_only": bool(st.f_flag & os.ST_RDONLY),
        "rlimits": rlimits,
        "cgroup": cgroup,
        "pid": os.getpid(),
        "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "masked": {m: sorted(os.listdir(m)) for m in event.get("masks", ())},
    }
'''


def own_uid(uid: int) -> bool:
    return DEFAULT_UID_BASE <= uid < DEFAULT_UID_BASE + DEFAULT_UID_COUNT


def probe(rt: Runtime, name: str = "probe", event: dict | None = None, **config) -> dict:
    make_function(rt, name, PROBE, **config)
    r = rt.invoke(name, event or {})
    assert r.function_error is None, r.payload
    return r.payload


def host_ns(name: str) -> str:
    return os.readlink(f"/proc/self/ns/{name}")


# -- capabilities(): the report --------------------------------------------------------------
def test_capabilities_cgroup_on_this_host(runtime):
    caps = runtime.capabilities()
    cgroup = caps["cgroup"]
    assert cgroup["version"] == 1
    assert cgroup["reason"] == "cgroup v1"
    assert set(cgroup["parents"]) == {"memory", "pids", "cpu", "freezer"}
    assert all(p.endswith("/sandbox") for p in cgroup["parents"].values())
    assert isinstance(cgroup["stale_runtime_dirs_swept"], int)
    assert caps["memory"] == {"enforced": True, "by": "cgroup v1", "reason": None}
    assert caps["pids"] == {"enforced": True, "by": "cgroup v1", "reason": None}
    assert caps["cpu_quota"]["enforced"] is True
    assert caps["cpu_quota"]["by"].startswith("cgroup v1")
    assert caps["cpu_quota"].get("reason") is None
    assert caps["oom_detection"] == {"enforced": True, "by": "memory.oom_control",
                                     "reason": None}
    assert caps["timeout_kills_descendants"] == {"enforced": True, "by": "cgroup kill",
                                                 "reason": None}
    # Every environment has a uid of its own here, so RLIMIT_NPROC is its alone.
    assert caps["rlimits"] == ["RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CPU",
                               "RLIMIT_NPROC"]
    assert caps["run_as"] == (f"a uid and gid of its own, leased from {DEFAULT_UID_BASE}.."
                              f"{DEFAULT_UID_BASE + DEFAULT_UID_COUNT - 1}")
    assert caps["root"] is (os.geteuid() == 0)


def test_capabilities_every_isolation_step_with_a_reason(runtime):
    isolation = runtime.capabilities()["isolation"]
    assert list(isolation) == list(STEPS)
    for step, described in isolation.items():
        assert set(described) == {"enforced", "reason"}
        assert isinstance(described["enforced"], bool)
        if not described["enforced"]:
            assert isinstance(described["reason"], str) and described["reason"], step
        elif step != "seccomp":  # seccomp may carry a note on unknown names
            assert described["reason"] is None, (step, described)


def test_capabilities_uid_follows_the_readability_of_the_runtime(runtime):
    """Directories others may not enter are covered in the environment's mount
    namespace; only a runtime path unreadable itself keeps uid 0."""
    uid = runtime.capabilities()["isolation"]["uid"]
    _, masks, unreadable = plan_paths(runtime_paths())
    if unreadable is None:
        assert uid == {"enforced": True, "reason": None}
    else:
        assert uid["enforced"] is False
        assert uid["reason"] == (f"{unreadable} is not readable by other users: environments "
                                 "keep uid 0 with no capabilities")


def test_every_reported_step_holds_in_the_environment(runtime, start):
    """Each step is checked against the environment both ways: enforced
    means in effect, not enforced means not in effect (never claimed)."""
    steps = {s: d["enforced"] for s, d in runtime.capabilities()["isolation"].items()}
    got = probe(runtime, start=start)
    status = got["status"]
    if steps["namespaces"]:
        assert got["hostname"] == "sandbox"
        for ns in ("mnt", "ipc", "uts"):
            assert got["ns"][ns] != host_ns(ns), ns
    else:
        assert got["ns"]["ipc"] == host_ns("ipc")
    if steps["pid_namespace"]:
        assert got["ns"]["pid"] != host_ns("pid")
        assert got["pid"] == 2  # a first start; later ones may share their zygote's
    else:
        assert got["ns"]["pid"] == host_ns("pid")
    if steps["network"]:
        assert got["ns"]["net"] != host_ns("net")
        assert got["interfaces"] == ["lo"]
    else:
        assert got["ns"]["net"] == host_ns("net")
    assert got["root_read_only"] is steps["mounts"]
    if steps["capabilities"]:
        for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert status[key] == ZERO_CAPS, key
    if steps["uid"]:
        uid = got["uid"]
        assert own_uid(uid) and got["gid"] == uid
        assert status["Uid"] == status["Gid"] == "\t".join([str(uid)] * 4)
        assert status["Groups"] == ""
    else:
        # Reported not enforced: the environment really keeps uid 0 ...
        assert got["uid"] == 0
        # ... and the documented fallback holds: no capabilities at all.
        assert status["CapEff"] == status["CapPrm"] == ZERO_CAPS
    assert status["NoNewPrivs"] == ("1" if steps["no_new_privs"] else "0")
    assert status["Seccomp"] == ("2" if steps["seccomp"] else "0")


def shares_zygote_pid_namespace(rt: Runtime, start: str) -> bool:
    """Snapshot environments of a zygote that ran INIT isolated live in its
    pid namespace: it has no capability left to make them one each."""
    return start == "snapshot" and rt.capabilities()["isolation"]["isolated_init"]["enforced"]


def test_environment_has_its_own_pid_namespace(runtime, start):
    """pid 2 under an init of its own: its signals work as anywhere else (pid 1
    would ignore those it has no handler for) and it sees no other process.
    In its zygote's namespace instead, it is not pid 1 either, and sees only
    its own processes (each environment has a uid of its own, and /proc
    lists only what it may ptrace)."""
    assert runtime.capabilities()["isolation"]["pid_namespace"]["enforced"]
    got = probe(runtime, start=start)  # a first start: from the tree, if not cold
    assert got["ns"]["pid"] != host_ns("pid")
    if shares_zygote_pid_namespace(runtime, start):
        shared = invoke_from_zygote(runtime, "probe").payload
        assert shared["ns"]["pid"] not in (host_ns("pid"), got["ns"]["pid"])
        assert shared["pid"] > 2
        assert shared["procs"] == [shared["pid"]]
        assert shared["status"]["NSpid"] == str(shared["pid"])
    assert got["pid"] == 2
    assert got["procs"] == [2]
    assert got["status"]["NSpid"] == "2"


def test_rlimits_reported_are_applied(runtime, start):
    got = probe(runtime, start=start, memory_mb=128)
    limits = got["rlimits"]
    own = "RLIMIT_NPROC" in runtime.capabilities()["rlimits"]
    expected = {resource_name(r): [soft, hard]
                for r, soft, hard in rlimits_for(EnvironmentLimits.for_memory(128), True, own)}
    assert set(runtime.capabilities()["rlimits"]) <= set(expected)
    for name, value in expected.items():
        assert limits[name] == value, name
    assert limits["RLIMIT_CORE"] == [0, 0]
    assert limits["RLIMIT_NOFILE"] == [NOFILE, NOFILE]
    assert limits["RLIMIT_FSIZE"] == [512 * MIB, 512 * MIB]
    assert limits["RLIMIT_CPU"] == [CPU_BACKSTOP_S, CPU_BACKSTOP_S + 5]
    # The memory cgroup is the memory limit: no address-space limit on top.
    assert limits["RLIMIT_AS"] == [resource.RLIM_INFINITY, resource.RLIM_INFINITY]
    assert limits["RLIMIT_NPROC"] == [PIDS_MAX, PIDS_MAX]
    assert "/sandbox/rt-" in got["cgroup"]


def resource_name(number: int) -> str:
    return next(n for n in dir(resource)
                if n.startswith("RLIMIT_") and getattr(resource, n) == number)


# -- isolation off, cgroups off -------------------------------------------------------------
def test_isolation_disabled_reports_and_does_nothing(host_runtime):
    caps = host_runtime.capabilities()
    assert caps["isolation"] == {
        step: {"enforced": False, "reason": "isolation disabled by configuration"}
        for step in STEPS}
    assert caps["cgroup"]["version"] == 1  # cgroups stay
    got = probe(host_runtime)
    assert got["hostname"] == socket.gethostname()
    assert got["ns"] == {n: host_ns(n) for n in ("mnt", "ipc", "uts", "net", "pid")}
    assert got["root_read_only"] is False
    assert got["status"]["NoNewPrivs"] == "0"
    assert got["status"]["Seccomp"] == "0"
    assert "/sandbox/rt-" in got["cgroup"]


def test_isolation_disabled_spec_is_empty():
    iso = Isolation(enabled=False)
    assert iso.supported == dict.fromkeys(STEPS, False)
    spec = iso.spec(network="none", code_dir="/tmp")
    assert spec["unshare"] == 0
    assert spec["private_mounts"] is False
    assert spec["hostname"] is None
    assert spec["loopback_up"] is False
    assert spec["drop_capabilities"] is False
    assert spec["uid"] is None and spec["gid"] is None
    assert spec["no_new_privs"] is False
    assert spec["seccomp"] is None


def test_cgroups_disabled_reports_the_rlimit_fallback(tmp_path):
    with Runtime(tmp_path / "state", cgroups=False) as rt:
        caps = rt.capabilities()
        assert caps["cgroup"] == {"version": None, "parents": {},
                                  "reason": "disabled by configuration",
                                  "stale_runtime_dirs_swept": 0}
        assert caps["memory"] == {"enforced": True, "by": "RLIMIT_AS", "reason": None}
        assert caps["pids"] == {"enforced": False, "by": None,
                                "reason": "disabled by configuration"}
        assert caps["cpu_quota"]["enforced"] is False
        assert caps["oom_detection"]["enforced"] is False
        assert caps["timeout_kills_descendants"]["enforced"] is False
        assert "setsid escapes" in caps["timeout_kills_descendants"]["reason"]
        got = probe(rt, memory_mb=128)
    # The only memory limit left is the address space, with headroom.
    assert got["rlimits"]["RLIMIT_AS"] == [(128 + 512) * MIB] * 2
    assert "/sandbox/rt-" not in got["cgroup"]


LIMIT_KEYS = ("memory", "pids", "cpu_quota", "oom_detection", "timeout_kills_descendants")


def test_cgroups_disabled_every_missing_limit_has_a_reason(tmp_path):
    with Runtime(tmp_path / "state", cgroups=False) as rt:
        caps = rt.capabilities()
    missing = {k: caps[k] for k in LIMIT_KEYS if not caps[k]["enforced"]}
    assert missing
    assert {k: v for k, v in missing.items() if not v.get("reason")} == {}


def test_cpu_follows_memory_off_is_reported(tmp_path):
    with Runtime(tmp_path / "state", cpu_follows_memory=False) as rt:
        caps = rt.capabilities()
    assert caps["cpu_quota"]["enforced"] is False
    assert caps["cpu_quota"]["reason"]


# -- EnvironmentLimits and rlimits_for ------------------------------------------------------------
def test_cpu_follows_memory():
    assert EnvironmentLimits.for_memory(1769).cpu_vcpus == 1.0
    assert EnvironmentLimits.for_memory(3538).cpu_vcpus == 2.0
    assert EnvironmentLimits.for_memory(128).cpu_vcpus == pytest.approx(128 / 1769)
    assert EnvironmentLimits.for_memory(128, cpu_follows_memory=False).cpu_vcpus is None
    limits = EnvironmentLimits.for_memory(256, ephemeral_mb=1024)
    assert (limits.pids_max, limits.ephemeral_mb, limits.address_space_mb) == (PIDS_MAX, 1024,
                                                                               None)


def test_rlimits_for():
    limits = EnvironmentLimits.for_memory(128)
    assert rlimits_for(limits, memory_by_cgroup=True) == [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, 1024, 1024),
        (resource.RLIMIT_FSIZE, 512 * MIB, 512 * MIB),
        (resource.RLIMIT_CPU, CPU_BACKSTOP_S, CPU_BACKSTOP_S + 5),
    ]
    without = rlimits_for(limits, memory_by_cgroup=False)
    assert without[-1] == (resource.RLIMIT_AS, 640 * MIB, 640 * MIB)
    asked = rlimits_for(EnvironmentLimits.for_memory(128, address_space_mb=4096), True)
    assert asked[-1] == (resource.RLIMIT_AS, 4096 * MIB, 4096 * MIB)
    small_tmp = rlimits_for(EnvironmentLimits.for_memory(128, ephemeral_mb=10), True)
    assert (resource.RLIMIT_FSIZE, 10 * MIB, 10 * MIB) in small_tmp


# -- Isolation.spec -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def iso():
    return Isolation()


def test_spec_network_none_and_host(iso):
    if not iso.supported["network"] or not iso.supported["namespaces"]:
        pytest.skip(f"not enforced here: {iso.reasons}")
    none = iso.spec(network="none")
    assert none["unshare"] == CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
    assert none["loopback_up"] is True
    host = iso.spec(network="host")
    assert host["unshare"] == CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    assert host["loopback_up"] is False
    assert none["hostname"] == host["hostname"] == "sandbox"


def test_spec_tmp_size_and_kept_paths(iso, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    extra = tmp_path / "lib"
    extra.mkdir()
    spec = iso.spec(code_dir=str(code), ephemeral_mb=100, read_paths=(str(extra), "/usr/lib"))
    assert spec["tmp_options"] == "size=100m,mode=1777"
    # Directories under /tmp the private /tmp would hide are bound back; others need not be.
    assert str(code.resolve()) in spec["keep_paths"]
    assert str(extra.resolve()) in spec["keep_paths"]
    assert "/usr/lib" not in spec["keep_paths"]
    # Kept are what the private /tmp or a covered directory would hide.
    assert all(p.startswith("/tmp/") or any(p.startswith(m + "/") for m in spec["mask_paths"])
               for p in spec["keep_paths"])


def test_spec_switches_uid_only_where_the_code_is_readable(iso, tmp_path):
    if not iso.supported["uid"]:
        assert iso.spec(code_dir="/")["uid_per_environment"] is False
        assert iso.spec(code_dir="/")["uid"] is None  # never switched when not supported
        return
    readable = tempfile.mkdtemp(dir="/tmp")
    try:
        os.chmod(readable, 0o755)
        assert readable_by_others(readable) is None
        spec = iso.spec(code_dir=readable)
        assert spec["uid_per_environment"] is True
        assert spec["uid"] is None and spec["undumpable"] is False  # the lease fills it in
        private = os.path.join(readable, "private")
        os.mkdir(private, 0o700)
        spec = iso.spec(code_dir=private)
        assert spec["uid_per_environment"] is False and spec["uid"] is None
        assert spec["mask_paths"] == [] and spec["undumpable"] is True
    finally:
        shutil.rmtree(readable)


def test_plan_paths_covers_directories_others_may_not_enter(tmp_path):
    locked = tmp_path / "locked"
    inner = locked / "a" / "b"
    inner.mkdir(parents=True)
    closed = locked / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(locked, 0o700)
    keep, masks, unreadable = plan_paths([str(inner), "/usr/lib", "/nonexistent"])
    # Under /tmp: the private /tmp already hides it, so it is bound back there.
    assert (keep, masks, unreadable) == ([str(inner)], [], None)
    keep, masks, unreadable = plan_paths([str(closed)])
    assert unreadable == str(closed)
    if readable_by_others("/root") is not None and os.path.isdir("/root"):
        os.makedirs("/root/.sandbox-test/x/y", exist_ok=True)
        os.chmod("/root/.sandbox-test/x", 0o755)
        try:
            keep, masks, unreadable = plan_paths(
                ["/root/.sandbox-test/x/y", "/root/.sandbox-test/x", "/usr/lib"])
            assert (keep, masks, unreadable) == (["/root/.sandbox-test/x"], ["/root"], None)
        finally:
            shutil.rmtree("/root/.sandbox-test")


def test_spec_seccomp_program_is_the_probed_one(iso):
    spec = iso.spec()
    if iso.supported["seccomp"]:
        assert spec["seccomp"] == iso.seccomp_program and spec["seccomp"]
    else:
        assert spec["seccomp"] is None


# -- readable_by_others ----------------------------------------------------------------------------
@pytest.fixture
def public_dir():
    path = tempfile.mkdtemp(dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_readable_by_others(public_dir):
    assert readable_by_others(public_dir) is None
    private = os.path.join(public_dir, "private")
    os.mkdir(private)
    os.chmod(private, 0o700)
    assert readable_by_others(private) == private
    inner = os.path.join(private, "inner.py")
    with open(inner, "w") as f:
        f.write("x = 1\n")
    os.chmod(inner, 0o644)
    assert readable_by_others(inner) == private  # the first directory that stops others
    open_file = os.path.join(public_dir, "open.py")
    with open(open_file, "w") as f:
        f.write("x = 1\n")
    os.chmod(open_file, 0o644)
    assert readable_by_others(open_file) is None
    os.chmod(open_file, 0o600)
    assert readable_by_others(open_file) == open_file
    # Search permission is enough for a directory above.
    passage = os.path.join(public_dir, "passage")
    os.mkdir(passage)
    os.chmod(passage, 0o711)
    target = os.path.join(passage, "t.py")
    with open(target, "w") as f:
        f.write("")
    os.chmod(target, 0o644)
    assert readable_by_others(target) is None
    # A directory itself must be readable, not only searchable.
    assert readable_by_others(passage) == passage
    missing = os.path.join(public_dir, "missing")
    assert readable_by_others(missing) == missing
    # Symbolic links are followed to what they name.
    link = os.path.join(public_dir, "link")
    os.symlink(private, link)
    assert readable_by_others(link) == private


def test_readable_by_others_on_root_home():
    if stat.S_IMODE(os.stat("/root").st_mode) & 0o005 == 0o005:
        pytest.skip("/root is open to others here")
    assert readable_by_others("/root") == "/root"


# -- the seccomp program ----------------------------------------------------------------------
RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_KILL_PROCESS = 0x80000000


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("<HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]


def test_seccomp_program_shape():
    program, unknown = _native.seccomp_program(DENIED_SYSCALLS, [TIOCSTI], PERSONALITY_FLAGS)
    assert unknown == []  # every denied name exists on this architecture
    assert program and len(program) % 8 == 0  # struct sock_filter is 8 bytes
    returns = {k for code, _, _, k in instructions(program) if code == RET_K}
    assert SECCOMP_RET_ALLOW in returns
    assert SECCOMP_RET_KILL_PROCESS in returns


def test_seccomp_program_reports_unknown_names():
    program, unknown = _native.seccomp_program(["ptrace", "no_such_syscall", "mount",
                                                "another_fake"], [], [])
    assert unknown == ["no_such_syscall", "another_fake"]
    assert len(program) % 8 == 0
    empty, nothing = _native.seccomp_program([], [], [])
    assert nothing == [] and len(empty) % 8 == 0
    assert len(program) > len(empty)
    # With no rules, the only kill left is for system calls of another architecture.
    kills = [k for c, _, _, k in instructions(empty)
             if c == RET_K and k == SECCOMP_RET_KILL_PROCESS]
    assert len(kills) <= 1


def test_isolation_reports_unknown_syscall_names(monkeypatch):
    monkeypatch.setattr(iso_mod, "DENIED_SYSCALLS", (*DENIED_SYSCALLS, "no_such_syscall"))
    iso = Isolation()
    if not iso.supported["seccomp"] and "libseccomp" in iso.reasons.get("seccomp", ""):
        pytest.skip(iso.reasons["seccomp"])
    assert iso.supported["seccomp"] is True
    assert iso.reasons["seccomp"] == "unknown here, not filtered: no_such_syscall"
    assert iso.describe()["seccomp"] == {
        "enforced": True, "reason": "unknown here, not filtered: no_such_syscall"}


# -- a uid of its own ------------------------------------------------------------------------
def test_environments_run_as_distinct_uids_returned_when_they_end(runtime, start):
    if "RLIMIT_NPROC" not in runtime.capabilities()["rlimits"]:
        pytest.skip(f"no per-environment uids here: {runtime.capabilities()['run_as']}")
    make_function(runtime, "who", "import os, time\n"
                  "def handler(event, context):\n"
                  "    time.sleep(event.get('s', 0))\n"
                  "    return os.getuid()\n", start=start)
    uids = runtime._host.isolation.uids
    assert uids is not None
    held: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: held.__setitem__(
        i, runtime.invoke("who", {"s": 0.5}).payload)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(held.values())) == 3 and all(map(own_uid, held.values())), held
    # A zygote that ran INIT isolated has a uid of its own too, until it ends.
    zygote = 1 if shares_zygote_pid_namespace(runtime, start) else 0
    assert uids.leased == 3 + zygote
    runtime.shutdown_idle("who", wait=True)
    assert wait_for(lambda: uids.leased == zygote, 3), uids.leased


def test_proc_lists_only_the_environments_own_processes(runtime, start):
    if not runtime._host.isolation.proc_hidepid or "RLIMIT_NPROC" not in \
            runtime.capabilities()["rlimits"]:
        pytest.skip("no per-environment uid or no per-mount /proc options here")
    got = probe(runtime, start=start)
    assert got["procs"] == [got["pid"]]  # not even its namespace's init


def test_directories_others_may_not_enter_show_only_what_the_environment_reads(runtime,
                                                                                start):
    _, masks, _ = plan_paths(runtime_paths())
    if not masks:
        pytest.skip("every runtime directory is open to other users here")
    keep, _, _ = plan_paths(runtime_paths())
    got = probe(runtime, start=start, event={"masks": masks})
    for mask in masks:
        expected = sorted({k[len(mask) + 1:].split("/")[0] for k in keep
                           if k.startswith(mask + "/")})
        assert got["masked"][mask] == expected, mask


# -- a pid namespace of its own ------------------------------------------------------------
DAEMON_SOURCE = """
import os, time

def handler(event, context):
    if event.get("orphans"):
        for _ in range(event["orphans"]):  # children that exit, left to be reaped
            if os.fork() == 0:
                if os.fork() == 0:
                    os._exit(0)
                os._exit(0)
            os.wait()
        time.sleep(0.3)
        zombies = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        zombies.append(int(entry))
        return {"zombies": zombies}
    if os.fork() == 0:  # a daemon: double fork, new session, ignores SIGTERM
        os.setsid()
        if os.fork() == 0:
            import signal
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(120)
        os._exit(0)
    os.wait()
    return "started"
"""


def test_pid_namespace_takes_daemons_along_without_cgroups(tmp_path, start):
    """Where no cgroup can kill an environment's descendants, its namespace's
    init going down does (or, in its zygote's namespace, the sweep of its own
    uid): a setsid double-forked daemon does not survive."""
    with Runtime(tmp_path / "s", cgroups=False, cpu_follows_memory=False) as rt:
        if not rt.capabilities()["isolation"]["pid_namespace"]["enforced"]:
            pytest.skip("no pid namespace here")
        make_function(rt, "d", DAEMON_SOURCE, start=start)
        r = rt.invoke("d", {})
        assert r.payload == "started"
        env = r.report["pid"]
        uid = psutil.Process(env).uids().real
        host_side = {p for p in psutil.pids()
                     if p != env and _in_pid_ns_of(p, env) and _uid(p) == uid}
        assert host_side, "the daemon is not running"
        assert rt.shutdown_idle("d", wait=True) == 1
        assert not wait_gone(host_side | {env}, 3), "the daemon outlived its environment"


def test_orphans_are_reaped_inside_the_namespace(runtime, start):
    make_function(runtime, "o", DAEMON_SOURCE, start=start)
    r = runtime.invoke("o", {"orphans": 5})
    assert r.function_error is None, r.payload
    assert r.payload == {"zombies": []}


def test_namespace_inits_end_with_their_environments(tmp_path):
    """Each environment's init goes with it; the namespaces a zygote made
    ahead (with their inits) go with the zygote."""
    with Runtime(tmp_path / "s") as rt:
        envs = []
        for start in ("snapshot", "cold"):
            make_function(rt, f"f-{start}", "def handler(e, c):\n    return 1\n", start=start)
            envs.append(rt.invoke(f"f-{start}", {}).report["pid"])
        used = {p for p in _inits() if any(_in_pid_ns_of(p, env) for env in envs)}
        assert len(used) == 2
        assert rt.shutdown_idle(wait=True) == 2
        assert not wait_gone(used, 3)
    assert wait_for(lambda: not _inits(), 3), _inits()


def _inits() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if _name(p) == "sandbox-init"}


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.NoSuchProcess:
        return ""


def _uid(pid: int) -> int | None:
    try:
        return psutil.Process(pid).uids().real
    except psutil.NoSuchProcess:
        return None


def _in_pid_ns_of(pid: int, other: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{other}/ns/pid")
    except OSError:
        return False


def test_one_configured_user_for_every_environment(tmp_path, start):
    with Runtime(tmp_path / "s", user="nobody", cpu_follows_memory=False) as rt:
        caps = rt.capabilities()
        if not caps["isolation"]["uid"]["enforced"]:
            pytest.skip(caps["isolation"]["uid"]["reason"])
        assert caps["run_as"] == "user nobody (uid 65534, gid 65534)"
        # The uid is shared, so RLIMIT_NPROC would count other processes too.
        assert "RLIMIT_NPROC" not in caps["rlimits"]
        make_function(rt, "who", "import ctypes, os\n"
                      "def handler(event, context):\n"
                      "    libc = ctypes.CDLL(None)\n"
                      "    return [os.getuid(), os.getgid(), libc.prctl(3, 0, 0, 0, 0)]\n",
                      start=start)
        # Environments sharing a uid are not dumpable (PR_GET_DUMPABLE is 0).
        assert rt.invoke("who", {}).payload == [65534, 65534, 0]


def test_an_unknown_user_is_refused_by_name(tmp_path):
    from sandbox.errors import InvalidParameterValueException

    with pytest.raises(InvalidParameterValueException,
                       match="no such user to run environments as: 'no-such-user'"):
        Runtime(tmp_path / "s", user="no-such-user")
    # Nothing was left holding the state dir.
    Runtime(tmp_path / "s").close()


# -- the filter a function zygote runs INIT under ---------------------------------------------
ZYGOTE_FILTER_PROBE = """
import ctypes, os, signal, sys
from sandbox.limits.isolation import seccomp_programs

_, program, _ = seccomp_programs()
libc = ctypes.CDLL(None, use_errno=True)

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

CALLS = {
    "unshare(NEWUSER|NEWNET)": lambda: libc.unshare(0x10000000 | 0x40000000),
    "unshare(NEWNET) in it": lambda: (libc.unshare(0x10000000), libc.unshare(0x40000000)),
    "unshare(NEWPID)": lambda: libc.unshare(0x20000000),
    "unshare(NEWCGROUP)": lambda: libc.unshare(0x02000000),
    "mount(MS_BIND)": lambda: libc.mount(None, b"/nonexistent", None, 0x1000, None),
    "mount(MS_REMOUNT)": lambda: libc.mount(None, b"/", None, 0x20, None),
    "setns": lambda: libc.setns(-1, 0),
}
killed = {}
for name, call in CALLS.items():
    pid = os.fork()
    if pid == 0:
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        prog = SockFprog(len(program) // 8, program)
        if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
            os._exit(3)
        call()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    killed[name] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS
print(repr(killed))
"""


def test_a_function_zygotes_filter_allows_only_what_its_children_need():
    """INIT in a function zygote may make user, mount, IPC, UTS and network
    namespaces (its children do: the user namespace first, the others once
    inside it) and bind mounts, and nothing else of the kind."""
    import ast
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ZYGOTE_FILTER_PROBE], capture_output=True,
                         timeout=60, cwd=str(os.path.dirname(os.path.dirname(__file__))))
    assert out.returncode == 0, out.stderr.decode()
    assert ast.literal_eval(out.stdout.decode()) == {
        "unshare(NEWUSER|NEWNET)": False, "unshare(NEWNET) in it": False,
        "unshare(NEWPID)": True, "unshare(NEWCGROUP)": True,
        "mount(MS_BIND)": False, "mount(MS_REMOUNT)": True, "setns": True}
