"""The HTTP server: Lambda's REST API over a Runtime, on aiohttp.

Requests are authenticated (SigV4, :mod:`.sigv4`) and authorized on the event
loop; the operation itself runs on a thread pool as large as the Runtime's
concurrency limit (plus a few threads for management calls), so that many
invocations run in parallel and a throttle comes from the Runtime's limit,
never from the pool. Errors go out as Lambda sends them: the status code,
``x-amzn-ErrorType`` and a JSON body with ``Type`` and ``message``, which
boto3 turns into its modelled exceptions.

Shutdown (:meth:`LambdaServer.stop`, SIGTERM or SIGINT under
:func:`serve_forever`): the listener closes, requests in flight finish (up to
``shutdown_timeout_s``), the pool's threads end, and a Runtime the server
owns is closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import constants as C
from ..errors import (
    NotImplementedOperationException,
    RequestTooLargeException,
    SandboxError,
    ServiceException,
    TooManyRequestsException,
    UnknownOperationException,
)
from .access import authorize_action
from .credentials import CredentialStore
from .metrics import CONTENT_TYPE, Metrics
from .operations import Call, Operations, Reply, function_ref
from .routes import PENDING, ROUTES, Route
from .sigv4 import SignedRequest, verify

log = logging.getLogger("sandbox.http")

# Threads beyond the concurrency limit, so management calls are served while
# every invocation slot is busy.
MANAGEMENT_THREADS = 8
_CLIENT_ERRORS = range(400, 500)


def error_reply(exc: SandboxError, request_id: str) -> web.Response:
    """Lambda's error response for ``exc``."""
    body: dict[str, Any] = {
        "Type": "User" if exc.http_status in _CLIENT_ERRORS else "Service",
        "message": exc.message,
    }
    headers = {"x-amzn-ErrorType": exc.code, "x-amzn-RequestId": request_id}
    if isinstance(exc, TooManyRequestsException):
        body["Reason"] = exc.reason
    return web.json_response(body, status=exc.http_status, headers=headers)


