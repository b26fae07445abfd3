"""One Runtime process of several sharing a Redis store (tests and benchmarks).

Run as ``python shared_worker.py STORE_URL STATE_DIR CONTROL_DIR FUNCTION FIRST COUNT``:
opens a Runtime on the store, writes ``CONTROL_DIR/ready-<pid>``, waits for
``CONTROL_DIR/go``, accepts COUNT Event invokes of FUNCTION with payloads
``{"n": FIRST + i}`` (appending each ``n`` to ``CONTROL_DIR/accepted-<pid>``
once its 202 came back), then delivers (its own events and the others')
until ``CONTROL_DIR/stop`` appears, closes the Runtime and writes how many
deliveries it made to ``CONTROL_DIR/delivered-<pid>``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from sandbox import Runtime

POLL_S = 0.01


def wait_for_file(path: Path) -> None:
    while not path.exists():
        time.sleep(POLL_S)


def main(store: str, state_dir: str, control: Path, function: str, first: int,
         count: int) -> None:
    pid = os.getpid()
    deliveries = 0
    lock = threading.Lock()

    def heard(_function: str, source: str, _result: object) -> None:
        nonlocal deliveries
        if source == "async":
            with lock:
                deliveries += 1

    with Runtime(state_dir, store=store, isolation=False, retry_base_delay_s=0.05,
                 cpu_follows_memory=False,
                 idle_timeout_s=60) as rt:
        rt.add_invocation_listener(heard)
        (control / f"ready-{pid}").touch()
        wait_for_file(control / "go")
        with open(control / f"accepted-{pid}", "a", buffering=1) as accepted:
            for n in range(first, first + count):
                rt.invoke(function, {"n": n}, invocation_type="Event")
                accepted.write(f"{n}\n")
        wait_for_file(control / "stop")
    (control / f"delivered-{pid}").write_text(str(deliveries))


if __name__ == "__main__":
    url, state, control_dir, name, start, number = sys.argv[1:7]
    main(url, state, Path(control_dir), name, int(start), int(number))
