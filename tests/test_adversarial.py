"""Adversarial handlers against the isolation layer (issue 3): each one tries
to escape a limit or an isolation step, and each test asserts the exact
outcome the sandbox reports (status, errorType, signal, flags) and that
nothing of the attempt survives.

An isolated handler cannot write to the host (its root is read-only and /tmp
is a private tmpfs), so handlers are observed through their return values,
the invocation's report and log tail, the function's log file and psutil.
Where the host reports an isolation step as not enforced
(``Runtime.capabilities()``), the behavioural check of that step is skipped
with the reason the runtime gives.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import (
    descendants,
    function_zygote,
    invoke_from_zygote,
    is_alive,
    make_function,
    spares_of,
    tree_zygote_pids,
    wait_for,
    wait_gone,
)

from sandbox import Runtime

MIB = 1024 * 1024
SIGSYS = int(signal.SIGSYS)
X86_64 = platform.machine() == "x86_64"

# One handler, many attacks: the event's "a" picks one.
ADVERSARY = r'''
import ctypes
import errno
import mmap
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.syscall.restype = ctypes.c_long
MIB = 1024 * 1024


def name(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno))


def status():
    keys = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
            "NoNewPrivs", "Seccomp")
    with open("/proc/self/status") as f:
        pairs = (line.rstrip("\n").split(":", 1) for line in f)
        return {k: v.strip() for k, v in pairs if k in keys}


def spin():
    while True:
        pass


def bomb():
    # Every process of the bomb forks for ever; after a failure it naps, so
    # that the handler's own process gets the CPU to see its fork fail too.
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.05)


def fork_bomb(event):
    while True:
        try:
            pid = os.fork()
        except OSError as exc:
            print(f"fork failed: {type(exc).__name__} {name(exc)}", flush=True)
            break
        if pid == 0:
            bomb()
    time.sleep(3600)


def memory_hog(event):
    size = event["mb"] * MIB
    area = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        area[offset] = 1
    return "survived"


def untouched(event):
    area = mmap.mmap(-1, 1 << 30)
    return {"mapped": len(area)}


def busy_threads(event):
    for _ in range(event["threads"]):
        threading.Thread(target=spin, daemon=True).start()
    spin()


def file_size(event):
    limit = event["limit"]
    out = {}
    fd = os.open("/tmp/big", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        out["last_byte_below"] = os.pwrite(fd, b"x", limit - 1)
        try:
            os.pwrite(fd, b"x", limit)
            out["at_limit"] = "written"
        except OSError as exc:
            out["at_limit"] = name(exc)
        try:
            os.ftruncate(fd, limit + 1)
            out["truncate_past"] = "done"
        except OSError as exc:
            out["truncate_past"] = name(exc)
    finally:
        os.close(fd)
    out["size"] = os.stat("/tmp/big").st_size
    return out


def fill_tmp(event):
    st = os.statvfs("/tmp")
    out = {"tmp_mb": st.f_blocks * st.f_frsize // MIB, "written_mb": 0, "error": None}
    chunk = b"\0" * MIB
    # Files smaller than RLIMIT_FSIZE, so only the tmpfs size can stop them.
    for index in range(4):
        try:
            with open(f"/tmp/fill-{index}", "wb", buffering=0) as f:
                for _ in range(event["file_mb"]):
                    f.write(chunk)
                    out["written_mb"] += 1
        except OSError as exc:
            out["error"] = name(exc)
            break
    return out


def open_fds(event):
    names = os.listdir("/proc/self/fd")
    fds = []
    for n in names:
        try:
            os.fstat(int(n))
        except OSError:  # the directory listdir had open
            continue
        fds.append(int(n))
    return {str(fd): os.readlink(f"/proc/self/fd/{fd}") for fd in sorted(fds)}


def daemon(event):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", event["seconds"]])
        os._exit(0)
    os.waitpid(pid, 0)
    print("daemon started", flush=True)
    time.sleep(3600)


def stop_self(event):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"pid={os.getpid()}", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    return "resumed"


def ignore_term(event):
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    print(f"pid={os.getpid()}", flush=True)
    while True:
        time.sleep(0.01)


def tiocsti(event):
    import fcntl
    import termios
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    return "injected"


def ipc_leave(event):
    with open("/dev/shm/leftover", "w") as f:
        f.write("left")
    return {"shmid": libc.shmget(event["key"], 4096, 0o1000 | 0o600)}


def ipc_look(event):
    shmid = libc.shmget(event["key"], 0, 0)
    return {"shm_file": os.path.exists("/dev/shm/leftover"),
            "shmid": shmid, "shm_errno": errno.errorcode.get(ctypes.get_errno())
            if shmid < 0 else None}


def privileges(event):
    out = {"self": status(), "uid": os.getuid()}
    shutil.copy("/bin/cat", "/tmp/cat")
    os.chmod("/tmp/cat", 0o4755)
    out["suid_mode"] = oct(os.stat("/tmp/cat").st_mode & 0o7777)
    child = subprocess.run(["/tmp/cat", "/proc/self/status"], capture_output=True, text=True)
    out["suid_child"] = {k: v.strip() for k, v in
                         (line.split(":", 1) for line in child.stdout.splitlines())
                         if k in ("Uid", "CapPrm", "CapEff", "NoNewPrivs")}
    su = subprocess.run(["/bin/su", "root", "-c", "cat /proc/self/status"],
                        capture_output=True, text=True)
    out["su"] = {"returncode": su.returncode, "stderr": su.stderr.strip(),
                 "CapEff": [line.split()[1] for line in su.stdout.splitlines()
                            if line.startswith("CapEff:")]}
    try:
        os.setuid(65534)
        os.setuid(0)
        out["setuid_back_to_0"] = "done"
    except OSError as exc:
        out["setuid_back_to_0"] = name(exc)
    return out


def network(event):
    out = {"interfaces": [n for _, n in socket.if_nameindex()]}
    # Only where nothing can leave the machine: a namespace with loopback alone.
    if event.get("outside") and out["interfaces"] == ["lo"]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(("192.0.2.1", 80))
            out["outside"] = "connected"
        except OSError as exc:
            out["outside"] = name(exc)
        finally:
            s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.sendto(b"x", ("192.0.2.1", 53))
            out["udp"] = "sent"
        except OSError as exc:
            out["udp"] = name(exc)
        finally:
            u.close()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname(), timeout=2)
    conn, _ = server.accept()
    client.sendall(b"ping")
    out["loopback"] = conn.recv(4).decode()
    for s in (client, conn, server):
        s.close()
    return out


def tmp_write(event):
    with open("/tmp/secret", "w") as f:
        f.write("s3cret")
    return os.getpid()


def tmp_hold(event):
    time.sleep(event["seconds"])
    return {"pid": os.getpid(), "sees_secret": os.path.exists("/tmp/secret")}


def tmp_look(event):
    out = {"pid": os.getpid()}
    try:
        with open("/tmp/secret") as f:
            out["direct"] = f.read()
    except OSError as exc:
        out["direct"] = name(exc)
    out["via_proc"] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/root/tmp/secret") as f:
                out["via_proc"][entry] = f.read()
        except OSError:
            pass
    return out


def peek_memory(event):
    # Reads the first bytes of the heap of every other process it can.
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                heap = next(line for line in f if line.rstrip().endswith("[heap]"))
            with open(f"/proc/{entry}/mem", "rb") as f:
                f.seek(int(heap.split("-")[0], 16))
                out[entry] = f.read(8).hex()
        except (OSError, StopIteration):
            pass
    return out


def signal_pid(event):
    try:
        os.kill(event["pid"], 0)
        return "allowed"
    except OSError as exc:
        return name(exc)


def clone_newuser(event):
    # Raw clone(2) with CLONE_NEWUSER: like unshare, a new namespace.
    r, w = os.pipe()
    pid = libc.syscall(56, 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        try:
            os.write(w, os.readlink("/proc/self/ns/user").encode())
        finally:
            os._exit(0)
    if pid < 0:
        return {"clone": errno.errorcode.get(ctypes.get_errno())}
    os.close(w)
    child_ns = os.read(r, 100).decode()
    os.waitpid(pid, 0)
    return {"clone": "done", "new_userns": child_ns != os.readlink("/proc/self/ns/user")}


SYSCALLS = {
    "unshare": lambda: libc.unshare(0),
    "setns": lambda: libc.setns(-1, 0),
    "ptrace": lambda: libc.ptrace(0, 0, 0, 0),
    "mount": lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None),
    "personality": lambda: libc.personality(0x0040000),  # ADDR_NO_RANDOMIZE
    "keyctl": lambda: libc.syscall(250, 0, 0, 0, 0, 0),
    "bpf": lambda: libc.syscall(321, 0, 0, 0),
    "perf_event_open": lambda: libc.syscall(298, 0, 0, -1, -1, 0),
    "io_uring_setup": lambda: libc.syscall(425, 1, 0),
    "personality_query": lambda: libc.personality(0xFFFFFFFF),
}


def syscall(event):
    call = SYSCALLS[event["name"]]
    if event.get("thread"):
        t = threading.Thread(target=call)
        t.start()
        t.join()
        time.sleep(0.2)
        return "thread returned"
    return {"returned": call()}


def lift_limits(event):
    import resource
    out = {}
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            for n in names.split(","):
                own[n] = path
    attempts = {
        "cgroup_escape": ("/sys/fs/cgroup/pids/cgroup.procs", str(os.getpid())),
        "pids_max": (f"/sys/fs/cgroup/pids{own['pids']}/pids.max", "max"),
        "memory_limit": (f"/sys/fs/cgroup/memory{own['memory']}/memory.limit_in_bytes", "-1"),
    }
    for key, (path, value) in attempts.items():
        try:
            with open(path, "w") as f:
                f.write(value)
            out[key] = "written"
        except OSError as exc:
            out[key] = name(exc)
    for key, res in (("nofile", resource.RLIMIT_NOFILE), ("fsize", resource.RLIMIT_FSIZE)):
        try:
            resource.setrlimit(res, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            out[key] = "raised"
        except (ValueError, OSError) as exc:
            out[key] = type(exc).__name__
    try:
        os.nice(-5)
        out["nice"] = "raised"
    except OSError as exc:
        out["nice"] = name(exc)
    try:
        socket.sethostname("escaped")
        out["hostname"] = "set"
    except OSError as exc:
        out["hostname"] = name(exc)
    return out


def int80(event):
    # getpid through the i386 entry point (int 0x80): another architecture
    # for seccomp, which must not be a way around the filter.
    code = bytes([0xB8, 0x14, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20; int 0x80; ret
    buf = mmap.mmap(-1, mmap.PAGESIZE,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
    if not event.get("thread"):
        return {"returned": fn()}
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(0.5)
    return {"thread_alive": t.is_alive()}


def loopback_listen(event):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", event["port"]))
    server.listen()
    time.sleep(event["seconds"])
    server.close()
    return {"pid": os.getpid()}


def loopback_connect(event):
    # Refused may only mean the listener is not up yet: retry until retry_s.
    give_up = time.monotonic() + event.get("retry_s", 0)
    while True:
        client = socket.socket()
        client.settimeout(1)
        try:
            client.connect(("127.0.0.1", event["port"]))
            return "connected"
        except OSError as exc:
            if exc.errno != errno.ECONNREFUSED or time.monotonic() > give_up:
                return name(exc)
        finally:
            client.close()
        time.sleep(0.02)


def read_only(event):
    targets = {"code": os.path.join(os.environ["LAMBDA_TASK_ROOT"], "x"), "root": "/x",
               "etc": "/etc/sandbox-x", "tmp": "/tmp/x", "dev_shm": "/dev/shm/x"}
    out = {}
    for key, path in targets.items():
        try:
            with open(path, "w") as f:
                f.write("x")
            out[key] = "written"
        except OSError as exc:
            out[key] = name(exc)
    return out


def handler(event, context):
    action = event.get("a", "ok")
    if action == "ok":
        return {"pid": os.getpid()}
    if action == "spin":
        spin()
    if action == "sleep":
        time.sleep(3600)
    return globals()[action](event)
'''


# Module code (INIT) that reports what it could do; the handler returns it.
INIT_PROBE = r'''
import os

INIT = {}
with open("/proc/self/status") as f:
    for line in f:
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp"):
            INIT[key] = value.strip()
INIT["mnt_ns"] = os.readlink("/proc/self/ns/mnt")
INIT["ipc_ns"] = os.readlink("/proc/self/ns/ipc")
try:
    with open(os.environ["ESCAPE_PATH"], "w") as f:
        f.write("written by INIT")
    INIT["host_write"] = "written"
except OSError as exc:
    INIT["host_write"] = type(exc).__name__
with open("/proc/self/cgroup") as f:
    INIT["cgroups"] = f.read()


def handler(event, context):
    return INIT
'''

INIT_HOG = """
import mmap

