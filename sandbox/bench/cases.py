"""The measured cases of ``sandbox bench``: what one sample of each costs.

Three families, each sample timed in this process from request to result:

* this runtime (``warm``, ``snapshot``, ``cold`` for the no-op handler and
  ``…-heavy`` for examples/heavy, whose INIT imports asyncio, ssl, email, …):
  ``Runtime.invoke`` with an idle environment (warm), right after
  ``shutdown_idle`` (snapshot: a fork from the zygote; cold: a new interpreter).
  Every isolation step the host supports is on; the CPU quota is off, since
  Lambda's 128 MB = 7 % of a vCPU would measure the quota, and peers have none.
* peers a user might pick instead: a fresh ``python`` per invocation;
  ``multiprocessing`` with the forkserver start method and the handler
  preloaded (a new process per invocation, result sent back over a pipe); a
  warm ``ProcessPoolExecutor``; ``bwrap`` running a fresh ``python`` in new
  namespaces, where bubblewrap is installed.
* the physical floor: fork + ``_exit`` + ``waitpid`` timed in C
  (``sandbox._native.fork_exit_wait``), the same with ``os.fork`` from this
  process (which has imported the heavy handler's modules, so it is at least
  as big as the heavy zygote), and one framed msgpack request/reply over a
  socketpair to a forked echo process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from .. import _native
from ..api import Runtime
from ..errors import ServiceException
from ..protocol import HEADER, INVOKE, RESULT, encode
from . import peer_worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
HANDLERS = {"noop": os.path.join(EXAMPLES, "noop"), "heavy": os.path.join(EXAMPLES, "heavy")}
# The heavy handler's imports, also done by this process before its fork floor.
HEAVY_MODULES = ("asyncio", "decimal", "email.message", "http.client", "json", "ssl")
PEER_SCRIPT = "import app; app.handler({}, None)"
FAMILIES = ("sandbox", "peer", "floor")

# Seconds per sample: a list of n timings.
Sampler = Callable[[int], list[float]]


@dataclass(frozen=True)
class Case:
    """One measured case.

    Attributes:
        name: e.g. ``warm``, ``snapshot-heavy``, ``peer-bwrap``, ``floor-os-fork``.
        family: ``sandbox``, ``peer`` or ``floor``.
        handler: ``noop``, ``heavy``, or None for the floors.
        start: the start kind for this runtime's cases, else None.
        per_round: samples taken each time the case's turn comes in a round.
        sample: takes n samples, returns their durations in seconds.
        description: what one sample is.
    """

    name: str
    family: str
    handler: str | None
    start: str | None
    per_round: int
    sample: Sampler
    description: str


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def case_name(base: str, handler: str | None) -> str:
    """``warm`` for the no-op handler, ``warm-heavy`` for the heavy one."""
    return base if handler in (None, "noop") else f"{base}-{handler}"


def bwrap_argv(code_dir: str, python: str = sys.executable) -> list[str] | None:
    """bubblewrap running the handler in a fresh interpreter with new namespaces
    (a read-only root, private /tmp, /proc and /dev), or None when not installed."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    return [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--unshare-all", "--die-with-parent", "--new-session",
            "--chdir", code_dir, python, "-c", PEER_SCRIPT]


