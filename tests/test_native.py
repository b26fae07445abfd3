"""The native core (sandbox._native, built from native/*.pyx/*.pxi): spawn's
fd layout, session and parent-death signal, failure reporting, and a
snapshot (no exec) spawn run in a helper process."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from sandbox import _native

REPO = Path(__file__).resolve().parent.parent

# Run by the spawned child: which fds are open, what they are, session, pdeathsig.
CHILD_REPORT = textwrap.dedent("""
    import ctypes, json, os, stat, sys
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")  # listdir's own fd is gone by now
        except OSError:
            continue
        fds.append(int(name))
    value = ctypes.c_int(-1)
    ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    report = {
        "fds": sorted(fds),
        "fd3_is_socket": stat.S_ISSOCK(os.fstat(3).st_mode),
        "session_leader": os.getsid(0) == os.getpid(),
        "pgid_is_pid": os.getpgid(0) == os.getpid(),
        "pdeathsig": value.value,
        "ppid": os.getppid(),
    }
    os.write(3, json.dumps(report).encode())
    print("stdout-line", flush=True)
    sys.stderr.write("stderr-line\\n")
""")


@pytest.fixture
def log_fd():
    fd = os.memfd_create("native-test-log")
    yield fd
    os.close(fd)


def read_all(fd):
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0)


def test_exec_spawn_child_has_only_fds_0_to_3(log_fd):
    ours, theirs = socket.socketpair()
    # Descriptors the child must not inherit: an inheritable pipe at a high
    # number and an ordinary (close-on-exec) one.
    leak_r, leak_w = os.pipe()
    high = os.dup2(leak_r, 200, inheritable=True)
    try:
        pid = _native.spawn(theirs.fileno(), log_fd,
                            [sys.executable, "-c", CHILD_REPORT], {"PATH": "/usr/bin:/bin"})
        theirs.close()
        assert pid > 0
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, read_all(log_fd)
        report = json.loads(ours.recv(65536))
    finally:
        for fd in (leak_r, leak_w, high):
            os.close(fd)
        ours.close()
    assert set(report["fds"]) <= {0, 1, 2, 3}, report["fds"]
    assert {1, 2, 3} <= set(report["fds"])
    assert report["fd3_is_socket"]
    assert report["session_leader"] and report["pgid_is_pid"]
    assert report["pdeathsig"] == 9  # SIGKILL when the parent dies
    assert report["ppid"] == os.getpid()
    output = read_all(log_fd)
    assert b"stdout-line\n" in output and b"stderr-line\n" in output  # fds 1 and 2: the log


def test_exec_spawn_environment_is_exactly_the_given_one(log_fd):
    ours, theirs = socket.socketpair()
    code = "import os, json; os.write(3, json.dumps(dict(os.environ)).encode())"
    pid = _native.spawn(theirs.fileno(), log_fd, [sys.executable, "-c", code],
                        {"ONLY": "this", "PATH": "/bin"})
    theirs.close()
    os.waitpid(pid, 0)
    environ = json.loads(ours.recv(65536))
    ours.close()
    environ.pop("LC_CTYPE", None)  # Python may set it while coercing the C locale
    assert environ == {"ONLY": "this", "PATH": "/bin"}


def test_exec_failure_is_reported_with_its_stage(log_fd):
    ours, theirs = socket.socketpair()
    try:
        with pytest.raises(OSError) as info:
            _native.spawn(theirs.fileno(), log_fd, ["/nonexistent/definitely/not/here"], {})
    finally:
        ours.close()
        theirs.close()
    exc = info.value
    assert isinstance(exc, _native.SpawnError)
    assert exc.stage == "exec"
    assert exc.errno == errno.ENOENT
    assert "exec" in str(exc)


def test_exec_of_a_non_executable_is_eacces(log_fd, tmp_path):
    target = tmp_path / "not-executable"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o644)
    ours, theirs = socket.socketpair()
    try:
        with pytest.raises(_native.SpawnError) as info:
            _native.spawn(theirs.fileno(), log_fd, [str(target)], {})
    finally:
        ours.close()
        theirs.close()
    assert info.value.stage == "exec"
    assert info.value.errno == errno.EACCES


def test_failed_spawn_leaves_no_zombie(log_fd):
    ours, theirs = socket.socketpair()
    before = {p.pid for p in psutil.Process().children()}
    for _ in range(3):
        with pytest.raises(_native.SpawnError):
            _native.spawn(theirs.fileno(), log_fd, ["/nonexistent"], {})
    ours.close()
    theirs.close()
    after = {p.pid for p in psutil.Process().children()}
    assert after <= before, "a failed child was not reaped"


def test_embedded_nul_is_refused_before_fork(log_fd):
    ours, theirs = socket.socketpair()
    try:
        with pytest.raises(ValueError, match="NUL"):
            _native.spawn(theirs.fileno(), log_fd, ["/bin/true\0x"], {})
    finally:
        ours.close()
        theirs.close()


SNAPSHOT_HELPER = textwrap.dedent("""
    import json, os, socket, sys
    from sandbox import _native

    ours, theirs = socket.socketpair()
    log_fd = os.memfd_create("log")
    extra = os.open("/dev/null", os.O_RDONLY)          # close-on-exec (Python's default)
    inheritable = os.dup2(extra, 150, inheritable=True)  # and an inheritable one
    pid = _native.spawn(theirs.fileno(), log_fd)
    if pid == 0:
        # A snapshot child: this interpreter goes on running.
        fds = []
        for name in os.listdir("/proc/self/fd"):
            try:
                os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue
            fds.append(int(name))
        os.write(3, json.dumps({"fds": sorted(fds), "pid": os.getpid(),
                                "session": os.getsid(0)}).encode())
        os._exit(0)
    theirs.close()
    _, status = os.waitpid(pid, 0)
    report = json.loads(ours.recv(65536))
    report["status"] = status
    report["child"] = pid
    print(json.dumps(report))
