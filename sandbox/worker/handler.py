"""Loading a handler and turning failures into Lambda's error documents.

Follows the Python runtime's bootstrap (awslambdaric) rule for rule: the
handler string is split on its last dot, slashes in the module part become
dots, and each way of failing has its own ``Runtime.*`` error type.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from ..constants import (
    ERROR_BUILTIN_CONFLICT,
    ERROR_HANDLER_NOT_FOUND,
    ERROR_IMPORT_MODULE,
    ERROR_MALFORMED_HANDLER,
    ERROR_SYNTAX,
)

# typing is not imported at run time: every cold start would pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

    Handler = Callable[[Any, Any], Any]


class HandlerFault(Exception):
    """The handler cannot run: its module did not import, or it is missing.

    ``document`` is the error document Lambda returns for it.
    """

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.document = {"errorMessage": message, "errorType": error_type,
                         "stackTrace": stack or []}


_RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_runtime_frame(filename: str) -> bool:
    return filename.startswith(_RUNTIME_DIR + os.sep) or filename.startswith("<frozen ")


def user_stack(tb: TracebackType | None) -> list[str]:
    """The traceback as Lambda's stackTrace: formatted frames of user code only."""
    import traceback  # only failures pay for it

    frames = [f for f in traceback.extract_tb(tb) if not _is_runtime_frame(f.filename)]
    return traceback.format_list(frames)


def error_document(exc: BaseException, request_id: str | None = None) -> dict[str, Any]:
    """``{errorMessage, errorType, requestId, stackTrace}`` for an exception."""
    document: dict[str, Any] = {"errorMessage": str(exc), "errorType": type(exc).__name__}
    if request_id is not None:
        document["requestId"] = request_id
    document["stackTrace"] = user_stack(exc.__traceback__)
    return document


def log_error(document: dict[str, Any]) -> None:
    """Writes the error to stderr the way the Python runtime logs it."""
    stack = "".join(document.get("stackTrace") or [])
    sys.stderr.write(
        f"[ERROR] {document['errorType']}: {document['errorMessage']}\n"
        f"Traceback (most recent call last):\n{stack}"
    )
    sys.stderr.flush()


def initialize() -> tuple[Handler | None, dict[str, Any] | None, float]:
    """Runs INIT from the environment Lambda defines (_HANDLER, LAMBDA_TASK_ROOT).

    Returns:
        (handler, None, init_ms) on success, (None, error_document, init_ms)
        when the module failed to import or the handler is missing; the error
        is also logged as the runtime would.
    """
    start = time.perf_counter()
    handler: Handler | None = None
    error: dict[str, Any] | None = None
    try:
        handler = load_handler(os.environ["_HANDLER"], os.environ["LAMBDA_TASK_ROOT"])
    except HandlerFault as fault:
        error = fault.document
    except Exception as exc:
        error = error_document(exc)
    init_ms = (time.perf_counter() - start) * 1000.0
    if error is not None:
        log_error(error)
    return handler, error, init_ms


def load_handler(spec: str, task_root: str) -> Handler:
    """Imports the handler's module (the function's INIT) and returns the handler.

    Raises:
        HandlerFault: with the Lambda error type for the failure.
        Exception: whatever the module's own top-level code raised.
    """
    try:
        module_name, function_name = spec.rsplit(".", 1)
    except ValueError as exc:
        raise HandlerFault(ERROR_MALFORMED_HANDLER, f"Bad handler '{spec}': {exc}") from None
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise HandlerFault(
            ERROR_BUILTIN_CONFLICT, f"Cannot use built-in module {module_name} as a handler module"
        )
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    os.chdir(task_root)
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise HandlerFault(
            ERROR_IMPORT_MODULE, f"Unable to import module '{module_name}': {exc}"
        ) from None
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise HandlerFault(
            ERROR_SYNTAX, f"Syntax error in module '{module_name}': {exc}", trace
        ) from None
    handler = getattr(module, function_name, None)
    if handler is None:
        raise HandlerFault(
            ERROR_HANDLER_NOT_FOUND, f"Handler '{function_name}' missing on module '{module_name}'"
        )
    return handler