def bwrap_peer(code_dir: str) -> tuple[list[str] | None, str | None]:
    """The bwrap peer's argv once a trial run worked, else None and why not
    (not installed, or it fails here: no user namespaces, no privileges...)."""
    argv = bwrap_argv(code_dir)
    if argv is None:
        return None, "bubblewrap (bwrap) is not installed"
    try:
        trial = subprocess.run(argv, cwd=code_dir, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bwrap cannot run here: {exc}"
    if trial.returncode != 0:
        reason = (trial.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"bwrap fails on this host (exit {trial.returncode}): {reason}"
    return argv, None


class CaseSet:
    """Builds every case and owns what they use (a Runtime, an echo process, a
    forkserver, a process pool); :meth:`close` ends all of it.

    Args:
        per_round_scale: multiplies each case's samples per round (``--quick``
            uses less than 1; at least one sample is always taken).
    """

    def __init__(self, per_round_scale: float = 1.0) -> None:
        self.scale = per_round_scale
        self.cases: list[Case] = []
        self.skipped: list[Skipped] = []
        self.runtime: Runtime | None = None
        self._echo_pid = 0
        self._echo_sock: socket.socket | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._forkserver_started = False
        self._tracker_was_running = False

    def __enter__(self) -> CaseSet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, name: str, family: str, handler: str | None, start: str | None,
            per_round: int, sample: Sampler, description: str) -> None:
        """Adds a case, its ``per_round`` scaled (at least one sample a turn)."""
        rounds = max(1, round(per_round * self.scale))
        self.cases.append(Case(name, family, handler, start, rounds, sample, description))

    # -- building ---------------------------------------------------------------------
    def build(self, families: Collection[str] = FAMILIES) -> list[Case]:
        """Creates the cases of ``families`` (booting what they need); returns them."""
        unknown = set(families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown case families {sorted(unknown)}; known: {FAMILIES}")
        for module in HEAVY_MODULES:
            __import__(module)
        if "floor" in families:
            self._floors()
        if "sandbox" in families:
            self._runtime_cases()
        if "peer" in families:
            self._peers()
        return self.cases

    def get(self, name: str) -> Case:
        """The built case called ``name``.

        Raises:
            KeyError: no such case was built (or it was skipped).
        """
        for case in self.cases:
            if case.name == name:
                return case
        raise KeyError(name)

    def _floors(self) -> None:
        self.add("floor-fork-native", "floor", None, None, 40,
                  _native.fork_exit_wait, "fork + _exit + waitpid, timed in C")
        self.add("floor-os-fork", "floor", None, None, 40, _os_fork_samples,
                  "os.fork + os._exit + os.waitpid from this process")
        self._echo_sock, self._echo_pid = start_echo()
        self.add("floor-roundtrip", "floor", None, None, 400,
                  _roundtrip_sampler(self._echo_sock),
                  "one framed msgpack INVOKE/RESULT over a socketpair to a forked echo")

    def _runtime_cases(self) -> None:
        rt = self.runtime = Runtime(cpu_follows_memory=False, idle_timeout_s=3600)
        for handler, code in HANDLERS.items():
            for start in ("snapshot", "cold"):
                name = f"{handler}-{start}"
                rt.create_function(name, handler="app.handler", code=code, start=start)
                check_start(rt.invoke(name, {}), start)  # boots the zygote / launcher
                # A first start forks from the zygote tree and boots the
                # function's zygote meanwhile: snapshot samples fork from that.
                rt.wait_zygote_boot(name)
            snapshot_fn = f"{handler}-snapshot"
            self.add(case_name("warm", handler), "sandbox", handler, "warm", 300,
                      _invoke_sampler(rt, snapshot_fn, "warm", retire=False),
                      "Runtime.invoke reusing an idle environment")
            self.add(case_name("snapshot", handler), "sandbox", handler, "snapshot", 6,
                      _invoke_sampler(rt, snapshot_fn, "snapshot", retire=True),
                      "Runtime.invoke forking a new environment from the zygote")
            self.add(case_name("cold", handler), "sandbox", handler, "cold", 1,
                      _invoke_sampler(rt, f"{handler}-cold", "cold", retire=True),
                      "Runtime.invoke starting a new interpreter (INIT included)")

    def _peers(self) -> None:
        for handler, code in HANDLERS.items():
            self.add(case_name("peer-python", handler), "peer", handler, None, 1,
                      _subprocess_sampler([sys.executable, "-c", PEER_SCRIPT], code),
                      "a fresh `python -c` importing and calling the handler")
        self._forkserver_peers()
        for handler, code in HANDLERS.items():
            name = case_name("peer-bwrap", handler)
            argv, reason = bwrap_peer(code)
            if argv is None:
                self.skipped.append(Skipped(name, reason or "bwrap unusable"))
                continue
            self.add(name, "peer", handler, None, 1, _subprocess_sampler(argv, code),
                      "bwrap (new namespaces, read-only root) running a fresh python")

    def _forkserver_peers(self) -> None:
        # One forkserver per process: restart it so our preload applies.
        _forkserver()._stop()
        self._tracker_was_running = _resource_tracker()._fd is not None
        os.environ[peer_worker.PRELOAD_ENV] = os.pathsep.join(HANDLERS.values())
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([peer_worker.__name__])
        self._forkserver_started = True
        for handler, code in HANDLERS.items():
            self.add(case_name("peer-forkserver", handler), "peer", handler, None, 4,
                      _forkserver_sampler(context, code),
                      "multiprocessing forkserver (handler preloaded): a new process "
                      "per invocation, result over a pipe")
        self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context)
        for handler, code in HANDLERS.items():
            self._pool.submit(peer_worker.invoke, code, {}).result()
            self.add(case_name("peer-pool", handler), "peer", handler, None, 300,
                      _pool_sampler(self._pool, code),
                      "a warm ProcessPoolExecutor worker (submit + result)")

    # -- closing ----------------------------------------------------------------------
    def close(self) -> None:
        """Ends every process the cases started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._forkserver_started:
            _forkserver()._stop()
            if not self._tracker_was_running:  # the forkserver started it: ours to stop
                _resource_tracker()._stop()
            os.environ.pop(peer_worker.PRELOAD_ENV, None)
            self._forkserver_started = False
        if self._echo_sock is not None:
            self._echo_sock.close()
            self._echo_sock = None
            os.waitpid(self._echo_pid, 0)
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None


# multiprocessing's process-wide helpers; _stop() is what its own tests use.
def _forkserver() -> Any:
    return vars(multiprocessing.forkserver)["_forkserver"]


def _resource_tracker() -> Any:
    return vars(multiprocessing.resource_tracker)["_resource_tracker"]


# -- samplers ----------------------------------------------------------------------


def check_start(result: Any, expected_start: str) -> None:
    """Raises ServiceException unless the invocation worked, by an
    ``expected_start`` start."""
    report = result.report
    if result.function_error is not None or report is None:
        raise ServiceException(f"benchmark invocation failed: {result.payload}")
    if report["start"] != expected_start:
        raise ServiceException(
            f"benchmark expected a {expected_start} start, got {report['start']}")


def _invoke_sampler(rt: Runtime, name: str, start: str, retire: bool) -> Sampler:
    invoke = rt.invoke

    def sample(n: int) -> list[float]:
        times = []
        for _ in range(n):
            if retire:  # the old environment's exit must not overlap the timed call
                rt.shutdown_idle(name, wait=True)
            t0 = time.perf_counter()
            result = invoke(name, {})
            times.append(time.perf_counter() - t0)
            check_start(result, start)
        return times

    return sample


def _subprocess_sampler(argv: list[str], cwd: str) -> Sampler:
    def sample(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run(argv, cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        return times

    return sample


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """multiprocessing re-runs the parent's main script in every forkserver
    child (``set_forkserver_preload(["__main__"])`` cannot prevent it on 3.11:
    ``ForkServer.ensure_running`` keeps a ``main_path`` key that
    ``spawn.get_preparation_data`` never sets). Run as ``sandbox bench`` that
    would charge this command's imports (~7 ms) to the peer, so the script's
    ``__file__`` is hidden while a child is started."""
    main = sys.modules["__main__"]
    path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


def _forkserver_sampler(context: Any, code: str) -> Sampler:
    def sample(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=peer_worker.invoke_and_send,
                                      args=(sender, code, {}))
            with _main_script_hidden():
                process.start()
            sender.close()
            receiver.recv()
            process.join()
            times.append(time.perf_counter() - t0)
            receiver.close()
            if process.exitcode != 0:
                raise ServiceException(f"forkserver peer exited with {process.exitcode}")
        return times

    return sample


def _pool_sampler(pool: concurrent.futures.ProcessPoolExecutor, code: str) -> Sampler:
    submit = pool.submit
    target = peer_worker.invoke

    def sample(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            submit(target, code, {}).result()
            times.append(time.perf_counter() - t0)
        return times

    return sample


def _os_fork_samples(n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - t0)
    return times


# -- the socketpair echo ------------------------------------------------------------


def recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Exactly ``size`` bytes from ``sock``; None at end of stream."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            return None
        got += n
    return bytes(buf)


def _echo(sock: socket.socket) -> None:
    """Answers each frame with a RESULT-shaped frame, as an environment does."""
    while True:
        head = recv_exact(sock, HEADER.size)
        body = recv_exact(sock, HEADER.unpack(head)[0]) if head is not None else None
        if body is None:
            return
        frame = msgpack.unpackb(body, raw=False)
        reply = {"t": RESULT, "id": frame["id"], "payload": b"null", "error_type": None,
                 "duration_ms": 0.0, "maxrss_kb": 0}
        sock.sendall(encode(reply))


def start_echo() -> tuple[socket.socket, int]:
    """A forked process answering INVOKE frames on a socketpair, as an
    environment would (the floor-roundtrip case); returns our end and its pid."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the echo process: never returns into the caller
        code = 0
        try:
            ours.close()
            _echo(theirs)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    return ours, pid


def _roundtrip_sampler(sock: socket.socket) -> Sampler:
    frame = {"t": INVOKE, "id": str(uuid.uuid4()), "event": b"{}",
             "arn": "arn:aws:lambda:us-east-1:000000000000:function:noop",
             "deadline_ms": time.time() * 1000.0 + 3000.0, "client_context": None,
             "identity": None}

    def sample(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            sock.sendall(encode(frame))
            head = recv_exact(sock, HEADER.size)
            body = recv_exact(sock, HEADER.unpack(head)[0]) if head is not None else None
            if body is None:
                raise ServiceException("the echo process closed the socketpair")
            msgpack.unpackb(body, raw=False)
            times.append(time.perf_counter() - t0)
        return times

    return sample
