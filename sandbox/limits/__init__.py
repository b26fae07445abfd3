"""Limits: what each execution environment may use, and what this host can
enforce. Cgroups (v2 or v1) carry memory, processes and CPU; rlimits carry
file size, open files, core dumps and a CPU-time backstop, and stand in for
the memory limit where no cgroup can be made.
"""

from .host import EnvironmentLimits, HostLimits, rlimits_for

__all__ = ["EnvironmentLimits", "HostLimits", "rlimits_for"]
