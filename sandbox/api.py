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
from collections.abc import Mapping, Sequence
from typing import Any, cast

from . import constants as C
from .environments import FunctionPool, Supervisor
from .environments.tree import DEFAULT_PRELOAD, ZygoteTree
from .errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
    ResourceConflictException,
    ResourceNotFoundException,
    ServiceException,
)
from .functions import FunctionConfig, validate, validate_preload
from .iam import Authorizer, DelegatedChecks, IamRegistry, Principal
from .invoke import sync
from .invoke.asynchronous import AsyncInvoker
from .invoke.concurrency import (
    RESERVED_SETTINGS_KIND,
    ConcurrencyLimiter,
    SharedConcurrencyLimiter,
)
from .invoke.destinations import Destinations
from .invoke.ids import new_request_id
from .invoke.mappings import MappingManager
from .invoke.platform import PlatformHandler, PlatformService
from .invoke.pollers import MappingContext
from .invoke.sync import InvokeResult
from .limits import HostLimits
from .logs import FunctionLog
from .services.arns import Arns
from .services.queues import QueueService
from .services.streams import StreamService
from .store import SharedStore, open_store
from .store.lock import StateDirLock

log = logging.getLogger("sandbox")

INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
_UNSET: Any = object()
# Settings kinds of the store (per function) and the wait for background threads on close.
CONCURRENCY_KIND = RESERVED_SETTINGS_KIND
INVOCATION_THREADS_JOIN_S = 10.0
# How often a Runtime on a shared store reads IAM records again.
IAM_RELOAD_S = 1.0


