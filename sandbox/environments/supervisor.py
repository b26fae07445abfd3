"""The supervisor thread: reads every zygote's control socket and runs timers.

Zygotes report each environment's exit (EXITED) and each failed spawn
(SPAWN_FAILED); the supervisor hands those to the waiting Environment. It also
runs the timers of the lifecycle: idle sweeps and the kill that follows a
graceful SHUTDOWN signal after its grace period.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable

from ..errors import ProtocolError
from ..protocol import EXITED, MAX_CONTROL_FRAME, SPAWN_FAILED, SPAWNED, decode_packet
from .environment import Environment, ExitRecord
from .zygote import Zygote

log = logging.getLogger("sandbox.supervisor")


class Supervisor:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending_zygotes: list[Zygote] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sandbox-supervisor", daemon=True)
        self._thread.start()

    # -- API for other threads ------------------------------------------------
    def watch(self, zygote: Zygote) -> None:
        """Starts reading a zygote's control socket."""
        with self._lock:
            self._pending_zygotes.append(zygote)
        self._wake()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._seq), fn))
        self._wake()

    def shutdown_environment(self, env: Environment, grace_s: float) -> None:
        """SHUTDOWN: hang up and send SIGTERM now, SIGKILL after ``grace_s``."""
        env.close()
        env.signal_group(signal.SIGTERM)

        def force() -> None:
            if not env.exited:
                env.signal_group(signal.SIGKILL)

        self.call_later(grace_s, force)

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(5.0)
        if not self._thread.is_alive():
            # Zygotes whose hang-up the loop stopped before reading: their
            # environments' cgroups, uids and channels are released here.
            for key in list(self._selector.get_map().values()):
                if key.data is not None:
                    self._lost(key.data)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    # -- the thread -----------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            timeout = self._run_due_timers()
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    continue
                self._read_zygote(key.data)
            self._register_pending()

    def _register_pending(self) -> None:
        with self._lock:
            pending, self._pending_zygotes = self._pending_zygotes, []
        for zygote in pending:
            self._selector.register(zygote.ctrl, selectors.EVENT_READ, zygote)

    def _run_due_timers(self) -> float | None:
        while True:
            with self._lock:
                if not self._timers:
                    return None
                due, _, fn = self._timers[0]
                wait = due - time.monotonic()
                if wait > 0:
                    return wait
                heapq.heappop(self._timers)
            try:
                fn()
            except Exception:  # a timer must never take the supervisor down
                log.exception("supervisor timer failed")

    def _read_zygote(self, zygote: Zygote) -> None:
        try:
            packet = zygote.ctrl.recv(MAX_CONTROL_FRAME + 8)
        except OSError:
            packet = b""
        if not packet:
            self._lost(zygote)
            return
        try:
            frame = decode_packet(packet)
        except ProtocolError as exc:
            log.error("zygote %s sent a malformed frame, dropping it: %s", zygote.pid, exc)
            zygote.close()
            self._lost(zygote)
            return
        kind = frame["t"]
        if kind == SPAWNED:
            # A forked zygote's pids are of its own pid namespace, and its word
            # is not taken: its children's pids come from the kernel (admit).
            env = zygote.envs.get(frame["env"])
            if env is not None and not env.pid and not zygote.untrusted:
                env.mark_spawned(frame["pid"])
        elif kind == EXITED:
            env = zygote.envs.pop(frame.get("env") or "", None)
            if env is not None:
                env.mark_exited(ExitRecord(frame["status"], frame["maxrss_kb"],
                                           frame["utime"], frame["stime"]))
        elif kind == SPAWN_FAILED:
            env = zygote.envs.pop(frame["env"], None)
            if env is not None:
                env.mark_exited(ExitRecord(
                    None, spawn_error=f"child set-up stage '{frame['stage']}' failed: "
                                      f"{frame['message']}"))
        else:
            log.error("zygote %s sent unexpected %r frame", zygote.pid, kind)

    def _lost(self, zygote: Zygote) -> None:
        """The zygote hung up or died: its environments died with it."""
        self._selector.unregister(zygote.ctrl)
        zygote.alive = False
        for env in list(zygote.envs.values()):
            env.mark_exited(ExitRecord(None))
        zygote.envs.clear()
        zygote.close(grace_s=0.5)
        zygote.release_socket()
