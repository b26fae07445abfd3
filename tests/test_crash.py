"""Crash safety: a real Runtime in a child process is killed with SIGKILL
again and again on one persistent state dir.

- Asynchronous invoke: the child accepts Event invokes while it delivers
  them. Every event it acknowledged (202) must then be delivered (at least
  once) by a reopened Runtime: the function's OnSuccess records in a queue
  name them all.
- Stream mappings: the child works through a stream's backlog; every record
  must reach the function at least once (checkpoints never run ahead of
  the work), which records what it saw in a host file.
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

import pytest
from conftest import make_function, take_records

from sandbox import Runtime
from sandbox.errors import ResourceConflictException

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

RECORDING_SOURCE = """
import base64
import os


def handler(event, context):
    seen = [base64.b64decode(r["kinesis"]["data"]).decode() for r in event["Records"]]
    with open(os.environ["SEEN"], "a") as f:
        f.write("".join(f"{item}\\n" for item in seen))
"""

MAPPING_CHILD = textwrap.dedent("""
    import sys
    import time

    from sandbox import Runtime

    rt = Runtime(sys.argv[1], retry_base_delay_s=0.05, isolation=False)
    print("ready", flush=True)
    time.sleep(60)
""")


def _run_and_kill(state: str, round_number: int, kill_after_s: float,
                  wait_ready: bool, program: str = CHILD) -> list[str]:
    """Starts the child, SIGKILLs it ``kill_after_s`` later; returns the ids it acknowledged."""
    child = subprocess.Popen([sys.executable, "-c", program, state, str(round_number)],
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


def test_stream_records_survive_repeated_sigkill_of_their_poller(tmp_path):
    state = str(tmp_path / "state")
    seen_file = tmp_path / "seen"
    with Runtime(state, isolation=False) as rt:
        make_function(rt, "f", RECORDING_SOURCE, environment={"SEEN": str(seen_file)})
        stream = rt.create_stream("s", shards=2)
        records = [f"r{i}" for i in range(3000)]
        for record in records:
            rt.put_record(stream, record, record)
        rt.create_event_source_mapping("f", stream, starting_position="TRIM_HORIZON",
                                       batch_size=10, enabled=False)
    with Runtime(state, isolation=False) as rt:
        [mapping] = rt.list_event_source_mappings()
        rt.update_event_source_mapping(mapping["UUID"], enabled=True)
        rt.close()  # enabled, before it could read much: the children do the work
    rng = random.Random(9)
    for round_number in range(3):
        _run_and_kill(state, round_number, rng.uniform(0.1, 0.4), True, MAPPING_CHILD)
    with Runtime(state, retry_base_delay_s=0.05, isolation=False) as rt:
        assert rt.drain(120)
    seen = set(seen_file.read_text().split())
    missing = set(records) - seen
    assert not missing, f"{len(missing)} records never reached the function"


def test_one_runtime_per_state_dir_and_a_killed_one_frees_it(tmp_path):
    state = str(tmp_path / "state")
    with Runtime(state), pytest.raises(ResourceConflictException, match=f"pid {os.getpid()}"):
        Runtime(state)
    holder = subprocess.Popen([sys.executable, "-c", MAPPING_CHILD, state, "0"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "ready\n"
    with pytest.raises(ResourceConflictException, match=f"pid {holder.pid}"):
        Runtime(state)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    holder.stdout.close()
    with Runtime(state) as rt:
        assert rt.list_functions() == []
