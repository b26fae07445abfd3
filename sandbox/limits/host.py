"""Host detection and per-environment limits (the dispatcher side)."""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
from typing import Any

from . import cgroups
from .isolation import Isolation

log = logging.getLogger("sandbox.limits")

# Lambda: 1,024 processes and threads, 1,024 file descriptors per environment;
# one full vCPU at 1,769 MB.
PIDS_MAX = 1024
NOFILE = 1024
MB_PER_VCPU = 1769
DEFAULT_EPHEMERAL_MB = 512
# RLIMIT_CPU is a backstop against a runaway environment, not the time limit
# (the dispatcher's deadline is): an environment is retired once it has used
# half of it, so a busy warm environment never meets it mid-invocation.
CPU_BACKSTOP_S = 3600


@dataclasses.dataclass(frozen=True)
class EnvironmentLimits:
    """What one environment of a function may use."""

    memory_mb: int
    pids_max: int = PIDS_MAX
    cpu_vcpus: float | None = None  # None: no CPU quota
    ephemeral_mb: int = DEFAULT_EPHEMERAL_MB
    address_space_mb: int | None = None  # RLIMIT_AS, off unless asked

    @classmethod
    def for_memory(cls, memory_mb: int, cpu_follows_memory: bool = True,
                   **overrides: Any) -> EnvironmentLimits:
        vcpus = memory_mb / MB_PER_VCPU if cpu_follows_memory else None
        return cls(memory_mb=memory_mb, cpu_vcpus=vcpus, **overrides)


def rlimits_for(limits: EnvironmentLimits, memory_by_cgroup: bool,
                own_uid: bool = False) -> list[tuple[int, int, int]]:
    """``(resource, soft, hard)`` triples the child applies before Python runs.

    ``own_uid``: the environment has a uid no other process shares, so
    RLIMIT_NPROC (which counts a uid's processes host-wide) limits it alone.
    """
    file_size = limits.ephemeral_mb * 2**20
    out = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, NOFILE, NOFILE),
        (resource.RLIMIT_FSIZE, file_size, file_size),
        (resource.RLIMIT_CPU, CPU_BACKSTOP_S, CPU_BACKSTOP_S + 5),
    ]
    if own_uid:
        out.append((resource.RLIMIT_NPROC, limits.pids_max, limits.pids_max))
    address_space = limits.address_space_mb
    if address_space is None and not memory_by_cgroup:
        # No cgroup: the address space is the only memory limit left. Lambda's
        # runtimes map more than they touch, so it gets headroom.
        address_space = limits.memory_mb + 512
    if address_space is not None:
        size = address_space * 2**20
        out.append((resource.RLIMIT_AS, size, size))
    return out


class HostLimits:
    """What this host enforces, detected once per Runtime.

    Args:
        use_cgroups: False skips cgroups (rlimits only); None detects.
        user: see :class:`Isolation`: None gives each environment a uid of its own.
    """

    def __init__(self, use_cgroups: bool | None = None, isolate: bool = True,
                 cpu_follows_memory: bool = True, user: str | None = None) -> None:
        self.isolation = Isolation(isolate, user)
        self.cpu_follows_memory = cpu_follows_memory
        self.cgroup: cgroups.CgroupBackend | None = None
        # Made ahead for first starts (the supervisor refills it).
        self.cgroups_ahead: cgroups.CgroupsAhead | None = None
        self.cgroup_reason = "disabled by configuration"
        self.swept = 0
        if use_cgroups is False:
            return
        detection = cgroups.detect()
        self.cgroup_reason = detection.reason
        backend = cgroups.backend_for(detection)
        if backend is not None:
            try:
                self.swept = backend.setup()
                self.cgroup = backend
                self.cgroups_ahead = cgroups.CgroupsAhead(backend)
            except OSError as exc:
                self.cgroup_reason = f"{detection.reason} present but unusable: {exc}"
        if self.cgroup is None:
            message = (f"no cgroup can be made ({self.cgroup_reason}); memory is limited by "
                       "RLIMIT_AS only, and processes and CPU are not limited")
            if use_cgroups:
                raise OSError(message)
            log.warning(message)

    def close(self) -> None:
        if self.cgroups_ahead is not None:
            self.cgroups_ahead.close()
        if self.cgroup is not None:
            self.cgroup.close()
        self.isolation.close()

    def describe(self) -> dict[str, Any]:
        """What is enforced, with the reason for what is not (``sandbox doctor``)."""
        backend = self.cgroup
        version = backend.version if backend is not None else None
        enforced = backend is not None
        cpu_quota = backend is not None and backend.cpu_quota
        return {
            "cgroup": {
                "version": version,
                "parents": dict(backend.parents) if backend else {},
                "reason": self.cgroup_reason,
                "stale_runtime_dirs_swept": self.swept,
            },
            "memory": {"enforced": True,
                       "by": f"cgroup v{version}" if enforced else "RLIMIT_AS",
                       "reason": None},
            "pids": {"enforced": enforced,
                     "by": f"cgroup v{version}" if enforced else None,
                     "reason": None if enforced else self.cgroup_reason},
            "cpu_quota": {"enforced": cpu_quota and self.cpu_follows_memory,
                          "by": f"cgroup v{version}, {MB_PER_VCPU} MB = 1 vCPU"
                          if cpu_quota and self.cpu_follows_memory else None,
                          "reason": None if cpu_quota and self.cpu_follows_memory
                          else "disabled by configuration (cpu_follows_memory=False)"
                          if cpu_quota else (self.cgroup_reason if not enforced
                                             else "no cpu cgroup hierarchy")},
            "oom_detection": {"enforced": enforced,
                              "by": "memory.events" if version == 2
                              else "memory.oom_control" if enforced else None,
                              "reason": None if enforced else self.cgroup_reason},
            "timeout_kills_descendants": {
                "enforced": enforced,
                "by": "cgroup kill" if enforced else None,
                "reason": None if enforced else
                f"{self.cgroup_reason}: only the process group is killed (setsid escapes)"},
            "rlimits": ["RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CPU"]
            + (["RLIMIT_NPROC"] if self.isolation.uids is not None else []),
            "isolation": self.isolation.describe(),
            "run_as": self.isolation.run_as(),
            "root": os.geteuid() == 0,
        }
