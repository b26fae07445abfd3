"""What the multiprocessing peers run in their worker processes.

The forkserver peer lists this module in ``set_forkserver_preload``: on import
it loads the handlers named in ``SANDBOX_BENCH_PRELOAD`` (code directories,
``os.pathsep``-separated), so a forked worker finds them imported, as a zygote
holds its function's INIT. Kept free of the dispatcher's imports.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

PRELOAD_ENV = "SANDBOX_BENCH_PRELOAD"

_handlers: dict[str, Callable[[Any, Any], Any]] = {}


def load(code_dir: str, handler: str = "app.handler") -> Callable[[Any, Any], Any]:
    """The handler function of ``code_dir`` (imported once per process).

    Each directory's module gets its own name, so several ``app.py`` coexist.
    """
    function = _handlers.get(code_dir)
    if function is None:
        module_name, attribute = handler.rsplit(".", 1)
        path = os.path.join(code_dir, f"{module_name}.py")
        spec = importlib.util.spec_from_file_location(
            f"_sandbox_bench_{len(_handlers)}_{module_name}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function = _handlers[code_dir] = getattr(module, attribute)
    return function


def invoke(code_dir: str, event: Any) -> Any:
    """Runs the handler of ``code_dir`` on ``event`` with no context."""
    return load(code_dir)(event, None)


def invoke_and_send(conn: Connection, code_dir: str, event: Any) -> None:
    """Process target: runs the handler and sends its result back."""
    try:
        conn.send(invoke(code_dir, event))
    finally:
        conn.close()


for _code_dir in filter(None, os.environ.get(PRELOAD_ENV, "").split(os.pathsep)):
    load(_code_dir)