area = mmap.mmap(-1, 256 << 20)
for offset in range(0, len(area), mmap.PAGESIZE):
    area[offset] = 1


def handler(event, context):
    return "survived"
"""


def adversary(runtime: Runtime, name: str = "adv", **config) -> str:
    """The adversarial function. A snapshot one's zygote is booted first, so
    that the attacks run in environments forked from it (their isolation set
    up in user namespaces of their own), not in the first start's, which
    forks from the zygote tree."""
    make_function(runtime, name, ADVERSARY, **config)
    pool = runtime._functions[name].pool
    if config.get("start", "snapshot") == "snapshot" and pool.isolated_init:
        runtime.invoke(name, {"a": "ok"})
        function_zygote(runtime, name)
        runtime.shutdown_idle(name, wait=True)
    return name


def assert_timeout(r, timeout_s: float) -> None:
    assert r.function_error == "Unhandled"
    assert r.payload["errorType"] == "Sandbox.Timedout", r.payload
    assert r.payload["errorMessage"].endswith(f"Task timed out after {timeout_s:.2f} seconds")
    report = r.report
    assert report["status"] == "timeout", report
    assert report["killed_by_sandbox"] is True
    assert report["oom_killed"] is False
    assert report["duration_ms"] == timeout_s * 1000.0
    assert report["wall_time_ms"] >= timeout_s * 1000.0


def assert_signal(r, signum: int) -> None:
    assert r.function_error == "Unhandled"
    assert r.payload["errorType"] == "Runtime.ExitError", r.payload
    name = signal.strsignal(signum).lower()
    assert r.payload["errorMessage"].endswith(f"Runtime exited with error: signal: {name}")
    report = r.report
    assert report["status"] == "signal", report
    assert report["signal"] == signum
    assert report["exit_code"] is None
    assert report["killed_by_sandbox"] is False
    assert report["oom_killed"] is False


def logged_pid(r) -> int:
    match = re.search(r"pid=(\d+)", r.log_tail)
    assert match, r.log_tail
    return int(match.group(1))


def cgroup_members(rt: Runtime) -> set[int]:
    """Live processes in any environment cgroup of ``rt``'s runtime directory (its
    zygotes live in zygote-* cgroups there, on purpose, and are not counted)."""
    marker = f"/{os.path.basename(next(iter(rt._host.cgroup.runtime_dirs.values())))}/env-"
    members = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        if marker in text and is_alive(int(entry)):
            members.add(int(entry))
    return members


def environment_processes() -> set[int]:
    """Live descendants of this process that are not zygotes, nor the inits of
    pid namespaces a zygote made ahead (test_isolation checks that inits end)."""
    pids = set()
    for pid in descendants():
        try:
            cmdline = psutil.Process(pid).cmdline()
            if not any("sandbox.worker.zygote" in arg or arg.endswith("/sandbox-init")
                       for arg in cmdline):
                pids.add(pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def isolation_step(rt: Runtime, step: str) -> None:
    """Skips the test unless ``step`` is reported enforced (with the reason)."""
    described = rt.capabilities()["isolation"][step]
    if not described["enforced"]:
        assert described["reason"], f"{step} not enforced and no reason given"
        pytest.skip(f"{step} not enforced on this host: {described['reason']}")


@pytest.fixture(autouse=True)
def _needs_cgroups(runtime):
    if runtime.capabilities()["cgroup"]["version"] is None:
        pytest.skip(f"no cgroups: {runtime.capabilities()['cgroup']['reason']}")


# -- resource limits -----------------------------------------------------------------------
def test_fork_bomb_is_contained(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=3, memory_mb=1769)
    assert runtime.capabilities()["pids"]["enforced"]
    pids_dir = runtime._host.cgroup.runtime_dirs["pids"]
    seen = {"current": 0, "max": 0, "refused": 0}
    done = threading.Event()

    def watch() -> None:  # the environment's pids cgroup, from the host side
        while not done.is_set():
            for env in [e for e in os.listdir(pids_dir) if e.startswith("env-")]:
                try:
                    current = int(Path(pids_dir, env, "pids.current").read_text())
                    limit = int(Path(pids_dir, env, "pids.max").read_text())
                    events = Path(pids_dir, env, "pids.events").read_text().split()
                except (OSError, ValueError):
                    continue
                seen["current"] = max(seen["current"], current)
                seen["max"] = limit
                seen["refused"] = max(seen["refused"], int(events[events.index("max") + 1]))
            time.sleep(0.02)

    before = environment_processes()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = runtime.invoke(fn, {"a": "fork_bomb"})
    finally:
        done.set()
        watcher.join()
    assert_timeout(r, 3)
    # Contained: the count reached pids.max and forks beyond it were refused,
    # by the cgroup or, where the environment has a uid of its own, first by
    # RLIMIT_NPROC at the same count (the handler's own fork failing shows as
    # EAGAIN when it got the CPU to try).
    assert seen["max"] == 1024
    assert seen["current"] == 1024, seen
    if "RLIMIT_NPROC" not in runtime.capabilities()["rlimits"]:
        assert seen["refused"] > 0, seen
    if "fork failed" in r.log_tail:
        assert "fork failed: BlockingIOError EAGAIN" in r.log_tail
    # Nothing of it is left, wherever its processes were reparented.
    assert wait_for(lambda: not cgroup_members(runtime), timeout=5), cgroup_members(runtime)
    assert not wait_gone(environment_processes() - before)
    # The host is fine: the next invocation starts a new environment and works.
    after = runtime.invoke(fn, {})
    assert after.function_error is None
    assert after.report["start"] == start


def test_memory_hog_is_out_of_memory(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=10, memory_mb=128)
    r = runtime.invoke(fn, {"a": "memory_hog", "mb": 256})
    assert r.function_error == "Unhandled"
    assert r.payload["errorType"] == "Runtime.OutOfMemory", r.payload
    assert r.payload["errorMessage"].endswith("Runtime exited with error: signal: killed")
    report = r.report
    assert report["status"] == "oom", report
    assert report["oom_killed"] is True
    assert report["killed_by_sandbox"] is False
    assert report["signal"] == signal.SIGKILL
    assert report["max_memory_used_mb"] == 128
    assert report["memory_size_mb"] == 128
    assert runtime.invoke(fn, {}).function_error is None


def test_memory_just_under_the_limit_is_not_oom(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=10, memory_mb=128)
    r = runtime.invoke(fn, {"a": "memory_hog", "mb": 64})
    assert r.payload == "survived"
    assert r.report["status"] == "ok"
    assert r.report["oom_killed"] is False
    # The peak comes from the cgroup: the 64 MiB touched are in it.
    assert 64 <= r.report["max_memory_used_mb"] < 128


def test_untouched_large_allocation_is_not_oom(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=5, memory_mb=128)
    r = runtime.invoke(fn, {"a": "untouched"})
    assert r.function_error is None, r.payload
    assert r.payload == {"mapped": 1 << 30}
    assert r.report["status"] == "ok"
    assert r.report["oom_killed"] is False
    assert r.report["max_memory_used_mb"] < 64


def test_busy_loop_times_out(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=1, memory_mb=128)
    r = runtime.invoke(fn, {"a": "spin"})
    assert_timeout(r, 1)
    # CPU follows memory: 128 MB is 128/1769 of a vCPU (~72 ms per second).
    assert runtime.capabilities()["cpu_quota"]["enforced"]
    assert r.report["cpu_time_ms"] < 250
    assert runtime.invoke(fn, {}).function_error is None


def test_busy_loop_on_several_threads_times_out(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=1, memory_mb=128)
    r = runtime.invoke(fn, {"a": "busy_threads", "threads": 4})
    assert_timeout(r, 1)
    # Five spinning threads still get 128/1769 of a vCPU between them.
    assert r.report["cpu_time_ms"] < 250
    assert wait_for(lambda: not cgroup_members(runtime), timeout=5)


def test_sleep_forever_times_out_by_wall_clock(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=1)
    r = runtime.invoke(fn, {"a": "sleep"})
    assert_timeout(r, 1)
    assert r.report["wall_time_ms"] < 1900
    # Wall clock, not CPU time: the sleeper used almost none.
    assert r.report["cpu_time_ms"] < 500


def test_writing_past_the_file_size_limit_is_efbig(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=5)
    limit = 512 * MIB  # RLIMIT_FSIZE is the ephemeral storage size
    r = runtime.invoke(fn, {"a": "file_size", "limit": limit})
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of a kill.
    assert r.payload == {"last_byte_below": 1, "at_limit": "EFBIG",
                         "truncate_past": "EFBIG", "size": limit}
    assert r.report["status"] == "ok"


def test_filling_tmp_is_enospc(runtime, start):
    # 1 GiB of memory: the 512 MiB tmpfs fills before the memory cgroup does.
    fn = adversary(runtime, start=start, timeout_s=10, memory_mb=1024)
    r = runtime.invoke(fn, {"a": "fill_tmp", "file_mb": 300})
    assert r.function_error is None, r.payload
    assert r.payload["tmp_mb"] == 512
    assert r.payload["error"] == "ENOSPC"
    assert 500 <= r.payload["written_mb"] <= 512
    assert r.report["status"] == "ok"


# -- what the environment inherits -----------------------------------------------------------
def test_only_stdio_and_the_channel_are_open(runtime, start):
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "open_fds"})
    fds = r.payload
    assert sorted(fds, key=int) == ["0", "1", "2", "3"], fds
    assert fds["0"] == "/dev/null"
    assert fds["1"] == fds["2"] and fds["1"].startswith("/memfd:env-")
    assert fds["3"].startswith("socket:[")


# -- killing at the deadline -------------------------------------------------------------------
def test_double_forked_setsid_daemon_does_not_survive(runtime, start):
    fn = adversary(runtime, start=start, timeout_s=1)
    seconds = f"{4000 + os.getpid() % 1000}.{'12' if start == 'cold' else '34'}5"
    argv = ["sleep", seconds]
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(p.pid for p in psutil.process_iter(["cmdline"])
                        if p.info["cmdline"] == argv)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = runtime.invoke(fn, {"a": "daemon", "seconds": seconds})
    finally:
        done.set()
        watcher.join()
    assert_timeout(r, 1)
    assert "daemon started" in r.log_tail
    assert seen, "the daemon never ran"
    assert not wait_gone(seen, timeout=2), "the daemon survived the invocation"
    assert not [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] == argv and is_alive(p.pid)]


@pytest.mark.parametrize("action", ["stop_self", "ignore_term"])
def test_stopped_or_sigterm_ignoring_handler_is_killed_at_the_deadline(runtime, start, action):
    fn = adversary(runtime, start=start, timeout_s=1)
    r = runtime.invoke(fn, {"a": action})
    assert_timeout(r, 1)
    assert r.report["wall_time_ms"] < 1900
    assert logged_pid(r) >= 2  # the handler did run, and not as a namespace's pid 1
    assert not wait_gone([r.report["pid"]], timeout=2)
    assert runtime.invoke(fn, {}).function_error is None


# -- seccomp --------------------------------------------------------------------------------------
def test_tiocsti_injection_is_killed_by_sigsys(runtime, start):
    isolation_step(runtime, "seccomp")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "tiocsti"})
    assert_signal(r, SIGSYS)
    assert "signal: bad system call" in r.payload["errorMessage"]


DENIED = ["unshare", "setns", "ptrace", "mount", "personality"]
DENIED_X86_64 = ["keyctl", "bpf", "perf_event_open", "io_uring_setup"]


@pytest.mark.parametrize("name", DENIED + DENIED_X86_64)
def test_blocked_syscall_is_sigsys(runtime, start, name):
    isolation_step(runtime, "seccomp")
    if name in DENIED_X86_64 and not X86_64:
        pytest.skip("system call number for x86_64 only")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "syscall", "name": name})
    assert_signal(r, SIGSYS)


def test_blocked_syscall_in_a_thread_kills_the_whole_process(runtime, start):
    isolation_step(runtime, "seccomp")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "syscall", "name": "unshare", "thread": True})
    assert_signal(r, SIGSYS)


def test_allowed_variant_of_a_filtered_syscall_passes(runtime, start):
    isolation_step(runtime, "seccomp")
    fn = adversary(runtime, start=start)
    # personality(0xffffffff) only queries: it must not be caught by the flag rules.
    r = runtime.invoke(fn, {"a": "syscall", "name": "personality_query"})
    assert r.function_error is None, r.payload
    assert r.payload == {"returned": 0}


def test_clone_into_a_new_user_namespace_is_denied(runtime, start):
    isolation_step(runtime, "seccomp")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "clone_newuser"})
    denied = r.report["status"] == "signal" and r.report["signal"] == SIGSYS
    refused = r.function_error is None and r.payload.get("clone") in ("EPERM", "ENOSYS")
    assert denied or refused, r.payload


@pytest.mark.skipif(not X86_64, reason="i386 entry point on x86_64 only")
def test_other_architecture_syscall_is_sigsys(runtime, start):
    isolation_step(runtime, "seccomp")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "int80"})
    assert_signal(r, SIGSYS)


@pytest.mark.skipif(not X86_64, reason="i386 entry point on x86_64 only")
def test_other_architecture_syscall_in_a_thread_kills_the_process(runtime, start):
    isolation_step(runtime, "seccomp")
    fn = adversary(runtime, start=start, timeout_s=2)
    r = runtime.invoke(fn, {"a": "int80", "thread": True})
    assert r.report["status"] == "signal" and r.report["signal"] == SIGSYS, (r.report, r.payload)


# -- IPC, privileges, network, filesystem --------------------------------------------------------
def test_sysv_and_dev_shm_leftovers_are_not_visible_to_the_next_environment(runtime, start):
    isolation_step(runtime, "namespaces")
    fn = adversary(runtime, start=start)
    key = 0x5AD00000 + os.getpid() % 0x10000
    left = runtime.invoke(fn, {"a": "ipc_leave", "key": key})
    assert left.function_error is None, left.payload
    assert left.payload["shmid"] >= 0
    # The environment that made them still sees them (the probe works) ...
    same = runtime.invoke(fn, {"a": "ipc_look", "key": key})
    assert same.report["start"] == "warm"
    assert same.payload == {"shm_file": True, "shmid": left.payload["shmid"],
                            "shm_errno": None}
    # ... a new environment does not.
    assert runtime.shutdown_idle(fn, wait=True) == 1
    fresh = runtime.invoke(fn, {"a": "ipc_look", "key": key})
    assert fresh.report["start"] == start
    assert fresh.payload == {"shm_file": False, "shmid": -1, "shm_errno": "ENOENT"}
    # Nor does the host.
    assert not os.path.exists("/dev/shm/leftover")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    assert libc.shmget(key, 0, 0) == -1
    assert ctypes.get_errno() == errno.ENOENT


def test_setuid_binary_gains_nothing(runtime, start):
    isolation_step(runtime, "capabilities")
    isolation_step(runtime, "no_new_privs")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "privileges"})
    out = r.payload
    assert r.function_error is None, out
    zero = "0000000000000000"
    assert {k: out["self"][k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} \
        == dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), zero)
    assert out["self"]["NoNewPrivs"] == "1"
    assert out["self"]["Groups"] == ""
    # A setuid-root copy made in /tmp: the bit is set, and exec grants nothing.
    assert out["suid_mode"] == "0o4755"
    assert out["suid_child"] == {"Uid": "\t".join([str(out["uid"])] * 4), "CapPrm": zero,
                                 "CapEff": zero, "NoNewPrivs": "1"}
    # The host's setuid-root su: either refused, or whatever it runs has no capability.
    su = out["su"]
    assert su["returncode"] != 0 or su["CapEff"] == [zero], su
    assert all(cap == zero for cap in su["CapEff"]), su


def test_uid_is_switched_where_reported(runtime, start):
    caps = runtime.capabilities()["isolation"]
    fn = adversary(runtime, start=start)
    out = runtime.invoke(fn, {"a": "privileges"}).payload
    if not caps["uid"]["enforced"]:
        # Reported as not enforced: the documented fallback holds exactly.
        assert caps["uid"]["reason"]
        assert out["uid"] == 0 and out["self"]["CapEff"] == "0000000000000000"
        pytest.skip(f"uid switching not enforced on this host: {caps['uid']['reason']}")
    assert out["uid"] != 0
    assert out["self"]["Uid"] == "\t".join([str(out["uid"])] * 4)
    # EINVAL where the environment has a user namespace of its own, in which
    # no other uid exists; EPERM elsewhere.
    assert out["setuid_back_to_0"] in ("EPERM", "EINVAL")


def test_no_network_but_loopback(runtime, start):
    isolation_step(runtime, "network")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "network", "outside": True})
    assert r.function_error is None, r.payload
    assert r.payload == {"interfaces": ["lo"], "outside": "ENETUNREACH",
                         "udp": "ENETUNREACH", "loopback": "ping"}


def test_host_network_is_opt_in(runtime):
    fn = adversary(runtime, network="host")
    r = runtime.invoke(fn, {"a": "network"})
    assert r.function_error is None, r.payload
    host_interfaces = [n for _, n in socket.if_nameindex()]
    assert sorted(r.payload["interfaces"]) == sorted(host_interfaces)
    assert set(r.payload["interfaces"]) - {"lo"}, "network=host sees only loopback"
    assert r.payload["loopback"] == "ping"


def _tmp_of_another_environment(runtime, start, other_function: bool):
    fn = adversary(runtime, start=start, timeout_s=5)
    reader = adversary(runtime, "reader", start=start, timeout_s=5) if other_function else fn
    writer_pid = runtime.invoke(fn, {"a": "tmp_write"}).report["pid"]
    held = {}
    # Keeps the writer's environment busy (and alive) while another one looks.
    holder = threading.Thread(target=lambda: held.setdefault(
        "r", runtime.invoke(fn, {"a": "tmp_hold", "seconds": 1.5})))
    holder.start()
    try:
        assert wait_for(lambda: runtime.stats(fn)["busy"] == 1)
        look = runtime.invoke(reader, {"a": "tmp_look"})
    finally:
        holder.join()
    assert held["r"].report["pid"] == writer_pid and held["r"].payload["sees_secret"] is True
    assert look.report["pid"] != writer_pid
    return look.payload, writer_pid


@pytest.mark.parametrize("other_function", [False, True], ids=["same_function", "other"])
def test_tmp_of_another_environment_is_not_visible(runtime, start, other_function):
    isolation_step(runtime, "mounts")
    look, _ = _tmp_of_another_environment(runtime, start, other_function)
    assert look["direct"] == "ENOENT"


def test_tmp_of_another_environment_is_not_reachable_through_proc(runtime, start):
    isolation_step(runtime, "mounts")
    look, writer_pid = _tmp_of_another_environment(runtime, start, other_function=True)
    assert look["via_proc"] == {}, f"read /tmp/secret of pid {writer_pid} via /proc"


def test_memory_of_another_environment_is_not_readable(runtime, start):
    isolation_step(runtime, "namespaces")
    fn = adversary(runtime, start=start, timeout_s=5)
    held = {}
    holder = threading.Thread(target=lambda: held.setdefault("r", runtime.invoke(
        fn, {"a": "tmp_hold", "seconds": 1.5})))
    holder.start()
    try:
        assert wait_for(lambda: runtime.stats(fn)["busy"] == 1)
        time.sleep(0.1)
        peek = runtime.invoke(fn, {"a": "peek_memory"})
    finally:
        holder.join()
    assert peek.function_error is None, peek.payload
    other = held["r"].report["pid"]
    if runtime.capabilities()["isolation"]["pid_namespace"]["enforced"]:
        # Its own pid namespace and /proc hide the other from it altogether.
        assert peek.payload == {}, f"read the heap of environment {other}: {peek.payload}"
    else:
        assert str(other) not in peek.payload, f"read the heap of environment {other}"


def test_handler_cannot_signal_the_dispatcher(runtime, start):
    uid = runtime.capabilities()["isolation"]["uid"]
    if not uid["enforced"]:
        pytest.xfail(f"KNOWN: environments keep uid 0 here ({uid['reason']}) and there is no "
                     "pid namespace: kill(2) needs only a matching uid")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "signal_pid", "pid": os.getpid()})
    assert r.payload in ("EPERM", "ESRCH")


def test_root_is_read_only_and_tmp_writable(runtime, start):
    isolation_step(runtime, "mounts")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "read_only"})
    assert r.payload == {"code": "EROFS", "root": "EROFS", "etc": "EROFS", "tmp": "written",
                         "dev_shm": "written"}
    assert not os.path.exists("/x") and not os.path.exists("/etc/sandbox-x")


def test_limits_cannot_be_lifted_from_inside(runtime, start):
    isolation_step(runtime, "mounts")
    isolation_step(runtime, "capabilities")
    fn = adversary(runtime, start=start)
    r = runtime.invoke(fn, {"a": "lift_limits"})
    assert r.payload == {"cgroup_escape": "EROFS", "pids_max": "EROFS", "memory_limit": "EROFS",
                         "nofile": "ValueError", "fsize": "ValueError", "nice": "EPERM",
                         "hostname": "EPERM"}


# -- INIT (the function's module code) is function code too -------------------------------
def memory_limit_mb(rt: Runtime, proc_cgroup: str) -> int | None:
    """The memory limit (MB) of the memory cgroup named in a /proc/PID/cgroup
    text, when it is a directory of ``rt``'s runtime directory; else None."""
    dirs = rt._host.cgroup.runtime_dirs
    key = "memory" if "memory" in dirs else ""
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if key not in controllers.split(","):
            continue
        if os.path.basename(os.path.dirname(path)) != os.path.basename(dirs[key]):
            return None
        limit_file = "memory.limit_in_bytes" if key else "memory.max"
        return int(Path(dirs[key], os.path.basename(path), limit_file).read_text()) // 2**20
    return None