class LambdaServer:
    """Serves a Runtime over Lambda's REST API.

    Args:
        runtime: the Runtime to serve.
        host, port: where to listen (port 0: any free port; see :attr:`port`).
        credentials: the accepted access keys; None serves without
            authentication (every request is the account's root).
        strict_roles: refuse CreateFunction with an undefined Role (Lambda's
            behaviour) instead of creating a role without permissions.
        owns_runtime: close the Runtime on stop.
        shutdown_timeout_s: how long stop() waits for requests in flight to be
            answered (default: Lambda's longest function timeout, so every
            invocation in flight gets its reply).
    """

    def __init__(self, runtime: Any, host: str = C.DEFAULT_HTTP_HOST,
                 port: int = C.DEFAULT_HTTP_PORT, *, credentials: CredentialStore | None,
                 strict_roles: bool = False, owns_runtime: bool = False,
                 shutdown_timeout_s: float = C.TIMEOUT_S_MAX) -> None:
        self.runtime = runtime
        self.host = host
        self.port = port
        self.credentials = credentials
        self.owns_runtime = owns_runtime
        self.shutdown_timeout_s = shutdown_timeout_s
        self.metrics = Metrics(runtime)
        runtime.add_invocation_listener(self.metrics.record_delivery)
        self.operations = Operations(runtime, self.metrics, strict_roles)
        self.thread_name_prefix = f"sandbox-http-{id(self):x}"
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=runtime.concurrency_limit + MANAGEMENT_THREADS,
            thread_name_prefix=self.thread_name_prefix)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def application(self) -> web.Application:
        # Bodies are read by _read_body with each route's own limit.
        app = web.Application(client_max_size=0)
        for route in ROUTES + PENDING:
            app.router.add_route(route.method, route.path, self._handler(route))
        app.router.add_get("/metrics", self._metrics)
        # Last: whatever matched no operation (another method on a known path too).
        app.router.add_route("*", "/{path:.*}", self._unknown)
        return app

    async def start(self) -> None:
        """Starts listening; :attr:`port` is then the bound port."""
        self._runner = web.AppRunner(self.application(), handle_signals=False,
                                     shutdown_timeout=self.shutdown_timeout_s,
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("serving the Lambda API on http://%s:%d (%s)", self.host, self.port,
                 "no authentication" if self.credentials is None
                 else f"SigV4, {len(self.credentials)} access keys")

    async def stop(self) -> None:
        """Stops accepting, lets requests in flight finish, ends the threads,
        closes an owned Runtime."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.get_running_loop().run_in_executor(None, self._close_sync)

    def _close_sync(self) -> None:
        self._executor.shutdown(wait=True)
        self.runtime.remove_invocation_listener(self.metrics.record_delivery)
        if self.owns_runtime:
            self.runtime.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- requests ------------------------------------------------------------------------
    def _handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            request_id = str(uuid.uuid4())
            try:
                reply = await self._dispatch(request, route)
            except SandboxError as exc:
                return error_reply(exc, request_id)
            except Exception:  # noqa: BLE001 - a fault here must not kill the server
                log.exception("%s failed", route.operation)
                return error_reply(ServiceException(
                    f"{route.operation} failed inside the sandbox; see the server log"),
                    request_id)
            reply.headers.setdefault("X-Amzn-RequestId", request_id)
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

        return handle

    async def _dispatch(self, request: web.Request, route: Route) -> Reply:
        body = await _read_body(request, route)
        caller = None
        if self.credentials is not None:
            access_key = verify(SignedRequest(request.method, request.raw_path,
                                              request.headers, body), self.credentials.keys)
            caller = self.credentials.principal_of(access_key)
        if route.pending is not None:
            raise NotImplementedOperationException(
                f"{route.operation} is not available in this build: it comes with "
                f"{route.pending}")
        call = Call(request.match_info, request.query, request.headers, body, caller,
                    {"aws:SourceIp": request.remote or "", "aws:SecureTransport": request.secure})
        assert route.handler is not None
        handler = route.handler
        operations = self.operations

        def run() -> Reply:
            if route.action is not None:
                authorize_action(self.runtime, caller, route.action,
                                 _target_function(route, call, self.runtime.account_id),
                                 call.request_context)
            return handler(operations, call)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, run)

    async def _unknown(self, request: web.Request) -> web.Response:
        return error_reply(UnknownOperationException(
            f"No Lambda operation is {request.method} {request.path}"), str(uuid.uuid4()))

    async def _metrics(self, request: web.Request) -> web.Response:
        # Prometheus scrapes without signing; the server listens on loopback by default.
        body = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _target_function(route: Route, call: Call, account_id: str) -> str | None:
    """The function an operation acts on, for its authorization."""
    if "FunctionName" in call.params:
        return function_ref(call.params["FunctionName"], account_id)[0]
    if route.operation in ("CreateFunction", "CreateEventSourceMapping"):
        return function_ref(str(call.json().get("FunctionName", "")), account_id)[0]
    return None


async def _read_body(request: web.Request, route: Route) -> bytes:
    """The request body, refused once it passes the route's limit."""
    limit = route.max_body
    what = ("for the InvokeFunction operation" if route.operation == "Invoke"
            else f"for the {route.operation} operation")
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLargeException(
            f"Request must be smaller than {limit} bytes {what} (got {request.content_length})")
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeException(f"Request must be smaller than {limit} bytes {what}")
        chunks.append(chunk)
    return b"".join(chunks)


# -- running ---------------------------------------------------------------------------
def serve_forever(server: LambdaServer, ready: Callable[[LambdaServer], None] | None = None
                  ) -> None:
    """Runs ``server`` until SIGTERM or SIGINT, then shuts it down gracefully."""

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        try:
            await server.start()
            if ready is not None:
                ready(server)
            await stopping.wait()
            log.info("shutting down: finishing requests in flight")
        finally:
            await server.stop()

    asyncio.run(main())


class ServerThread:
    """A LambdaServer on its own event loop thread (tests, embedding).

    ``start()`` returns once it listens; ``stop()`` shuts it down gracefully
    and joins the thread.
    """

    def __init__(self, server: LambdaServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"{server.thread_name_prefix}-loop", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result()
            asyncio.run_coroutine_threadsafe(self._loop.shutdown_default_executor(),
                                             self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
