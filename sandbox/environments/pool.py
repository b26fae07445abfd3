"""The environments of one function: warm reuse, snapshot and cold starts.

Idle environments are kept on a stack (the most recently used is reused first,
as its pages are the warmest). A start that finds none idle forks one from the
function's zygote (snapshot) or execs one through the launcher (cold).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..constants import (
    ERROR_EXIT,
    ERROR_OUT_OF_MEMORY,
    ERROR_TIMEOUT,
    INIT_TIMEOUT_S,
    LATEST_VERSION,
    SHUTDOWN_GRACE_S,
)
from ..errors import ProtocolError, ServiceException
from ..functions import PRELOAD_MAX, FunctionConfig
from ..limits import EnvironmentLimits, HostLimits, rlimits_for
from ..limits.cgroups import CgroupError, EnvCgroup, Limits
from ..limits.isolation import CLONE_NEWNET, with_network_made_ahead
from ..protocol import READY, check_version
from .environment import Environment, ExitRecord, Placement
from .supervisor import Supervisor
from .zygote import Rebuilds, Zygote, ZygoteExited

log = logging.getLogger("sandbox.environments")

# How long a forked child may take from SPAWN to READY (no INIT runs there).
SNAPSHOT_READY_TIMEOUT_S = 5.0
# Boot of a fresh interpreter before INIT starts, on top of INIT's own limit.
BOOT_ALLOWANCE_S = 5.0
# READY seen: how long more the SPAWNED report (on the supervisor thread) may take.
SPAWNED_WAIT_S = 1.0
# The Runtime's cgroups made ahead for first starts are made again this long
# after one was taken, when its start is most likely over (not to slow it).
REFILL_AFTER_S = 0.05


# Top-level modules that act on import (print, start a browser): never preloaded.
IMPORTS_WITH_EFFECTS = frozenset({"antigravity", "this"})


def learnable_imports(reported: Any) -> frozenset[str]:
    """Of the top-level packages a zygote reports its INIT imported (the word
    of function code), those a tree node, which runs as root outside any
    sandbox, may import: plain names this interpreter finds outside any
    function's code (a node's path has none), not private, acting on import
    no more than being imported."""
    import importlib.util

    if not isinstance(reported, list):
        return frozenset()
    names = set()
    for name in reported[:PRELOAD_MAX]:
        if (not isinstance(name, str) or not name.isidentifier() or name.startswith("_")
                or name in IMPORTS_WITH_EFFECTS):
            continue
        try:
            if importlib.util.find_spec(name) is None:  # finds, never imports
                continue
        except (ImportError, ValueError):
            continue
        names.add(name)
    return frozenset(names)


class InitFailed(Exception):
    """INIT failed: the function's module did not import, or its process died.

    ``document`` is the Lambda error document, ``output`` what INIT printed.
    """

    def __init__(self, document: dict[str, Any], init_ms: float | None, output: bytes,
                 start_kind: str) -> None:
        super().__init__(document.get("errorMessage", "INIT failed"))
        self.document = document
        self.init_ms = init_ms
        self.output = output
        self.start_kind = start_kind


def exit_document(record: ExitRecord | None, request_id: str,
                  out_of_memory: bool = False) -> dict[str, Any]:
    """Lambda's error for an environment that died; the OOM killer's victims
    get Runtime.OutOfMemory (known from the cgroup's counters, never guessed)."""
    reason = record.describe() if record is not None else "unknown"
    return {"errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {reason}",
            "errorType": ERROR_OUT_OF_MEMORY if out_of_memory else ERROR_EXIT,
            "stackTrace": []}


class FunctionPool:
    """Environments of one function configuration (one ``generation``)."""

    def __init__(
        self,
        config: FunctionConfig,
        generation: int,
        supervisor: Supervisor,
        launcher: Callable[[], Zygote],
        zygote_parent: Callable[[frozenset[str]], Zygote],
        base_environ: Mapping[str, str],
        write_log: Callable[[bytes], None],
        host: HostLimits,
    ) -> None:
        self.config = config
        self.limits = EnvironmentLimits.for_memory(config.memory_mb, host.cpu_follows_memory)
        self._host = host
        python_path = tuple(p for p in config.environment.get("PYTHONPATH", "").split(":") if p)
        self.isolation = host.isolation.spec(config.network, config.code,
                                             self.limits.ephemeral_mb, python_path)
        # With isolated INIT, a snapshot function's zygote is forked from the
        # base zygote (the launcher) into the function's isolation and uid,
        # and its children make user namespaces of their own. Otherwise it is
        # a fresh interpreter that runs INIT as root: in an empty network
        # namespace, making one for each child ahead of time (own_network).
        self._zygote_no_network = bool(self.isolation["unshare"] & CLONE_NEWNET)
        self._zygote_isolation = host.isolation.zygote_spec(self.isolation)
        # Code that only root can read keeps every environment at uid 0.
        self.isolated_init = (host.isolation.supported["isolated_init"]
                              and self._zygote_isolation["uid_per_environment"])
        # A child of a privileged zygote (a tree node, or the zygote of a
        # function without isolated INIT): its parent makes its network and
        # pid namespaces ahead.
        self._tree_isolation = with_network_made_ahead(self.isolation)
        if self.isolated_init:
            self._snapshot_isolation = host.isolation.forked_spec(self.isolation)
        else:
            self._snapshot_isolation = self._tree_isolation
        self.generation = generation
        self._supervisor = supervisor
        self._launcher = launcher
        self._zygote_parent = zygote_parent
        # What the last INIT imported: the next zygote forks from a tree node
        # that holds it (with what the function declared in ``preload``).
        self.learned_imports: frozenset[str] = frozenset()
        self._rebuilds = Rebuilds(f"the zygote of function {config.name}")
        self._base_environ = dict(base_environ)
        self._write_log = write_log
        self._lock = threading.Lock()
        self._zygote_lock = threading.Lock()
        self._zygote: Zygote | None = None
        self._booting: threading.Thread | None = None  # a zygote boot in the background
        self._zygote_wanted = False  # INIT worked in a start from the tree: boot one
        self._boot_over = threading.Event()  # clear while a boot is asked for or runs
        self._boot_over.set()
        self._idle: list[Environment] = []
        self._spare_cgroup: EnvCgroup | None = None
        self.busy = 0
        self.closed = False
        # Moving average of invocation round trips, for the sync model's spin policy.
        self.rtt_s = 0.0
        # Set when the zygote reports it cannot fork soundly (INIT started threads).
        self.fork_unsafe_reason: str | None = None

    # -- acquiring and releasing -------------------------------------------------
    def acquire(self, request_id: str) -> Environment:
        """An environment for one invocation: an idle one, or a new one.

        Raises:
            InitFailed: a new environment's INIT failed (reported to the caller
                as the invocation's function error).
            ServiceException: no environment could be started.
        """
        dead = []
        try:
            with self._lock:
                if self.closed:
                    raise ServiceException(f"function {self.config.name} was updated or deleted")
                self.busy += 1
                while self._idle:
                    env = self._idle.pop()
                    if env.exited:  # died while idle (killed, or its zygote died)
                        dead.append(env)
                        continue
                    env.start_kind = "warm"
                    return env
        finally:
            for env in dead:
                env.close()
        try:
            return self._start(request_id)
        except BaseException:
            with self._lock:
                self.busy -= 1
            raise

    def release(self, env: Environment, reusable: bool, retire: bool = False) -> None:
        """Returns an environment after an invocation; a broken one is killed,
        one to ``retire`` (healthy, but not to be reused) is shut down."""
        env.last_used = time.monotonic()
        if self._zygote_wanted:
            # Started from the supervisor thread: starting a thread here
            # would delay this invocation's return.
            self._zygote_wanted = False
            self._boot_over.clear()
            self._supervisor.call_later(0.0, self._boot_zygote_in_background)
        with self._lock:
            self.busy -= 1
            if reusable and not retire and not self.closed and not env.exited:
                self._idle.append(env)
                return
            last_out = self.closed and self.busy == 0
        if reusable:
            self._supervisor.shutdown_environment(env, SHUTDOWN_GRACE_S)
        else:
            env.kill()
        if last_out:
            self._close_zygote()

    def zygote_info(self) -> dict[str, Any]:
        """The zygote's pid and its parent's (None when there is none), and
        the imports its INIT reported."""
        zygote = self._zygote
        alive = zygote is not None and zygote.alive
        return {"pid": zygote.pid if zygote is not None and alive else None,
                "parent": zygote.parent_pid if zygote is not None and alive else None,
                "imports": sorted(self.learned_imports)}

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def retire_idle(self, idle_for_s: float) -> list[Environment]:
        """SHUTDOWN of environments idle for at least ``idle_for_s`` seconds;
        returns them (their processes may still be exiting)."""
        cutoff = time.monotonic() - idle_for_s
        with self._lock:
            keep = [env for env in self._idle if env.last_used > cutoff]
            retired = [env for env in self._idle if env.last_used <= cutoff]
            self._idle = keep
        for env in retired:
            self._supervisor.shutdown_environment(env, SHUTDOWN_GRACE_S)
        return retired

    def retire_idle_zygote(self, idle_for_s: float) -> bool:
        """Closes the zygote when it started no environment for ``idle_for_s``
        seconds and none of its environments is left; whether it did."""
        with self._lock:
            if self._idle or self.busy:
                return False
        with self._zygote_lock:
            zygote = self._zygote
            if (zygote is None or zygote.envs
                    or zygote.last_used > time.monotonic() - idle_for_s):
                return False
            self._zygote = None
        zygote.close()
        return True

    def close(self, force: bool = False) -> None:
        """No new invocations; idle environments go now, busy ones when their
        invocation returns, the zygote (whose exit ends its children) after
        the last of them. ``force`` ends everything now (Runtime.close)."""
        with self._zygote_lock:
            if self._booting is None:
                self._boot_over.set()  # a boot asked for will not start now
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
            busy = self.busy
            spare, self._spare_cgroup = self._spare_cgroup, None
        if spare is not None:
            spare.remove()
        for env in idle:
            self._supervisor.shutdown_environment(env, SHUTDOWN_GRACE_S)
        if force or not busy:
            self._close_zygote()

    def _close_zygote(self) -> None:
        with self._zygote_lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None

    # -- starting environments ------------------------------------------------------
    def environ(self, initialization_type: str) -> dict[str, str]:
        env = dict(self._base_environ)
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = initialization_type
        return env

    def _stream_environ(self, env_id: str) -> dict[str, str]:
        day = datetime.datetime.now(datetime.UTC).strftime("%Y/%m/%d")
        return {"AWS_LAMBDA_LOG_STREAM_NAME": f"{day}/[{LATEST_VERSION}]{env_id}"}

    def _start(self, request_id: str) -> Environment:
        if self.config.start == "snapshot" and self.fork_unsafe_reason is None:
            if self.isolated_init:
                zygote = self._ready_zygote()
                if zygote is None:
                    return self._start_from_tree(request_id)
            else:
                zygote = self._function_zygote(request_id)
            if zygote is not None:
                return self._start_snapshot(zygote, request_id)
        return self._start_cold(request_id)

    # -- with isolated INIT: first starts from the tree, the zygote in the background --
    def _ready_zygote(self) -> Zygote | None:
        """The function's zygote once it is up; None while it is not (it is
        booted in the background after a start from the tree succeeded).

        Raises:
            ServiceException: it died again soon after it was rebuilt.
        """
        with self._zygote_lock:
            return self._live_zygote()

    def _live_zygote(self) -> Zygote | None:
        """The zygote if it is alive; else forgets it (a death is reported by
        Rebuilds.died). The caller holds the zygote lock."""
        zygote = self._zygote
        if zygote is not None and zygote.alive:
            return zygote
        self._zygote = None
        if zygote is not None and not zygote.ended_by_us:
            self._rebuilds.died(zygote)
        return None

    def _start_from_tree(self, request_id: str) -> Environment:
        """An environment forked straight from the zygote tree (the node that
        holds the function's packages, or the base), which runs INIT itself
        with its full isolation on: a function's first start, and every start
        while its own zygote boots."""
        started = time.monotonic()
        parent = self._tree_parent()
        env_id = uuid.uuid4().hex
        environ = self.environ("on-demand")
        environ.update(self._stream_environ(env_id))
        # The pool's next cgroup is made while its zygote boots.
        placement = self._placement(env_id, self._tree_isolation, spare_next=False)
        env = parent.spawn(env_id, self.generation, "snapshot", environ, placement=placement,
                           become="environment")
        self._await_ready(env, started + INIT_TIMEOUT_S + BOOT_ALLOWANCE_S, request_id)
        # Restored from the tree's snapshot, then INIT: the two durations.
        env.restore_ms = (time.monotonic() - started) * 1000.0 - (env.init_ms or 0.0)
        # INIT worked: the function's zygote boots once this invocation is
        # done (release), so that it takes nothing from it.
        self._zygote_wanted = True
        return env

    def _tree_parent(self) -> Zygote:
        """The zygote of the tree to fork from: the node holding what the
        function declared in ``preload`` and what its last INIT imported."""
        return self._zygote_parent(frozenset(self.config.preload) | self.learned_imports)

    def _boot_zygote_in_background(self) -> None:
        """Starts booting the function's zygote, unless it is up or booting.
        Only after INIT worked once: a function whose INIT fails gets none."""
        with self._zygote_lock:
            if self._booting is not None:
                return  # it sets _boot_over when it ends
            if self._zygote is not None or self.closed:
                self._boot_over.set()
                return
            self._booting = threading.Thread(target=self._boot_in_background,
                                             name=f"zygote-boot-{self.config.name}", daemon=True)
            self._booting.start()

    def _boot_in_background(self) -> None:
        try:
            self._boot_and_keep()
        finally:
            self._boot_over.set()

    def _boot_and_keep(self) -> None:
        zygote: Zygote | None = None
        hello: dict[str, Any] = {}
        try:
            zygote, hello = self._boot_zygote()
        except (ZygoteExited, ServiceException) as exc:
            if not self.closed:  # else the Runtime closing ended it
                log.warning("function %s: its zygote did not boot: %s", self.config.name,
                            exc)
        with self._zygote_lock:
            self._booting = None
            usable = (zygote is not None and zygote.alive and not self.closed
                      and not hello.get("init_error"))
            if usable and zygote is not None:
                self._supervisor.watch(zygote)
                self._zygote = zygote
        if zygote is not None and not usable:
            zygote.close()
            zygote.release_socket()
        if hello and not hello.get("fork_safe"):
            self._disable_snapshots(hello)

    def _disable_snapshots(self, hello: dict[str, Any]) -> None:
        """The zygote's INIT left threads running (its HELLO says how many):
        this function starts cold from now on."""
        self.fork_unsafe_reason = (f"INIT left {hello.get('threads')} threads running; "
                                   "forking a multi-threaded process is unsound")
        log.warning("function %s: snapshot starts disabled, starting cold: %s",
                    self.config.name, self.fork_unsafe_reason)

    def join_background(self, timeout_s: float) -> None:
        """Waits for a zygote boot in the background, asked for or running,
        to end (Runtime.close, Runtime.wait_zygote_boot)."""
        self._boot_over.wait(timeout_s)

    def _function_zygote(self, request_id: str) -> Zygote | None:
        """The function's zygote, booted (INIT) on first use or after it died."""
        with self._zygote_lock:
            live = self._live_zygote()
            if live is not None:
                return live
            try:
                zygote, hello = self._boot_zygote()
            except ZygoteExited as exited:
                # INIT ended the process (os._exit, a crash, the OOM killer): the
                # function's error.
                raise InitFailed(exit_document(ExitRecord(exited.wait_status), request_id,
                                               exited.out_of_memory),
                                 None, exited.output, "snapshot") from None
            if hello.get("init_error"):
                raise InitFailed(hello["init_error"], hello.get("init_ms"), zygote.init_output,
                                 "snapshot")
            if zygote.init_output:
                self._write_log(zygote.init_output)
            if not hello.get("fork_safe"):
                self._disable_snapshots(hello)
                return None
            self._supervisor.watch(zygote)
            self._zygote = zygote
            return zygote

    def _boot_zygote(self) -> tuple[Zygote, dict[str, Any]]:
        """A new zygote of this function, after its INIT: forked from the base
        into the function's isolation, or (without isolated INIT) a fresh
        interpreter in the function's cgroup."""
        timeout_s = INIT_TIMEOUT_S + BOOT_ALLOWANCE_S
        name = f"zygote-{uuid.uuid4().hex}"
        if not self.isolated_init:
            zygote = Zygote("function", self.environ("snap-start"), self.config.code,
                            no_network=self._zygote_no_network,
                            cgroup=self._new_cgroup(name, ahead=False))
            return zygote, zygote.start(timeout_s)
        placement = self._placement(name, self._zygote_isolation, ahead=False,
                                    nproc_limit=False)
        # The first environment's cgroup is made while the zygote boots.
        self._supervisor.call_later(0.0, self._make_spare_cgroup)
        parent = self._tree_parent()
        zygote, hello = Zygote.fork(parent, self.environ("snap-start"), self.config.code,
                                    placement, timeout_s)
        self.learned_imports = learnable_imports(hello.get("imports"))
        return zygote, hello

    def _new_cgroup(self, name: str, ahead: bool = True,
                    spare_next: bool = True) -> EnvCgroup | None:
        """A cgroup with the function's limits, when the host has cgroups. For
        an environment (``ahead``): one made ahead, this pool's (named
        env-<another id>) or else the Runtime's, and then (``spare_next``)
        the pool's next is made ahead on the supervisor thread (making a
        cgroup in the four v1 hierarchies is about a third of a snapshot
        start)."""
        if self._host.cgroup is None:
            return None
        if not ahead:
            return self._create_cgroup(name)
        with self._lock:
            cgroup, self._spare_cgroup = self._spare_cgroup, None
        if cgroup is None:
            cgroup = self._cgroup_made_ahead() or self._create_cgroup(name)
        if spare_next:
            self._supervisor.call_later(0.0, self._make_spare_cgroup)
        return cgroup

    def _cgroup_made_ahead(self) -> EnvCgroup | None:
        """One of the Runtime's cgroups made ahead, with this function's
        limits now (a function's first start); the supervisor makes another
        once the start is likely over."""
        ahead = self._host.cgroups_ahead
        if ahead is None:
            return None
        cgroup = ahead.take(self._cgroup_limits())
        self._supervisor.call_later(REFILL_AFTER_S, ahead.refill)
        return cgroup

    def _make_spare_cgroup(self) -> None:
        with self._lock:
            if self.closed or self._spare_cgroup is not None:
                return
        try:
            cgroup = self._create_cgroup(f"env-{uuid.uuid4().hex}")
        except ServiceException as exc:
            log.warning("function %s: %s", self.config.name, exc.message)
            return
        with self._lock:
            if not self.closed and self._spare_cgroup is None:
                self._spare_cgroup = cgroup
                return
        cgroup.remove()

    def _create_cgroup(self, name: str) -> EnvCgroup:
        backend = self._host.cgroup
        assert backend is not None
        try:
            return backend.create(name, self._cgroup_limits())
        except CgroupError as exc:
            raise ServiceException(f"cannot create the cgroup {name}: {exc}") from exc

    def _cgroup_limits(self) -> Limits:
        limits = self.limits
        return Limits(limits.memory_mb * 2**20, limits.pids_max, limits.cpu_vcpus)

    def _placement(self, name: str, isolation: dict[str, Any], ahead: bool = True,
                   nproc_limit: bool = True, spare_next: bool = True) -> Placement:
        """The new environment's (or zygote's) uid (when each has its own),
        cgroup (when the host has them; see _new_cgroup), rlimits and
        isolation steps. ``nproc_limit``: RLIMIT_NPROC where the uid is its
        own (not for a zygote: its children's processes count against its
        uid too)."""
        lease = (self._host.isolation.lease_uid() if isolation["uid_per_environment"]
                 else None)
        try:
            cgroup = self._new_cgroup(name if not ahead else f"env-{name}", ahead, spare_next)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        if lease is not None:
            isolation = dict(isolation, uid=lease.uid, gid=lease.uid)
        return Placement(cgroup, rlimits_for(self.limits, cgroup is not None,
                                             nproc_limit and lease is not None),
                         isolation, lease)

    def _start_snapshot(self, zygote: Zygote, request_id: str) -> Environment:
        started = time.monotonic()
        env_id = uuid.uuid4().hex
        placement = self._placement(env_id, self._snapshot_isolation)
        env = zygote.spawn(env_id, self.generation, "snapshot", self._stream_environ(env_id),
                           placement=placement)
        deadline = started + SNAPSHOT_READY_TIMEOUT_S
        if zygote.untrusted:
            self._admit(zygote, env, deadline)
        self._await_ready(env, deadline, request_id)
        env.restore_ms = (time.monotonic() - started) * 1000.0
        env.init_ms = zygote.hello.get("init_ms")
        return env

    def _start_cold(self, request_id: str) -> Environment:
        launcher = self._launcher()
        env_id = uuid.uuid4().hex
        environ = self.environ("on-demand")
        environ.update(self._stream_environ(env_id))
        placement = self._placement(env_id, self.isolation)
        env = launcher.spawn(env_id, self.generation, "cold", environ,
                             launcher.cold_argv(undumpable=self.isolation["undumpable"]),
                             placement=placement)
        self._await_ready(env, time.monotonic() + INIT_TIMEOUT_S + BOOT_ALLOWANCE_S, request_id)
        return env

    @staticmethod
    def _admit(zygote: Zygote, env: Environment, deadline: float) -> None:
        """Sets up the user namespace a forked zygote's child asks for.

        Raises:
            ServiceException: the child failed first, or could not be set up.
        """
        try:
            zygote.admit(env, deadline)
        except ServiceException as exc:
            # A set-up step failed in the zygote's child: its report says which.
            record = env.wait_exit(0.2)
            env.kill()
            if record is not None and record.spawn_error is not None:
                raise ServiceException(
                    f"cannot start an environment: {record.spawn_error}") from None
            raise exc

    def _await_ready(self, env: Environment, deadline: float, request_id: str) -> None:
        """Waits for the new environment's READY (after its INIT, when cold).

        Raises:
            InitFailed: INIT failed, timed out, or the process died first.
            ServiceException: a child set-up step failed, or the peer spoke garbage.
        """
        try:
            frame = env.channel.recv(deadline)
        except TimeoutError:
            env.kill()
            raise InitFailed(
                {"errorMessage": f"RequestId: {request_id} Error: INIT phase timed out after "
                                 f"{INIT_TIMEOUT_S:.2f} seconds",
                 "errorType": ERROR_TIMEOUT, "stackTrace": []},
                INIT_TIMEOUT_S * 1000.0, b"", env.start_kind) from None
        except (OSError, ProtocolError) as exc:
            env.kill()
            raise ServiceException(f"environment {env.env_id} failed its handshake: {exc}") from exc
        if frame is None:
            record = env.wait_exit(2.0)
            output = env.take_output()
            cgroup = env.cgroup
            out_of_memory = cgroup is not None and cgroup.oom_kills() > 0
            env.close()
            if record is not None and record.spawn_error is not None:
                raise ServiceException(f"cannot start an environment: {record.spawn_error}")
            raise InitFailed(exit_document(record, request_id, out_of_memory), None, output,
                             env.start_kind)
        try:
            if frame["t"] != READY:
                raise ProtocolError(f"environment sent {frame['t']!r} before {READY!r}")
            check_version(frame, "environment")
        except ProtocolError as exc:
            env.kill()
            raise ServiceException(f"environment {env.env_id}: {exc}") from exc
        # The pid is the zygote's word, not the environment's (pid 2 in its own
        # namespace, and free to claim anything): its SPAWNED report comes
        # before READY but on another thread.
        if not env.wait_spawned(max(deadline - time.monotonic(), SPAWNED_WAIT_S)):
            env.kill()
            raise ServiceException(f"environment {env.env_id}: its zygote never reported "
                                   "the fork")
        output = env.take_output()
        if frame.get("init_error"):
            env.kill()
            raise InitFailed(frame["init_error"], frame.get("init_ms"), output, env.start_kind)
        env.init_ms = frame.get("init_ms")
        if output:
            self._write_log(output)