@pytest.mark.parametrize("kind", ["snapshot", "cold"])
def test_init_runs_as_isolated_as_the_handler(runtime, tmp_path, kind):
    if kind == "snapshot":
        isolation_step(runtime, "isolated_init")
    escape = tmp_path / "escaped-by-init"
    make_function(runtime, "init", INIT_PROBE, start=kind, memory_mb=192,
                  environment={"ESCAPE_PATH": str(escape)})
    r = runtime.invoke("init")
    if kind == "snapshot":
        # The first start ran INIT in its environment; the zygote that boots
        # meanwhile runs it too, and its children hold what it found.
        assert r.function_error is None and r.payload["CapEff"] == "0" * 16, r.payload
        r = invoke_from_zygote(runtime, "init")
    try:
        assert_init_isolated(runtime, r, escape)
    finally:
        escape.unlink(missing_ok=True)


def assert_init_isolated(rt: Runtime, r: Any, escape: Path) -> None:
    """What INIT_PROBE found in the INIT of a function of 192 MB: no write
    to the host, no capability, no_new_privs, seccomp, namespaces of its
    own, and its memory limit."""
    assert r.function_error is None, r.payload
    init = r.payload
    assert not escape.exists(), "INIT wrote to the host filesystem"
    assert init["host_write"] in ("FileNotFoundError", "OSError", "PermissionError")
    assert init["CapEff"] == init["CapBnd"] == "0000000000000000"
    assert init["NoNewPrivs"] == "1" and init["Seccomp"] == "2"
    assert init["mnt_ns"] != os.readlink("/proc/self/ns/mnt")
    assert init["ipc_ns"] != os.readlink("/proc/self/ns/ipc")
    # Within the function's memory limit: the environment's own cgroup
    # (cold, first starts), its zygote's (snapshot: INIT ran there, once).
    assert memory_limit_mb(rt, init["cgroups"]) == 192


