"""What a run may leave behind, and the check that nothing did.

:func:`take` records the host state before a Runtime starts; after it is
closed, :func:`find_leaks` compares, giving what survives a settling period
(exiting processes need a moment to be reaped):

* processes: descendants of this process, and any process whose working
  directory is under the run's private directory (an orphan of ours);
* cgroups: ``rt-<this pid>-…`` directories under the runtime's cgroup parents;
* file descriptors of this process;
* temporary files: entries in the run's private temporary directory, which
  is this process's ``tempfile`` directory during the run;
* shared memory: entries of ``/dev/shm`` and SysV shm/sem/msg ids.

The shared-memory checks compare host-wide tables: a segment another program
makes during the run shows up too, with its creator where known.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

SYSV_TABLES = ("shm", "sem", "msg")


@dataclass(frozen=True)
class Leak:
    """One thing left behind: ``kind`` is process, cgroup, fd, tempfile,
    dev_shm or sysv; ``ident`` the pid, path, fd number or id."""

    kind: str
    ident: str
    description: str

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class HostState:
    pids: frozenset[int]
    fds: frozenset[int]
    cgroup_dirs: frozenset[str]
    dev_shm: frozenset[str]
    sysv: frozenset[tuple[str, str]]  # (table, id)
    temp_entries: frozenset[str]


def _descendants() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE}
    except psutil.Error:
        return set()


def _fds() -> set[int]:
    """This process's open fds, without the one used to list them."""
    listing = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return {int(fd) for fd in os.listdir(listing)} - {listing}
    finally:
        os.close(listing)


def _cgroup_dirs(parents: Iterable[str]) -> set[str]:
    prefix = f"rt-{os.getpid()}-"
    found: set[str] = set()
    for parent in parents:
        try:
            found.update(os.path.join(parent, name) for name in os.listdir(parent)
                         if name.startswith(prefix))
        except OSError:
            continue
    return found


def _listdir(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def _sysv() -> set[tuple[str, str]]:
    ids: set[tuple[str, str]] = set()
    for table in SYSV_TABLES:
        try:
            with open(f"/proc/sysvipc/{table}") as file:
                rows = file.read().splitlines()[1:]
        except OSError:
            continue
        ids.update((table, row.split()[1]) for row in rows if row.split())
    return ids


def take(cgroup_parents: Iterable[str], temp_dir: str) -> HostState:
    """The host state to compare against after the run."""
    return HostState(pids=frozenset(_descendants()), fds=frozenset(_fds()),
                     cgroup_dirs=frozenset(_cgroup_dirs(cgroup_parents)),
                     dev_shm=frozenset(_listdir("/dev/shm")), sysv=frozenset(_sysv()),
                     temp_entries=frozenset(_listdir(temp_dir)))


def _orphans(private_root: str) -> set[int]:
    """Processes (anywhere) working under the run's private directory."""
    found = set()
    root = private_root.rstrip("/") + "/"
    for proc in psutil.process_iter():
        try:
            cwd = proc.cwd()
            if (cwd + "/").startswith(root) and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


def _describe_pid(pid: int) -> Leak:
    try:
        proc = psutil.Process(pid)
        what = " ".join(proc.cmdline())[:120] or proc.name()
    except psutil.Error:
        what = "gone while listed"
    return Leak("process", str(pid), f"process {pid} ({what}) still running")


def _describe_fd(fd: int) -> Leak:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = "?"
    return Leak("fd", str(fd), f"fd {fd} -> {target} still open")


def _current(before: HostState, cgroup_parents: list[str], temp_dir: str,
             private_root: str) -> list[Leak]:
    leaks = [_describe_pid(pid)
             for pid in sorted((_descendants() | _orphans(private_root)) - before.pids)
             if pid != os.getpid()]
    leaks += [Leak("cgroup", path, f"cgroup {path} still exists")
              for path in sorted(_cgroup_dirs(cgroup_parents) - before.cgroup_dirs)]
    leaks += [_describe_fd(fd) for fd in sorted(_fds() - before.fds)]
    for name in sorted(_listdir(temp_dir) - before.temp_entries):
        path = os.path.join(temp_dir, name)
        leaks.append(Leak("tempfile", path, f"temporary file {path} left behind"))
    leaks += [Leak("dev_shm", f"/dev/shm/{name}", f"/dev/shm/{name} left behind")
              for name in sorted(_listdir("/dev/shm") - before.dev_shm)]
    leaks += [Leak("sysv", f"{table}:{ident}", f"SysV {table} id {ident} left behind")
              for table, ident in sorted(_sysv() - before.sysv)]
    return leaks


def find_leaks(before: HostState, cgroup_parents: Iterable[str], temp_dir: str,
               private_root: str, settle_s: float = 3.0) -> list[Leak]:
    """What exists now and did not before, once ``settle_s`` passed without
    it going away; an empty list when nothing leaked.

    Args:
        private_root: the run's own directory (code and temporary files).
    """
    parents = list(cgroup_parents)
    deadline = time.monotonic() + settle_s
    while True:
        leaks = _current(before, parents, temp_dir, private_root)
        if not leaks or time.monotonic() >= deadline:
            return leaks
        time.sleep(0.05)