""")


def test_snapshot_spawn_child_has_only_fds_0_to_3():
    """spawn without exec (the snapshot start), run in a helper process so
    that the forked copy of an interpreter is not pytest."""
    out = subprocess.run([sys.executable, "-c", SNAPSHOT_HELPER], capture_output=True,
                         timeout=30, cwd=str(REPO),
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr.decode()
    report = json.loads(out.stdout)
    assert report["status"] == 0
    assert report["pid"] == report["child"]
    assert report["session"] == report["child"]
    assert set(report["fds"]) <= {0, 1, 2, 3}, report["fds"]
    assert 3 in report["fds"]


def test_fork_exit_wait_floor():
    rounds = _native.fork_exit_wait(3)
    assert len(rounds) == 3
    assert all(0 < r < 1 for r in rounds)


def test_channel_fd_constant():
    assert _native.CHANNEL_FD == 3


# -- namespaces made ahead -------------------------------------------------------------------
NS_REPORT = ("import os, json; print(json.dumps({'pid': os.getpid(), "
             "'pidns': os.readlink('/proc/self/ns/pid'), "
             "'netns': os.readlink('/proc/self/ns/net')}))")


def _ns_of(fd: int, kind: str) -> str:
    return f"{kind}:[{os.fstat(fd).st_ino}]"


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")
def test_spawn_enters_namespaces_made_ahead(log_fd):
    from sandbox.limits.isolation import INIT_PATH

    netns_fd = _native.prepare_network_namespace()
    init_pid, pidns_fd = _native.prepare_pid_namespace(INIT_PATH)
    ours, theirs = socket.socketpair()
    try:
        # This process stayed in its own namespaces.
        assert os.readlink("/proc/self/ns/net") != _ns_of(netns_fd, "net")
        assert os.readlink("/proc/self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")
        pid = _native.spawn(theirs.fileno(), log_fd, [sys.executable, "-c", NS_REPORT],
                            dict(os.environ), isolation={
                                "pid_namespace": True, "init_path": INIT_PATH,
                                "pid_namespace_ahead": (init_pid, pidns_fd),
                                "netns_fd": netns_fd})
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        report = json.loads(read_all(log_fd))
        assert report == {"pid": 2, "pidns": _ns_of(pidns_fd, "pid"),
                          "netns": _ns_of(netns_fd, "net")}
        assert _native.end_pid_namespace(pid) is True
        assert not psutil.pid_exists(init_pid)
    finally:
        os.close(netns_fd)
        os.close(pidns_fd)
        ours.close()
        theirs.close()


# -- pages written ahead ---------------------------------------------------------------------
PAGE = 4096


class Region:
    """``pages`` page-aligned pages of a bytearray, each written once (so
    resident and this process's own)."""

    def __init__(self, pages: int) -> None:
        import ctypes

        self.raw = bytearray((pages + 1) * PAGE)
        base = ctypes.addressof((ctypes.c_char * len(self.raw)).from_buffer(self.raw))
        self.start = (base + PAGE - 1) // PAGE * PAGE
        self.offset = self.start - base
        self.pages = [self.start + i * PAGE for i in range(pages)]
        for address in self.pages:
            self[address] = 1

    def __setitem__(self, address: int, value: int) -> None:
        self.raw[address - self.start + self.offset] = value

    def __getitem__(self, address: int) -> int:
        return self.raw[address - self.start + self.offset]


def pages_in(ranges: list[tuple[int, int]]) -> set[int]:
    return {a for start, end in ranges for a in range(start, end, PAGE)}


def forked(work) -> int:
    """A child that does ``work`` and then waits to be killed; its pid once
    the work is done."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            work()
            os.write(w, b"x")
            signal.pause()
        finally:
            os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    return pid


def end(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's pagemap flags")
def test_written_pages_are_those_a_forked_child_wrote():
    region = Region(16)
    written = region.pages[::2]

    def write_every_other_page() -> None:
        for address in written:
            region[address] = 2

    pid = forked(write_every_other_page)
    try:
        assert pages_in(_native.written_pages(pid, 1 << 20)) & set(region.pages) == set(written)
        assert len(pages_in(_native.written_pages(pid, 3))) == 3  # at most max_pages
    finally:
        end(pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's pagemap flags")
def test_write_ahead_copies_the_pages_before_they_are_written():
    region = Region(16)
    ranges = [(region.start, region.start + 16 * PAGE)]
    pid = forked(lambda: _native.write_ahead(ranges + [(PAGE, 2 * PAGE)]))  # and one unmapped
    try:
        # Shared with this process until then; the child's own now.
        assert set(region.pages) <= pages_in(_native.written_pages(pid, 1 << 20))
    finally:
        end(pid)
    assert all(region[a] == 1 for a in region.pages)  # written ahead, not changed
    # An assignment waiting (its fd readable) stops it before the first range.
    r, w = os.pipe()
    os.write(w, b"x")
    assert _native.write_ahead(ranges, r) == 0
    os.close(r)
    os.close(w)


def test_written_pages_of_a_process_gone_is_an_oserror():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(OSError):
        _native.written_pages(pid, 10)