def test_init_of_a_first_start_handed_to_a_spare_is_as_isolated(runtime, tmp_path):
    """A first start from the zygote tree handed to a spare child (made
    ahead, privileged until it is assigned) runs INIT as isolated as any,
    with its function's memory limit on a cgroup made ahead for another."""
    isolation_step(runtime, "isolated_init")
    escape = tmp_path / "escaped-by-init"
    environment = {"ESCAPE_PATH": str(escape)}
    # 128 MB: the base learns what to make ahead.
    make_function(runtime, "warm", INIT_PROBE, environment=environment)
    warm = runtime.invoke("warm")
    assert warm.function_error is None, warm.payload
    runtime.wait_zygote_boot("warm")  # its zygote, a child of the base too, is known then
    base = tree_zygote_pids(runtime)[()]
    spare = wait_for(lambda: spares_of(runtime, base, exclude={warm.report["pid"]}))
    assert spare
    make_function(runtime, "init", INIT_PROBE, memory_mb=192, environment=environment)
    r = runtime.invoke("init")
    try:
        assert {r.report["pid"]} == spare
        assert r.report["start"] == "snapshot" and r.report["init_duration_ms"] is not None
        assert_init_isolated(runtime, r, escape)
    finally:
        escape.unlink(missing_ok=True)


