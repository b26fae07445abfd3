"""The Python API: :class:`Runtime`.

A Runtime owns a state directory (a temporary one unless given), the function
registry in it, one pool of execution environments per function, a launcher
zygote for cold starts and a supervisor thread. Nothing it starts outlives it:
``close()`` (or leaving the ``with`` block) ends every process, and if the
owning process dies, its zygotes see their control sockets close and take
their environments with them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from . import constants as C
from .environments import FunctionPool, Supervisor, Zygote
from .errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
    ResourceConflictException,
    ResourceNotFoundException,
    ServiceException,
    TooManyRequestsException,
)
from .functions import FunctionConfig, validate
from .iam import Authorizer, IamRegistry, Principal
from .invoke import sync
from .invoke.platform import PlatformService
from .invoke.sync import InvokeResult
from .limits import HostLimits
from .logs import FunctionLog
from .store import SQLiteStore

log = logging.getLogger("sandbox")

INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
_UNSET: Any = object()


class _Function:
    """A registered function: its configuration, pool and log."""

    __slots__ = ("config", "pool", "log", "arn")

    def __init__(self, config: FunctionConfig, pool: FunctionPool, log: FunctionLog,
                 arn: str) -> None:
        self.config = config
        self.pool = pool
        self.log = log
        self.arn = arn


class Runtime:
    """A local Lambda-style runtime.

    Args:
        state_dir: where the registry (``sandbox.db``) and logs (``logs/``)
            live; a temporary directory, removed on close, when None.
        region, account_id: used in ARNs and the functions' environment.
        idle_timeout_s: idle environments are shut down after this long.
        concurrency_limit: concurrent executions across all functions; a
            synchronous invoke beyond it raises TooManyRequestsException.
        python: the interpreter that runs zygotes and cold environments.
        cgroups: None detects and uses cgroups where the host allows (else
            warns and falls back to rlimits); True requires them; False
            uses rlimits only.
        isolation: False runs environments without namespaces, read-only
            root, capability drop, uid switch, no_new_privs and seccomp
            (reported by capabilities()).
        cpu_follows_memory: as in Lambda, an environment gets CPU in
            proportion to its memory (1,769 MB = one vCPU; 128 MB is 7 % of
            one, which makes a cold start about ten times slower); False
            leaves CPU unlimited.
        user: None gives every environment a uid and gid of its own, leased
            from a host-wide range (so environments cannot signal or read one
            another, and RLIMIT_NPROC counts each alone); a user name runs
            every environment as that user instead.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        region: str = C.DEFAULT_REGION,
        account_id: str = C.DEFAULT_ACCOUNT_ID,
        idle_timeout_s: float = 300.0,
        concurrency_limit: int = 1000,
        python: str = sys.executable,
        cgroups: bool | None = None,
        isolation: bool = True,
        cpu_follows_memory: bool = True,
        user: str | None = None,
    ) -> None:
        if idle_timeout_s <= 0:
            raise InvalidParameterValueException(
                f"idle_timeout_s must be positive, got {idle_timeout_s!r}")
        if concurrency_limit < 1:
            raise InvalidParameterValueException(
                f"concurrency_limit must be at least 1, got {concurrency_limit!r}")
        self._owns_state_dir = state_dir is None
        self.state_dir = (tempfile.mkdtemp(prefix="sandbox-") if state_dir is None
                          else os.path.abspath(os.fspath(state_dir)))
        if self._owns_state_dir:
            # A Runtime dropped without close() still removes its temporary dir.
            weakref.finalize(self, shutil.rmtree, self.state_dir, True)
        os.makedirs(os.path.join(self.state_dir, "logs"), exist_ok=True)
        self.region = region
        self.account_id = account_id
        self.idle_timeout_s = idle_timeout_s
        self.concurrency_limit = concurrency_limit
        self.python = python
        self._lock = threading.Lock()
        self._functions: dict[str, _Function] = {}
        self._generation = 0
        self._in_flight = 0
        self._launcher: Zygote | None = None
        self._launcher_lock = threading.Lock()
        self._closed = False
        self._store = SQLiteStore(os.path.join(self.state_dir, "sandbox.db"))
        self._host = HostLimits(cgroups, isolation, cpu_follows_memory, user)
        self._supervisor = Supervisor()
        # -- permissions (sandbox/iam) --
        self._iam = IamRegistry(self._store, account_id)
        self._authorizer = Authorizer(self._iam, account_id)
        self._platform = PlatformService(self)
        for record in self._store.list_functions():
            config = FunctionConfig.from_record(record)
            self._functions[config.name] = self._open_function(config)
        self._schedule_idle_sweep()

    # -- templates (sandbox/sam) ----------------------------------------------------
    @classmethod
    def from_template(cls, path: str | os.PathLike[str],
                      parameters: Mapping[str, str] | None = None, **options: Any) -> Runtime:
        """A Runtime (``options`` as for the constructor) with the functions
        and roles of a SAM template (see :mod:`sandbox.sam`); unsupported
        properties are named in ``sandbox.sam.TemplateWarning`` warnings.

        Raises:
            InvalidParameterValueException: naming the resource and property at fault.
        """
        from .sam import apply_template

        runtime = cls(**options)
        try:
            apply_template(runtime, path, parameters)
        except BaseException:
            runtime.close()
            raise
        return runtime

    # -- context management -------------------------------------------------------
    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends every environment and zygote; removes a temporary state dir."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            functions = list(self._functions.values())
            self._functions.clear()
        for function in functions:
            function.pool.close(force=True)
        self._platform.close()
        with self._launcher_lock:
            if self._launcher is not None:
                self._launcher.close()
        self._supervisor.stop()
        self._host.close()
        for function in functions:
            function.log.close()
        self._store.close()
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- naming -------------------------------------------------------------------
    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def log_path(self, name: str) -> str:
        """The function's log file: START/output/END/REPORT blocks."""
        return os.path.join(self.state_dir, "logs", f"{name}.log")

    # -- management ---------------------------------------------------------------
    def create_function(
        self,
        name: str,
        handler: str,
        code: str | os.PathLike[str],
        memory_mb: int = C.DEFAULT_MEMORY_MB,
        timeout_s: float = C.DEFAULT_TIMEOUT_S,
        environment: Mapping[str, str] | None = None,
        start: str = "snapshot",
        description: str = "",
        network: str = "none",
        role: str | None = None,
    ) -> dict[str, Any]:
        """Registers a function; returns its configuration in Lambda's shape.

        ``code`` is a directory used in place. ``start`` is "snapshot" (fork
        from a zygote that ran INIT once) or "cold" (a new interpreter each).
        ``role`` is the ARN of its execution role (see :meth:`create_role`):
        what its platform calls may do. Without one, it may make none.

        Raises:
            InvalidParameterValueException: a bad name, handler, memory size,
                timeout, environment or code directory; a role whose trust
                policy does not let lambda.amazonaws.com assume it.
            ResourceConflictException: the function exists.
        """
        config = validate(name, handler, code, memory_mb, timeout_s, environment, start,
                          description, network, role)
        if role is not None:
            self._authorizer.check_execution_role(role, self.function_arn(name))
        with self._lock:
            self._check_open()
            if name in self._functions:
                raise ResourceConflictException(f"Function already exist: {name}")
            self._store.put_function(name, config.to_record())
            function = self._open_function(config)
            self._functions[name] = function
        return config.to_lambda(function.arn)

    def update_function(self, name: str, **changes: Any) -> dict[str, Any]:
        """Changes configuration or code (handler, code, memory_mb, timeout_s,
        environment, start, description, network, role: a new role passes the
        trust-policy check of create_function). New invocations get new
        environments; running ones finish in their old environment."""
        allowed = {"handler", "code", "memory_mb", "timeout_s", "environment", "start",
                   "description", "network", "role"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise InvalidParameterValueException(
                f"update_function cannot change {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}")
        with self._lock:
            self._check_open()
            old = self._get(name)
            current = old.config
            merged = {key: changes.get(key, getattr(current, key)) for key in allowed}
            config = validate(name, **merged)
            if changes.get("role") is not None:
                self._authorizer.check_execution_role(changes["role"], old.arn)
            self._store.put_function(name, config.to_record())
            function = self._open_function(config, old.log)
            self._functions[name] = function
        old.pool.close()
        return config.to_lambda(function.arn)

    def delete_function(self, name: str) -> None:
        """Removes a function; its environments shut down."""
        with self._lock:
            self._check_open()
            function = self._get(name)
            del self._functions[name]
            self._store.delete_function(name)
            self._iam.delete_function_policy(name)
        function.pool.close()
        function.log.close()

    def get_function(self, name: str) -> dict[str, Any]:
        """The function's configuration in Lambda's FunctionConfiguration shape."""
        function = self._get(name)
        return function.config.to_lambda(function.arn)

    def list_functions(self) -> list[dict[str, Any]]:
        with self._lock:
            functions = sorted(self._functions.values(), key=lambda f: f.config.name)
        return [f.config.to_lambda(f.arn) for f in functions]

    # -- invocation -----------------------------------------------------------------
    def invoke(
        self,
        name: str,
        payload: Any = None,
        invocation_type: str = "RequestResponse",
        *,
        client_context: Mapping[str, Any] | None = None,
        qualifier: str | None = None,
        caller: Principal | str | None = None,
        request_context: Mapping[str, Any] | None = None,
    ) -> InvokeResult:
        """Invokes a function.

        ``payload`` is any JSON-compatible value, or ``bytes``/``str`` holding
        JSON already. Only RequestResponse and DryRun exist so far; DryRun only
        checks the caller's permission (204 when allowed).

        ``caller`` is who invokes: None is the root user of this Runtime's
        account (allowed unless the function's policy denies it); otherwise a
        user or role ARN, an account id, or a :class:`sandbox.iam.Principal`
        such as ``sandbox.iam.service("s3.amazonaws.com", source_arn=...)``.
        ``request_context`` adds condition keys the transport knows (the HTTP
        API: ``aws:SourceIp``, ``aws:SecureTransport``).

        Raises:
            AccessDeniedException: the caller may not invoke the function.
            ResourceNotFoundException: no such function (or qualifier).
            RequestTooLargeException: the JSON payload is over 6 MB.
            InvalidRequestContentException: bytes/str payload is not JSON.
            TooManyRequestsException: the concurrency limit is reached.
        """
        function = self._get(name)
        if qualifier not in (None, C.LATEST_VERSION):
            raise ResourceNotFoundException(
                f"Function not found: {function.arn}:{qualifier} (only {C.LATEST_VERSION} exists)")
        if invocation_type not in INVOCATION_TYPES:
            raise InvalidParameterValueException(
                f"invocation_type must be one of {', '.join(INVOCATION_TYPES)}, "
                f"got {invocation_type!r}")
        self._authorizer.authorize_invoke(caller, name, function.arn, request_context)
        body = _encode_payload(payload)
        if len(body) > C.SYNC_PAYLOAD_MAX:
            raise RequestTooLargeException(
                f"Request must be smaller than {C.SYNC_PAYLOAD_MAX} bytes for the "
                f"InvokeFunction operation (got {len(body)})")
        request_id = new_request_id()
        if invocation_type == "DryRun":
            return InvokeResult(204, b"", None, "", None, request_id, executed_version=None)
        if invocation_type == "Event":
            raise InvalidParameterValueException(
                "invocation_type 'Event' (asynchronous invoke) is not implemented yet")
        with self._lock:
            if self._in_flight >= self.concurrency_limit:
                raise TooManyRequestsException(
                    f"Rate Exceeded. Concurrent executions would exceed the limit of "
                    f"{self.concurrency_limit}")
            self._in_flight += 1
        try:
            return sync.invoke(function.pool, function.log, request_id, body, function.arn,
                               dict(client_context) if client_context else None,
                               platform=self._platform.handler(name, function.arn,
                                                               function.config.role))
        finally:
            with self._lock:
                self._in_flight -= 1

    # -- permissions (sandbox/iam) ----------------------------------------------------
    def _authorize_invoke(self, caller: Principal | str | None, name: str,
                          request_context: Mapping[str, Any] | None = None) -> Principal:
        """The permission check of every invocation path: may ``caller``
        lambda:InvokeFunction function ``name``? Async accept, event source
        mappings (caller: ``sandbox.iam.service(<service>, source_arn=<queue or
        stream ARN>, source_account=...)``) and function destinations call it
        before they run or queue anything. ``request_context`` adds condition
        keys the transport knows (the HTTP API: ``aws:SourceIp``,
        ``aws:SecureTransport``). Returns the resolved caller.

        Raises:
            ResourceNotFoundException: no such function.
            AccessDeniedException: in IAM's words.
        """
        return self._authorizer.authorize_invoke(caller, name, self._get(name).arn,
                                                 request_context)

    def _authorize_role(self, name: str, actions: str | tuple[str, ...], resource: str) -> None:
        """May function ``name``'s execution role perform each of ``actions`` on
        ``resource``? For destinations (``C.DESTINATION_ACTIONS[service]`` on
        the destination's ARN) and event source mappings
        (``C.QUEUE_MAPPING_ACTIONS``, ``C.STREAM_MAPPING_ACTIONS`` on the
        source's ARN), when configured and again when used.

        Raises:
            AccessDeniedException: it has no role, or the role's policies do not
                allow one of the actions (named in the message).
        """
        function = self._get(name)
        session = self._authorizer.role_session(function.config.role, name, function.arn)
        for action in (actions,) if isinstance(actions, str) else actions:
            self._authorizer.authorize_role(session, action, resource)

    def add_permission(self, function: str, statement_id: str, action: str, principal: str,
                       source_arn: str | None = None, source_account: str | None = None,
                       principal_org_id: str | None = None) -> dict[str, Any]:
        """Lambda's AddPermission: adds a statement to the function's
        resource-based policy; returns ``{"Statement": <json>}``.

        Raises:
            ResourceConflictException: the statement id is taken.
            InvalidParameterValueException: a bad principal, action or condition.
        """
        return self._iam.add_permission(function, self._get(function).arn, statement_id,
                                        action, principal, source_arn, source_account,
                                        principal_org_id)

    def remove_permission(self, function: str, statement_id: str) -> None:
        """Lambda's RemovePermission (ResourceNotFoundException for an unknown id)."""
        self._get(function)
        self._iam.remove_permission(function, statement_id)

    def get_policy(self, function: str) -> dict[str, Any]:
        """Lambda's GetPolicy: ``{"Policy": <json>, "RevisionId": ...}``."""
        self._get(function)
        return self._iam.get_policy(function)

    def create_user(self, name: str, policies: list[Any] | None = None,
                    account: str | None = None) -> str:
        """An IAM user with identity policies, in this account or ``account``;
        returns its ARN (usable as ``caller``)."""
        return self._iam.create_user(name, policies, account)

    def put_user_policies(self, user_arn: str, policies: list[Any]) -> None:
        """Replaces a user's identity policies (effective on the next call)."""
        self._iam.put_user_policies(user_arn, policies)

    def delete_user(self, user_arn: str) -> None:
        self._iam.delete_user(user_arn)

    def create_role(self, name: str, trust_policy: Any,
                    policies: list[Any] | None = None) -> str:
        """A role with a trust policy and identity policies; returns its ARN."""
        return self._iam.create_role(name, trust_policy, policies)

    def update_role(self, role_arn: str, trust_policy: Any = None,
                    policies: list[Any] | None = None) -> None:
        """Replaces a role's trust policy and/or policies (effective on the next call)."""
        self._iam.update_role(role_arn, trust_policy, policies)

    def delete_role(self, role_arn: str) -> None:
        self._iam.delete_role(role_arn)

    def set_organization(self, account: str, organization_id: str | None) -> None:
        """Puts ``account`` in an AWS Organizations organization, for the
        ``aws:PrincipalOrgID`` condition (``add_permission(principal_org_id=)``)."""
        self._iam.set_organization(account, organization_id)

    # -- lifecycle --------------------------------------------------------------------
    def shutdown_idle(self, name: str | None = None, idle_for_s: float = 0.0,
                      wait: bool = False) -> int:
        """SHUTDOWN of idle environments (of one function or all) now; the next
        invocation starts a new one.

        Args:
            idle_for_s: only those idle at least this long.
            wait: return only once their processes have exited (at most the
                SHUTDOWN grace period plus a second).
        Returns:
            How many environments were shut down.
        """
        with self._lock:
            functions = [self._get(name)] if name is not None else list(self._functions.values())
        retired = [env for f in functions for env in f.pool.retire_idle(idle_for_s)]
        if wait:
            deadline = time.monotonic() + C.SHUTDOWN_GRACE_S + 1.0
            for env in retired:
                env.wait_exit(max(deadline - time.monotonic(), 0.0))
        return len(retired)

    def capabilities(self) -> dict[str, Any]:
        """What this host enforces for every environment, and why not where
        it does not (the report of ``sandbox doctor``)."""
        return self._host.describe()

    def stats(self, name: str) -> dict[str, int]:
        """Environments of a function: idle and busy counts."""
        function = self._get(name)
        return {"idle": function.pool.idle_count, "busy": function.pool.busy}

    # -- internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ServiceException("this Runtime is closed")

    def _get(self, name: str) -> _Function:
        function = self._functions.get(name)
        if function is None:
            raise ResourceNotFoundException(f"Function not found: {self.function_arn(name)}")
        return function

    def _open_function(self, config: FunctionConfig,
                       function_log: FunctionLog | None = None) -> _Function:
        self._generation += 1
        flog = function_log or FunctionLog(self.log_path(config.name))
        pool = FunctionPool(config, self._generation, self._supervisor, self._get_launcher,
                            self._function_environ(config), flog.write, self._host)
        return _Function(config, pool, flog, self.function_arn(config.name))

    def _host_environ(self) -> dict[str, str]:
        python_bin = os.path.dirname(self.python)
        return {
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "PYTHONPATH": _PACKAGE_PARENT,
        }

    def _function_environ(self, config: FunctionConfig) -> dict[str, str]:
        """Lambda's reserved variables, then the function's own."""
        environ = self._host_environ()
        environ.update({
            "LAMBDA_TASK_ROOT": config.code,
            "LAMBDA_RUNTIME_DIR": _RUNTIME_DIR,
            "_HANDLER": config.handler,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{C.RUNTIME_NAME}",
            "AWS_LAMBDA_FUNCTION_NAME": config.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": C.LATEST_VERSION,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
        })
        user = dict(config.environment)
        if "PYTHONPATH" in user:
            user["PYTHONPATH"] = f"{user['PYTHONPATH']}{os.pathsep}{_PACKAGE_PARENT}"
        environ.update(user)
        return environ

    def _get_launcher(self) -> Zygote:
        """The launcher zygote that execs cold environments (started on first use)."""
        with self._launcher_lock:
            self._check_open()
            if self._launcher is None or not self._launcher.alive:
                launcher = Zygote("launcher", self._host_environ(), "/", self.python)
                launcher.start(C.INIT_TIMEOUT_S)
                self._supervisor.watch(launcher)
                self._launcher = launcher
            return self._launcher

    def _schedule_idle_sweep(self) -> None:
        period = min(max(self.idle_timeout_s / 4, 0.05), 10.0)

        def sweep() -> None:
            if self._closed:
                return
            try:
                self.shutdown_idle(idle_for_s=self.idle_timeout_s)
            finally:
                self._supervisor.call_later(period, sweep)

        self._supervisor.call_later(period, sweep)


def new_request_id() -> str:
    """A random (version 4) UUID string; cheaper than str(uuid.uuid4())."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _encode_payload(payload: Any) -> bytes:
    """The JSON bytes of an invocation payload (Lambda payloads are JSON)."""
    if isinstance(payload, bytes | bytearray | memoryview):
        body = bytes(payload)
    elif isinstance(payload, str):
        body = payload.encode()
    else:
        try:
            return json.dumps(payload).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidRequestContentException(
                f"Could not serialize the payload as JSON: {exc}") from None
    if not body:
        return b"{}"
    try:
        json.loads(body)
    except ValueError as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: {exc}") from None
    return body
