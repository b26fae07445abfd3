"""The ``sandbox`` subcommands of the interfaces layer: ``serve``, ``invoke``,
``functions``, ``logs`` and ``roles``. :func:`register` adds them to the
command's parser (``sandbox/cli.py``).

Exit codes every command keeps, for scripts:

- 0: done;
- 1: the function ran and failed (``invoke``: a FunctionError);
- 2: bad usage (argparse's own code);
- 3: the request was refused (a Lambda error: not found, access denied, ...);
- 4: no server answered at the endpoint.
"""

from __future__ import annotations

import argparse

from . import functions, invoke, logs, roles, serve


def register(commands: argparse._SubParsersAction) -> None:
    """Adds serve, invoke, functions, logs and roles to ``commands``."""
    for module in (serve, invoke, functions, logs, roles):
        module.register(commands)