@pytest.mark.parametrize("kind", ["snapshot", "cold"])
def test_init_out_of_memory_is_reported(runtime, kind):
    make_function(runtime, "hog", INIT_HOG, start=kind, memory_mb=128, timeout_s=10)
    r = runtime.invoke("hog")
    assert r.function_error == "Unhandled", r.payload
    assert r.payload["errorType"] == "Runtime.OutOfMemory", r.payload
    assert r.report["oom_killed"] is True
    assert r.report["max_memory_used_mb"] == 128


# -- environments of one function share nothing ----------------------------------------------
@pytest.mark.parametrize("kind", ["snapshot", "cold"])
def test_loopback_of_another_environment_is_not_reachable(runtime, kind):
    isolation_step(runtime, "network")
    fn = adversary(runtime, start=kind, timeout_s=5)
    runtime.invoke(fn, {})  # the zygote (or launcher) is up before the race starts
    port = 20000 + os.getpid() % 20000
    holder = threading.Thread(target=lambda: runtime.invoke(
        fn, {"a": "loopback_listen", "port": port, "seconds": 3.0}))
    holder.start()
    try:
        assert wait_for(lambda: runtime.stats(fn)["busy"] == 1)
        r = runtime.invoke(fn, {"a": "loopback_connect", "port": port, "retry_s": 2.0})
    finally:
        holder.join()
    assert r.payload == "ECONNREFUSED"


