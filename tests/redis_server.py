"""A real ``redis-server`` for tests: a free loopback port, AOF in a temp dir,
stopped (or killed, to test a crash) by its pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` with ``appendonly yes`` and (by default) ``appendfsync
    always``: a write Redis acknowledged is on disk, so it survives a SIGKILL
    of Redis (``everysec`` is for comparison in benchmarks)."""

    def __init__(self, directory: Path, appendfsync: str = "always") -> None:
        self.appendfsync = appendfsync
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (scripts/system-deps.sh "
                               "installs the Debian package redis-server)")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", self.appendfsync,
             "--save", "", "--protected-mode", "yes", "--daemonize", "no",
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start: see "
                                       f"{self.directory / 'redis.log'}") from None
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        """SIGKILL: Redis gets no chance to write anything more."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
            self.process = None