class _Function:
    """A registered function: its configuration, pool and log, and what serves
    its platform calls (as its execution role) on every invocation path."""

    __slots__ = ("config", "pool", "log", "arn", "platform", "record_key")

    def __init__(self, config: FunctionConfig, pool: FunctionPool, log: FunctionLog,
                 arn: str, platform: PlatformHandler) -> None:
        self.config = config
        self.pool = pool
        self.log = log
        self.arn = arn
        self.platform = platform
        # Its stored record, as compared with the store's on every lookup of
        # a shared store (_same_record): made once, not per invocation.
        self.record_key = _record_key(config.to_record())


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
        retry_base_delay_s: asynchronous retries wait this long, then twice
            as long (Lambda: about 1 and 2 minutes); throttled events and
            failing stream batches back off from 1/60 of it to 5 times it.
        async_payload_max: the largest Event payload in bytes.
        preload: modules the base zygote imports once for every function
            zygote forked from it (the zygote tree; default: the standard
            library modules handlers commonly use). A function's own
            ``preload`` (and what its INIT imported) picks a tree node.
        fsync_commits: fsync the database on every commit (SQLite
            ``synchronous=FULL``), so that acknowledged events also survive
            an operating-system crash or power loss; by default a commit
            survives the process being killed, not the machine going down.
        store: "sqlite" (the state dir's database) or a Redis URL
            (``redis://host:port/db``, option ``?lease_s=10``) that several
            Runtimes share: see sandbox/store/redis.py.
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
        retry_base_delay_s: float = C.ASYNC_RETRY_BASE_DELAY_S,
        async_payload_max: int = C.ASYNC_PAYLOAD_MAX,
        fsync_commits: bool = False,
        store: str = "sqlite",
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        base_preload = validate_preload(preload)
        if idle_timeout_s <= 0:
            raise InvalidParameterValueException(
                f"idle_timeout_s must be positive, got {idle_timeout_s!r}")
        if concurrency_limit < 1:
            raise InvalidParameterValueException(
                f"concurrency_limit must be at least 1, got {concurrency_limit!r}")
        if retry_base_delay_s <= 0:
            raise InvalidParameterValueException(
                f"retry_base_delay_s must be positive, got {retry_base_delay_s!r}")
        if async_payload_max < 1:
            raise InvalidParameterValueException(
                f"async_payload_max must be positive, got {async_payload_max!r}")
        self.async_payload_max = async_payload_max
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
        # Reentrant: _get may open a function of a shared store under it.
        self._lock = threading.RLock()
        self._functions: dict[str, _Function] = {}
        self._generation = 0
        self._closed = False
        # A refusal here (a bad user, required cgroups missing, the state dir
        # in use) leaves nothing held: no cgroup directory, lock or database.
        self._host = HostLimits(cgroups, isolation, cpu_follows_memory, user)
        try:
            self._state_lock = StateDirLock(self.state_dir)  # one Runtime per state dir
            try:
                self._store = open_store(store, self.state_dir, fsync_commits)
            except BaseException:
                self._state_lock.release()
                raise
        except BaseException:
            self._host.close()
            raise
        self._supervisor = Supervisor()
        self._tree = ZygoteTree(self._supervisor, self._host_environ(), self.python,
                                base_preload, self._check_open)
        # -- permissions (sandbox/iam) --
        self._iam = IamRegistry(self._store, account_id)
        self._authorizer = Authorizer(self._iam, account_id)
        self._platform = PlatformService(self)
        for record in self._store.list_functions():
            config = FunctionConfig.from_record(record)
            self._functions[config.name] = self._open_function(config)
        self._open_invocation_models(retry_base_delay_s)
        self._schedule_idle_sweep()
        if self._store.shared:
            self._schedule_iam_reload()

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
        # Background work stops before functions disappear, so that no delivery
        # takes a closing Runtime for a deleted function (and drops its event).
        self._stop_invocation_models()
        with self._lock:
            functions = list(self._functions.values())
            self._functions.clear()
        for function in functions:
            function.pool.close(force=True)
        self._join_invocation_models()
        self._platform.close()
        self._tree.close()
        for function in functions:
            # A zygote booting in the background died with the tree.
            function.pool.join_background(5.0)
        self._supervisor.stop()
        self._host.close()
        for function in functions:
            function.log.close()
        self._store.close()
        self._state_lock.release()
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
        preload: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Registers a function; returns its configuration in Lambda's shape.

        ``code`` is a directory used in place. ``start`` is "snapshot" (fork
        from a zygote that ran INIT once) or "cold" (a new interpreter each).
        ``role`` is the ARN of its execution role (see :meth:`create_role`):
        what its platform calls may do. Without one, it may make none.
        ``preload`` names packages its INIT imports: its zygote forks from a
        zygote-tree node that imported them already (and only them).

        Raises:
            InvalidParameterValueException: a bad name, handler, memory size,
                timeout, environment or code directory; a role whose trust
                policy does not let lambda.amazonaws.com assume it.
            ResourceConflictException: the function exists.
        """
        config = validate(name, handler, code, memory_mb, timeout_s, environment, start,
                          description, network, role, preload)
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
        environment, start, description, network, role, preload: a new role
        passes the trust-policy check of create_function). New invocations
        get new environments; running ones finish in their old environment."""
        allowed = {"handler", "code", "memory_mb", "timeout_s", "environment", "start",
                   "description", "network", "role", "preload"}
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
            self._store.delete_function_settings(None, name)
            self._limiter.set_reserved(name, None)
            self._async.forget_function(name)
        function.pool.close()
        function.log.close()

    def get_function(self, name: str) -> dict[str, Any]:
        """The function's configuration in Lambda's FunctionConfiguration shape."""
        function = self._get(name)
        return function.config.to_lambda(function.arn)

    def list_functions(self) -> list[dict[str, Any]]:
        if self._store.shared:  # as other Runtimes registered, changed or deleted them
            stored = {FunctionConfig.from_record(r).name for r in self._store.list_functions()}
            for name in stored | set(self._functions):
                self._lookup(name)
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
        JSON already. "Event" returns status 202 once the event is stored
        durably; "DryRun" only checks the caller's permission (204 when
        allowed) and runs nothing.

        ``caller`` is who invokes: None is the root user of this Runtime's
        account (allowed unless the function's policy denies it); otherwise a
        user or role ARN, an account id, or a :class:`sandbox.iam.Principal`
        such as ``sandbox.iam.service("s3.amazonaws.com", source_arn=...)``.
        ``request_context`` adds condition keys the transport knows (the HTTP
        API: ``aws:SourceIp``, ``aws:SecureTransport``).

        Raises:
            AccessDeniedException: the caller may not invoke the function.
            ResourceNotFoundException: no such function (or qualifier).
            RequestTooLargeException: the JSON payload is over 6 MB (1 MiB,
                ``async_payload_max``, for Event).
            InvalidRequestContentException: bytes/str payload is not JSON.
            TooManyRequestsException: a synchronous invoke found the Runtime's
                limit or the function's reserved concurrency reached.
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
            if len(body) > self.async_payload_max:
                raise RequestTooLargeException(
                    f"Request must be smaller than {self.async_payload_max} bytes for the "
                    f"InvokeFunction operation with an Event invocation (got {len(body)})")
            self._async.accept(name, request_id, body)
            return InvokeResult(202, b"", None, "", None, request_id, executed_version=None)
        self._limiter.acquire_or_throttle(name)
        try:
            return sync.invoke(function.pool, function.log, request_id, body, function.arn,
                               dict(client_context) if client_context else None,
                               platform=function.platform)
        finally:
            self._limiter.release(name)

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

    @property
    def concurrent_executions(self) -> int:
        """Invocations running now (synchronous, asynchronous and polled)."""
        return self._limiter.total_running

    def capabilities(self) -> dict[str, Any]:
        """What this host enforces for every environment, and why not where
        it does not (the report of ``sandbox doctor``)."""
        return self._host.describe()

    def zygote_tree(self) -> dict[str, Any]:
        """The zygote processes: ``tree``, the base and its nodes (pid, parent
        pid, packages a node holds beyond the base), and ``functions``, each
        function's zygote pid (None while it has none) and its parent's pid."""
        with self._lock:
            functions = dict(self._functions)
        return {"tree": self._tree.describe(),
                "functions": {name: f.pool.zygote_info() for name, f in functions.items()}}

    def wait_zygote_boot(self, name: str, timeout_s: float = 10.0) -> None:
        """Waits (at most ``timeout_s``) for the zygote boot that a snapshot
        function's first start began in the background, so that later starts
        fork from the zygote rather than from the zygote tree."""
        self._get(name).pool.join_background(timeout_s)

    def stats(self, name: str) -> dict[str, int]:
        """Environments of a function: idle and busy counts."""
        function = self._get(name)
        return {"idle": function.pool.idle_count, "busy": function.pool.busy}

    # -- invocation models: asynchronous invoke, queues, streams, mappings (issue 4) --------
    # (thin delegation to sandbox/invoke/ and sandbox/services/)
    def _open_invocation_models(self, retry_base_delay_s: float) -> None:
        """Services, the concurrency limiter, async delivery and pollers; the
        stored events and enabled mappings resume at once."""
        self.arns = Arns(self.region, self.account_id)  # public: ARNs of this region/account
        self._queues = QueueService(self._store, self.arns)
        self._streams = StreamService(self._store, self.arns)
        reserved = {name: int(record["ReservedConcurrentExecutions"]) for name, record
                    in self._store.list_function_settings(CONCURRENCY_KIND).items()}
        self._limiter = (SharedConcurrencyLimiter(cast(SharedStore, self._store),
                                                  self.concurrency_limit, reserved)
                         if self._store.shared
                         else ConcurrencyLimiter(self.concurrency_limit, reserved))
        checks = DelegatedChecks(self._authorizer, self._function_identity)
        destinations = Destinations(self.arns, self._queues,
                                    lambda name: self._lookup(name) is not None, checks)
        self._async = AsyncInvoker(self._store, self.arns, self._limiter, self._lookup,
                                   destinations, self._queues.notify, retry_base_delay_s)
        context = MappingContext(
            self._store, self.arns, self._queues, self._streams, self._limiter,
            self._lookup, destinations, self._async.schedule_stored, retry_base_delay_s)
        self._async.on_invoked = context.on_invoked = self._invoked  # metrics listeners
        self._mappings = MappingManager(context)

    def _lookup(self, name: str) -> _Function | None:
        """A registered function (for every invocation path). With a shared
        store the stored record decides: a function another Runtime
        registered is opened here, one it updated is reopened (running
        invocations finish in their old environments), one it deleted is
        closed here too."""
        function = self._functions.get(name)
        if not self._store.shared or self._closed:
            return function
        record = self._store.get_function(name)
        if function is not None and record is not None and _same_record(function, record):
            return function
        retired: _Function | None = None
        with self._lock:
            if self._closed:
                return None
            # Again under the lock, which this Runtime's own changes hold while
            # they write: a record read before one of them is not acted on.
            record = self._store.get_function(name)
            function = self._functions.get(name)
            if record is None:
                if function is not None:  # deleted through another Runtime
                    retired = self._functions.pop(name)
                    self._async.forget_function(name)
                function = None
            elif function is None or not _same_record(function, record):
                retired = function
                function = self._open_function(FunctionConfig.from_record(record),
                                               function.log if function else None)
                self._functions[name] = function
        if retired is not None:
            retired.pool.close()
            if function is None:
                retired.log.close()
        return function

    def _function_identity(self, name: str) -> tuple[str, str | None] | None:
        """(ARN, execution role) of a function, for the role checks of its
        destinations and mappings; None when it does not exist."""
        function = self._lookup(name)
        return None if function is None else (function.arn, function.config.role)

    def create_queue(self, name: str, visibility_timeout_s: int = 30,
                     max_receive_count: int | None = None,
                     dead_letter_queue: str | None = None,
                     message_retention_s: int = C.QUEUE_RETENTION_DEFAULT_S) -> str:
        """Creates a queue with SQS semantics; returns its ARN. A redrive
        policy moves a message to ``dead_letter_queue`` (name or ARN) after
        ``max_receive_count`` receives; messages are kept ``message_retention_s``."""
        return self._queues.create_queue(name, visibility_timeout_s, max_receive_count,
                                         dead_letter_queue, message_retention_s)

    def delete_queue(self, queue: str) -> None:
        self._queues.delete_queue(queue)

    def get_queue(self, queue: str) -> dict[str, Any]:
        """A queue's attributes and approximate message counts."""
        return self._queues.get_queue(queue)

    def list_queues(self) -> list[str]:
        return self._queues.list_queues()

    def send_message(self, queue: str, body: str,
                     attributes: Mapping[str, Any] | None = None) -> str:
        """Sends a message (``attributes``: SQS message attributes, a str
        value meaning a String one); returns its id once durable."""
        return self._queues.send_message(queue, body, attributes)

    def receive_messages(self, queue: str, max_messages: int = 10, wait_s: float = 0,
                         visibility_timeout_s: int | None = None) -> list[dict[str, Any]]:
        """SQS ReceiveMessage: dicts with message_id, receipt_handle, body,
        md5_of_body, attributes (ApproximateReceiveCount, ...) and message_attributes."""
        return self._queues.receive_messages(queue, max_messages, wait_s, visibility_timeout_s)

    def delete_message(self, queue: str, receipt_handle: str) -> None:
        self._queues.delete_message(queue, receipt_handle)

    def create_stream(self, name: str, shards: int = 1,
                      retention_hours: int = C.STREAM_RETENTION_DEFAULT_H) -> str:
        """Creates a stream with Kinesis semantics; returns its ARN."""
        return self._streams.create_stream(name, shards, retention_hours)

    def delete_stream(self, stream: str) -> None:
        self._streams.delete_stream(stream)

    def put_record(self, stream: str, data: bytes | str, partition_key: str) -> str:
        """Appends a record to the shard of ``partition_key``; returns its
        sequence number once durable."""
        return self._streams.put_record(stream, data, partition_key)

    def put_function_event_invoke_config(
            self, name: str, maximum_retry_attempts: int | None = None,
            maximum_event_age_s: int | None = None, on_success: str | None = None,
            on_failure: str | None = None) -> dict[str, Any]:
        """Asynchronous invoke settings (replacing any earlier ones);
        destinations are queue or function ARNs. Returns Lambda's shape."""
        return self._async.put_config(name, self._get(name).arn, maximum_retry_attempts,
                                      maximum_event_age_s, on_success, on_failure)

    def get_function_event_invoke_config(self, name: str) -> dict[str, Any]:
        return self._async.get_config(name, self._get(name).arn)

    def delete_function_event_invoke_config(self, name: str) -> None:
        self._async.delete_config(name, self._get(name).arn)

    def put_function_dead_letter_config(self, name: str, target_arn: str | None) -> None:
        """The function's DeadLetterConfig: failed Event invokes' bare events
        go to this queue (None removes it)."""
        self._get(name)
        self._async.put_dead_letter(name, target_arn)

    def get_function_dead_letter_config(self, name: str) -> dict[str, Any]:
        self._get(name)
        target = self._async.get_dead_letter(name)
        return {"TargetArn": target} if target else {}

    def put_function_concurrency(self, name: str,
                                 reserved_concurrent_executions: int) -> dict[str, Any]:
        """Reserves concurrency for a function (0 stops it from running)."""
        self._get(name)
        self._limiter.set_reserved(name, reserved_concurrent_executions)
        record = {"ReservedConcurrentExecutions": reserved_concurrent_executions}
        self._store.put_function_settings(CONCURRENCY_KIND, name, record)
        return record

    def get_function_concurrency(self, name: str) -> dict[str, Any]:
        self._get(name)
        return self._store.get_function_settings(CONCURRENCY_KIND, name) or {}

    def delete_function_concurrency(self, name: str) -> None:
        self._get(name)
        self._limiter.set_reserved(name, None)
        self._store.delete_function_settings(CONCURRENCY_KIND, name)

    def create_event_source_mapping(
            self, function: str, event_source_arn: str, *, batch_size: int | None = None,
            maximum_batching_window_s: int | None = None,
            function_response_types: tuple[str, ...] | list[str] = (),
            starting_position: str | None = None,
            bisect_batch_on_function_error: bool | None = None,
            maximum_retry_attempts: int | None = None, maximum_record_age_s: int | None = None,
            on_failure: str | None = None, parallelization_factor: int | None = None,
            enabled: bool = True) -> str:
        """Polls a queue or stream and invokes ``function`` with batches;
        returns the mapping's UUID. Options left None take Lambda's default
        for the source; stream-only options are refused for queues."""
        return self._mappings.create(
            function, event_source_arn, batch_size=batch_size,
            maximum_batching_window_s=maximum_batching_window_s,
            function_response_types=function_response_types,
            starting_position=starting_position,
            bisect_batch_on_function_error=bisect_batch_on_function_error,
            maximum_retry_attempts=maximum_retry_attempts,
            maximum_record_age_s=maximum_record_age_s, on_failure=on_failure,
            parallelization_factor=parallelization_factor, enabled=enabled)

    def get_event_source_mapping(self, uuid: str) -> dict[str, Any]:
        return self._mappings.get(uuid)

    def list_event_source_mappings(self, function: str | None = None,
                                   event_source_arn: str | None = None) -> list[dict[str, Any]]:
        return self._mappings.list(function, event_source_arn)

    def update_event_source_mapping(self, uuid: str, **changes: Any) -> dict[str, Any]:
        return self._mappings.update(uuid, **changes)

    def delete_event_source_mapping(self, uuid: str) -> dict[str, Any]:
        """Stops the mapping (its batch in flight finishes first) and removes it."""
        return self._mappings.delete(uuid)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Waits until no asynchronous event is stored or being delivered and
        every enabled mapping has nothing to read and no batch in flight;
        returns whether that happened within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not (self._async.idle() and self._mappings.idle()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _stop_invocation_models(self) -> None:
        self._mappings.stop()
        self._async.stop()
        self._queues.close()
        self._streams.close()
        self._limiter.wake()

    def _join_invocation_models(self) -> None:
        self._mappings.join(INVOCATION_THREADS_JOIN_S)
        self._async.join(INVOCATION_THREADS_JOIN_S)
    # -- end of invocation models (issue 4) -------------------------------------------------

    # -- interfaces: figures and invocation listeners for metrics (issue 6) ----------------
    # (read-only views for sandbox/http/metrics.py, through the store's figures)
    _invocation_listeners: tuple[Any, ...] = ()  # replaced whole, so readers need no lock

    def add_invocation_listener(self, listener: Any) -> None:
        """Calls ``listener(function, source, result)`` after every invocation
        that asynchronous delivery (source "async") or an event source mapping
        (source "mapping") makes; ``result`` is the InvokeResult. A listener
        must be quick and must not raise (a raise is logged and ignored)."""
        with self._lock:
            self._invocation_listeners = (*self._invocation_listeners, listener)

    def remove_invocation_listener(self, listener: Any) -> None:
        with self._lock:
            self._invocation_listeners = tuple(
                existing for existing in self._invocation_listeners if existing != listener)

    def _invoked(self, function: str, source: str, result: InvokeResult) -> None:
        """Tells the listeners about an invocation made by ``source``: the hook
        that sandbox/invoke/asynchronous.py and pollers.py call after sync.invoke."""
        for listener in self._invocation_listeners:
            try:
                listener(function, source, result)
            except Exception:  # noqa: BLE001 - a listener must not break a delivery
                log.exception("invocation listener %r failed", listener)

    def async_backlog(self) -> dict[str, dict[str, float]]:
        """Stored asynchronous events by function (pending, waiting for a retry or
        being delivered): ``{"depth": count, "oldest_age_s": seconds since the
        oldest was accepted}``."""
        now = time.time()
        return {function: {"depth": float(count), "oldest_age_s": max(now - oldest, 0.0)}
                for function, (count, oldest) in self._store.event_backlog().items()}

    def mapping_lag(self) -> list[dict[str, Any]]:
        """How far each event source mapping is behind its source: UUID,
        FunctionArn, EventSourceArn, State, ``waiting`` (messages in the queue,
        visible or in flight; stream records after the mapping's checkpoints)
        and ``age_s`` (seconds since the oldest of those arrived; 0 when none)."""
        now = time.time()
        lags = []
        for record in self._mappings.list():
            service, source = self.arns.parse(record["EventSourceArn"])
            if service == "sqs":
                waiting, oldest = self._store.queue_backlog(source)
            else:
                waiting, oldest = 0, None
                lanes = int(record.get("ParallelizationFactor", 1))
                for (shard, lane), position in self._store.get_checkpoints(
                        record["UUID"]).items():
                    count, first = self._store.stream_backlog(source, shard, position, lanes,
                                                              lane)
                    waiting += count
                    if first is not None:
                        oldest = first if oldest is None else min(oldest, first)
            lags.append({key: record[key] for key in
                         ("UUID", "FunctionArn", "EventSourceArn", "State")}
                        | {"waiting": waiting,
                           "age_s": max(now - oldest, 0.0) if oldest is not None else 0.0})
        return lags
    # -- end of interfaces (issue 6) ----------------------------------------------------------

    # -- internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ServiceException("this Runtime is closed")

    def _get(self, name: str) -> _Function:
        function = self._lookup(name)
        if function is None:
            raise ResourceNotFoundException(f"Function not found: {self.function_arn(name)}")
        return function

    def _open_function(self, config: FunctionConfig,
                       function_log: FunctionLog | None = None) -> _Function:
        self._generation += 1
        flog = function_log or FunctionLog(self.log_path(config.name))
        pool = FunctionPool(config, self._generation, self._supervisor, self._tree.base,
                            self._tree.parent_for,
                            self._function_environ(config), flog.write, self._host)
        arn = self.function_arn(config.name)
        return _Function(config, pool, flog, arn,
                         self._platform.handler(config.name, arn, config.role))

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

    def _retire_idle_zygotes(self, idle_for_s: float) -> None:
        """Function zygotes, then tree nodes, unused for ``idle_for_s``."""
        with self._lock:
            functions = list(self._functions.values())
        for function in functions:
            function.pool.retire_idle_zygote(idle_for_s)
        self._tree.retire_idle(idle_for_s)

    def _schedule_idle_sweep(self) -> None:
        period = min(max(self.idle_timeout_s / 4, 0.05), 10.0)

        def sweep() -> None:
            if self._closed:
                return
            try:
                self.shutdown_idle(idle_for_s=self.idle_timeout_s)
                self._retire_idle_zygotes(self.idle_timeout_s)
            finally:
                self._supervisor.call_later(period, sweep)

        self._supervisor.call_later(period, sweep)

    def _schedule_iam_reload(self) -> None:
        """With a shared store: users, roles and function policies that other
        Runtimes create, change or delete reach this one within a second."""

        def reload() -> None:
            if self._closed:
                return
            try:
                self._iam.reload()
            except Exception:  # a store outage: the next reload tries again
                logging.getLogger("sandbox.iam").warning("cannot reload IAM records",
                                                         exc_info=True)
            finally:
                self._supervisor.call_later(IAM_RELOAD_S, reload)

        self._supervisor.call_later(IAM_RELOAD_S, reload)


def _record_key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def _same_record(function: _Function, record: dict[str, Any]) -> bool:
    """Whether a stored function record is the configuration ``function`` runs."""
    return function.record_key == _record_key(record)


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