# -- cleanup ------------------------------------------------------------------------------------
def test_no_cgroup_left_behind(tmp_path, runtime):
    # Its own Runtime (the fixture's shares the process's runtime directory).
    runtime.close()
    rt = Runtime(idle_timeout_s=120)
    try:
        fn = adversary(rt, timeout_s=1)
        dirs = dict(rt._host.cgroup.runtime_dirs)
        assert dirs and all(os.path.isdir(d) for d in dirs.values())

        def env_dirs() -> list[list[str]]:
            """Environments' cgroups (but those the Runtime holds made ahead
            for first starts, a constant few)."""
            ahead = rt._host.cgroups_ahead.names()
            return [sorted(e for e in os.listdir(d) if e.startswith("env-") and e not in ahead)
                    for d in dirs.values()]

        # One cgroup per environment, in every hierarchy, plus one made ahead
        # for the next; the timed-out environment's cgroup goes with it.
        assert rt.invoke(fn, {}).function_error is None
        assert wait_for(lambda: all(len(names) == 2 for names in env_dirs())), env_dirs()
        assert len({tuple(names) for names in env_dirs()}) == 1
        assert rt.invoke(fn, {"a": "sleep"}).report["status"] == "timeout"
        assert wait_for(lambda: all(len(names) == 1 for names in env_dirs())), env_dirs()
        assert rt.invoke(fn, {}).function_error is None
        assert wait_for(lambda: all(len(names) == 2 for names in env_dirs())), env_dirs()
    finally:
        rt.close()
    assert [d for d in dirs.values() if os.path.exists(d)] == []
