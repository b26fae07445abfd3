"""sandbox: a local runtime for Lambda-style Python functions on Linux.

Public surface: :class:`Runtime` (the Python API), :class:`InvokeResult`, and
the exceptions in :mod:`sandbox.errors`. The names are loaded lazily so that
processes which only run functions (zygotes, environments) do not import the
dispatcher.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs every cold start milliseconds

__all__ = ["InvokeResult", "Runtime", "errors"]

if TYPE_CHECKING:
    from typing import Any

    from . import errors
    from .api import Runtime
    from .invoke.sync import InvokeResult


def __getattr__(name: str) -> Any:
    if name == "Runtime":
        from .api import Runtime

        return Runtime
    if name == "InvokeResult":
        from .invoke.sync import InvokeResult

        return InvokeResult
    if name == "errors":
        from . import errors

        return errors
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
