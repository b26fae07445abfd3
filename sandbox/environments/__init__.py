"""Execution environments: zygotes, live environments, per-function pools and
the supervisor thread that watches them (INIT/INVOKE/SHUTDOWN lifecycle)."""

from .environment import Environment, EnvironmentLost, ExitRecord
from .pool import FunctionPool, InitFailed
from .supervisor import Supervisor
from .zygote import Zygote

__all__ = [
    "Environment", "EnvironmentLost", "ExitRecord", "FunctionPool", "InitFailed",
    "Supervisor", "Zygote",
]
