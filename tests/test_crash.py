"""Crash safety of asynchronous invoke: a real Runtime in a child process,
accepting Event invokes while it delivers them, is killed with SIGKILL again
and again on one persistent state dir. Every event it acknowledged (202)
must then be delivered (at least once) by a reopened Runtime: the function's
OnSuccess records in a queue name them all.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

from conftest import make_function, take_records

from sandbox import Runtime

SOURCE = """
def handler(event, context):
    return {"id": event["id"]}
"""

CHILD = textwrap.dedent("""
    import sys

    from sandbox import Runtime

    state, round_number = sys.argv[1], sys.argv[2]
    rt = Runtime(state, retry_base_delay_s=0.05)
    print("ready", flush=True)
    i = 0
    while True:
        event_id = f"{round_number}-{i}"
        result = rt.invoke("f", {"id": event_id}, invocation_type="Event")
        assert result.status_code == 202
        print(event_id, flush=True)  # acknowledged: it must be delivered
        i += 1
""")
ROUNDS = 5


def _run_and_kill(state: str, round_number: int, kill_after_s: float,
                  wait_ready: bool) -> list[str]:
    """Starts the child, SIGKILLs it ``kill_after_s`` later; returns the ids it acknowledged."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, state, str(round_number)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout))  # type: ignore[arg-type]
    reader.start()
    if wait_ready:
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        assert lines and lines[0] == "ready\n", lines[:3]
    time.sleep(kill_after_s)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    reader.join(10)
    # only whole lines were acknowledged
    return [line[:-1] for line in lines if line.endswith("\n") and line != "ready\n"]


def test_every_acknowledged_event_survives_repeated_sigkill(tmp_path):
    state = str(tmp_path / "state")
    with Runtime(state) as rt:
        make_function(rt, "f", SOURCE)
        done = rt.create_queue("done")
        rt.put_function_event_invoke_config("f", on_success=done)
    rng = random.Random(4)
    acknowledged: list[str] = []
    for round_number in range(ROUNDS):
        # one round dies while the Runtime is still opening (resuming events)
        wait_ready = round_number != 2
        kill_after = rng.uniform(0.2, 0.6) if wait_ready else 0.15
        acknowledged += _run_and_kill(state, round_number, kill_after, wait_ready)
    assert len(acknowledged) > 100, "the child accepted events before each kill"
    with Runtime(state, retry_base_delay_s=0.05) as rt:
        assert rt.drain(120)
        visible = rt.get_queue("done")["approximate_number_of_messages"]
        records = take_records(rt, "done", visible, timeout=60)
    delivered = {record["requestPayload"]["id"] for record in records}
    missing = set(acknowledged) - delivered
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert {r["requestContext"]["condition"] for r in records} == {"Success"}
