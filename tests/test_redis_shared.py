"""Several Runtimes on one real redis-server: work shared, a Runtime killed
with SIGKILL mid-batch, Redis itself killed and restarted from its AOF.

Duplicates are allowed (delivery is at least once) and reported; a lost
event fails the test.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from conftest import make_function, wait_for
from redis_server import RedisServer

from sandbox import Runtime
from sandbox.store.redis import RedisStore

WORKER = Path(__file__).with_name("shared_worker.py")
# Claims, leases and slots of a Runtime that stopped renewing expire after this
# (renewed every third of it: a live Runtime on a loaded host keeps them).
LEASE_S = 2.0
RESERVED = 4  # the function's reserved concurrency, across every Runtime

# Each delivery appends "n start end" to a file of its environment: the
# deliveries survive the Runtime that made them being killed.
RECORDING_SOURCE = """
import json
import os
import time

OUT = os.environ["DELIVERIES"]


def handler(event, context):
    start = time.time()
    time.sleep(event.get("sleep", 0.05))
    end = time.time()
    with open(os.path.join(OUT, str(os.getpid())), "a") as out:
        out.write(f"{event['n']} {start} {end}\\n")
    return {"n": event["n"]}
"""


def deliveries(directory: Path) -> list[tuple[int, float, float]]:
    rows = []
    for path in directory.iterdir():
        for line in path.read_text().splitlines():
            n, start, end = line.split()
            rows.append((int(n), float(start), float(end)))
    return rows


def most_at_once(rows: list[tuple[int, float, float]]) -> int:
    """The largest number of deliveries running at one moment."""
    edges = sorted([(start, 1) for _, start, _ in rows] + [(end, -1) for _, _, end in rows])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def report(label: str, rows: list[tuple[int, float, float]]) -> collections.Counter[int]:
    counts = collections.Counter(n for n, _, _ in rows)
    duplicates = {n: c for n, c in counts.items() if c > 1}
    print(f"\n{label}: {len(counts)} events delivered, {sum(counts.values())} deliveries, "
          f"{sum(duplicates.values()) - len(duplicates)} duplicates ({sorted(duplicates)})")
    return counts


@pytest.fixture
def redis_url(redis_server):
    client = redis.Redis(port=redis_server.port)
    client.flushdb()
    client.close()
    return f"{redis_server.url()}?lease_s={LEASE_S}"


def test_store_url_is_checked(tmp_path):
    from sandbox.errors import InvalidParameterValueException, ServiceException

    with pytest.raises(InvalidParameterValueException, match="redis://host:port/db"):
        Runtime(tmp_path / "a", store="postgres://x")
    with pytest.raises(InvalidParameterValueException, match="lease_s must be 0.5-3600"):
        Runtime(tmp_path / "b", store="redis://127.0.0.1:1/0?lease_s=0")
    from redis_server import free_port

    with pytest.raises(ServiceException, match="cannot use the Redis store"):
        RedisStore(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.2")


def test_three_runtimes_share_events_and_survive_one_killed_mid_batch(tmp_path, redis_url):
    out = tmp_path / "deliveries"
    out.mkdir()
    control = tmp_path / "control"
    control.mkdir()
    with Runtime(tmp_path / "setup", store=redis_url) as rt:
        make_function(rt, "f", RECORDING_SOURCE, environment={"DELIVERIES": str(out)})
        rt.put_function_concurrency("f", RESERVED)
    per_worker = 40
    workers = [subprocess.Popen([sys.executable, str(WORKER), redis_url,
                                 str(tmp_path / f"state{i}"), str(control), "f",
                                 str(i * per_worker), str(per_worker)])
               for i in range(3)]
    try:
        assert wait_for(lambda: len(list(control.glob("ready-*"))) == 3, timeout=30)
        (control / "go").touch()
        victim = workers[0]

        def accepted() -> set[int]:
            return {int(n) for path in control.glob("accepted-*")
                    for n in path.read_text().split()}

        client = redis.Redis.from_url(redis_url.split("?")[0])

        def victim_claims() -> int:
            """Events claimed (pending) by the victim's consumer in the group."""
            summary = client.xpending("sandbox:ev:ready", "deliverers")
            return sum(c["pending"] for c in summary["consumers"]
                       if f":{victim.pid}:" in c["name"].decode())

        # Kill one Runtime once every event is accepted and it is mid-batch:
        # deliveries are done and it holds claimed events not yet retired.
        assert wait_for(lambda: len(accepted()) == 3 * per_worker, timeout=30)
        assert wait_for(lambda: len(deliveries(out)) >= 10 and victim_claims() >= 5,
                        timeout=30)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        orphaned = victim_claims()
        client.close()
        print(f"\nthe killed Runtime held {orphaned} claimed events")
        assert orphaned > 0, "the victim retired its claims before the kill"
        assert len(deliveries(out)) < 3 * per_worker, "the kill came after the work"
        assert wait_for(lambda: set(n for n, _, _ in deliveries(out)) >= accepted(),
                        timeout=60), "accepted events were lost"
        with Runtime(tmp_path / "check", store=redis_url) as rt:
            assert rt.drain(30)
        (control / "stop").touch()
        for worker in workers[1:]:
            assert worker.wait(30) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
    rows = deliveries(out)
    counts = report("three runtimes, one SIGKILLed", rows)
    assert set(counts) == set(range(3 * per_worker))
    shares = [int((control / f"delivered-{w.pid}").read_text()) for w in workers[1:]]
    assert all(share > 0 for share in shares), f"a surviving Runtime delivered nothing: {shares}"
    # Concurrency is global: the reservation holds for the three Runtimes together.
    assert most_at_once(rows) <= RESERVED


def test_acknowledged_events_survive_redis_killed_and_restarted(tmp_path):
    server = RedisServer(tmp_path / "redis")
    out = tmp_path / "deliveries"
    out.mkdir()
    acknowledged: list[int] = []
    try:
        with Runtime(tmp_path / "state", store=f"{server.url()}?lease_s={LEASE_S}",
                     isolation=False, retry_base_delay_s=0.2) as rt:
            make_function(rt, "f", RECORDING_SOURCE, environment={"DELIVERIES": str(out)})

            def accept() -> None:
                for n in range(150):
                    rt.invoke("f", {"n": n, "sleep": 0.005}, invocation_type="Event")
                    acknowledged.append(n)

            accepting = threading.Thread(target=accept)
            accepting.start()
            assert wait_for(lambda: len(acknowledged) >= 50, timeout=30)
            server.kill()  # SIGKILL: what is not in the AOF is gone
            time.sleep(0.3)
            server.start()  # same port and directory: replays the AOF
            accepting.join(60)
            assert not accepting.is_alive()
            assert wait_for(lambda: {n for n, _, _ in deliveries(out)} >= set(acknowledged),
                            timeout=60), "acknowledged events were lost"
            assert rt.drain(30)
    finally:
        server.stop()
    counts = report("Redis SIGKILLed and restarted", deliveries(out))
    assert set(counts) == set(range(150))


def test_two_servers_on_one_redis_share_the_registry_and_the_events(tmp_path, redis_url):
    """``sandbox serve --store redis://...`` twice: a function created through
    one server is invoked through the other, and its Event invoke delivered."""
    import json
    import urllib.request

    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("def handler(event, context):\n    print('got', event['n'])\n")
    servers = [subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--port", "0", "--no-auth", "--state-dir",
         str(tmp_path / f"state{i}"), "--store", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(2)]
    try:
        urls = []
        for server in servers:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert f"store {redis_url}" in line, line
            urls.append(line.split(" on ", 1)[1].split()[0])

        def call(url: str, method: str, path: str, body: dict | None = None,
                 headers: dict | None = None) -> tuple[int, bytes]:
            request = urllib.request.Request(
                url + path, method=method, data=json.dumps(body).encode() if body else None,
                headers={"Content-Type": "application/json", **(headers or {})})
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()

        status, _ = call(urls[0], "POST", "/2015-03-31/functions", {
            "FunctionName": "f", "Runtime": "python3.11", "Handler": "app.handler",
            "Role": "arn:aws:iam::000000000000:role/r",
            "Code": {"S3Bucket": "hot-reload", "S3Key": str(code)}})
        assert status == 201
        status, _ = call(urls[1], "POST", "/2015-03-31/functions/f/invocations",
                         {"n": 7, "sleep": 0}, {"X-Amz-Invocation-Type": "Event"})
        assert status == 202

        def delivered() -> str:
            logs = [tmp_path / f"state{i}" / "logs" / "f.log" for i in range(2)]
            return "".join(log.read_text() for log in logs if log.exists())

        assert wait_for(lambda: "got 7" in delivered(), timeout=30)
        status, listing = call(urls[1], "GET", "/2015-03-31/functions")
        assert [f["FunctionName"] for f in json.loads(listing)["Functions"]] == ["f"]
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


# A stream batch handler: one line per record, written once per batch.
STREAM_SOURCE = """
import base64
import os
import time

OUT = os.environ["DELIVERIES"]


def handler(event, context):
    start = time.time()
    time.sleep(0.02)
    end = time.time()
    lines = "".join(f"{base64.b64decode(r['kinesis']['data']).decode()} {start} {end}\\n"
                    for r in event["Records"])
    with open(os.path.join(OUT, str(os.getpid())), "a") as out:
        out.write(lines)
"""


def test_a_stream_shard_is_processed_by_one_runtime_at_a_time_in_order(tmp_path, redis_url):
    out = tmp_path / "deliveries"
    out.mkdir()
    options = {"store": redis_url, "isolation": False, "retry_base_delay_s": 0.05}
    first = Runtime(tmp_path / "one", **options)
    try:
        make_function(first, "f", STREAM_SOURCE, environment={"DELIVERIES": str(out)})
        first.create_stream("s")
        first.create_event_source_mapping("f", first.arns.stream("s"), batch_size=5,
                                          starting_position="TRIM_HORIZON")
        with Runtime(tmp_path / "two", **options) as second:  # polls the mapping too
            for n in range(30):  # both put, so that both pollers wake up
                (first if n % 2 else second).put_record("s", str(n), "one-key")
                time.sleep(0.01)
            assert wait_for(lambda: len(deliveries(out)) >= 10, timeout=30)
            first.close()  # its lease goes; the other takes the shard over
            for n in range(30, 60):
                second.put_record("s", str(n), "one-key")
            assert wait_for(lambda: {n for n, _, _ in deliveries(out)} == set(range(60)),
                            timeout=30)
            assert second.drain(30)
    finally:
        first.close()
    rows = deliveries(out)
    report("one stream shard, two Runtimes", rows)
    # One batch at a time (the records of a batch share its interval) ...
    batches = sorted({(start, end) for _, start, end in rows})
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(batches, batches[1:],
                                                                      strict=False))
    # ... and in order: each record is first delivered after the one before it.
    first_seen: dict[int, float] = {}
    for n, start, _ in rows:
        first_seen[n] = min(first_seen.get(n, start), start)
    assert all(first_seen[n] <= first_seen[n + 1] for n in range(59))


def test_a_mapping_created_through_one_runtime_is_polled_by_another(tmp_path, redis_url):
    out = tmp_path / "deliveries"
    out.mkdir()
    options = {"store": redis_url, "isolation": False, "retry_base_delay_s": 0.05}
    with Runtime(tmp_path / "two", **options) as second:  # open before the mapping exists
        with Runtime(tmp_path / "one", **options) as first:
            make_function(first, "f", QUEUE_SOURCE, environment={"DELIVERIES": str(out)})
            first.create_queue("jobs")
            uuid = first.create_event_source_mapping("f", first.arns.queue("jobs"))
        for n in range(5):
            second.send_message("jobs", str(n))
        assert wait_for(lambda: sorted(n for n, _, _ in deliveries(out)) == list(range(5)),
                        timeout=30)
        second.update_event_source_mapping(uuid, enabled=False)
        second.delete_event_source_mapping(uuid)
        assert second.list_event_source_mappings() == []


QUEUE_SOURCE = STREAM_SOURCE.replace("base64.b64decode(r['kinesis']['data']).decode()",
                                     "r['body']")


def test_consumers_of_closed_and_dead_runtimes_leave_the_group(redis_server):
    from sandbox.store.base import NewEvent, Outbox

    client = redis.Redis(port=redis_server.port)
    client.flushdb()
    url = f"{redis_server.url()}?lease_s=0.5"

    def consumers() -> set[str]:
        return {c["name"].decode()
                for c in client.xinfo_consumers("sandbox:ev:ready", "deliverers")}

    # A Runtime's store that claims and retires an event, then closes.
    store = RedisStore(url)
    # A Runtime that died long ago: a consumer with nothing pending.
    client.xgroup_createconsumer("sandbox:ev:ready", "deliverers", "dead-host:1:x")
    event_id = store.add_event(NewEvent("f", "r", b"{}", time.time()))
    assert store.claim_events(1, 1.0) == [event_id]
    assert store.owner in consumers()
    store.retire_event(event_id, Outbox())
    # Its claims forget consumers idle 10 x lease_s with nothing pending.
    assert wait_for(lambda: store.claim_events(1, 0.1) == []
                    and "dead-host:1:x" not in consumers(), timeout=15)
    store.close()
    assert consumers() == set()
    client.close()


def test_functions_created_updated_and_deleted_through_one_runtime_are_seen_by_another(
        tmp_path, redis_url):
    from conftest import write_handler

    from sandbox.errors import ResourceNotFoundException

    with Runtime(tmp_path / "one", store=redis_url) as first, \
            Runtime(tmp_path / "two", store=redis_url) as second:
        make_function(first, "f", "def handler(event, context):\n    return 'v1'\n")
        assert second.invoke("f", {}).payload == "v1"
        assert [f["FunctionName"] for f in second.list_functions()] == ["f"]
        code = tmp_path / "v2"
        write_handler(code, "def handler(event, context):\n    return 'v2'\n")
        first.update_function("f", code=str(code))
        assert second.invoke("f", {}).payload == "v2"
        first.delete_function("f")
        with pytest.raises(ResourceNotFoundException):
            second.invoke("f", {})
        assert second.list_functions() == []


def test_reservations_made_through_one_runtime_bind_the_others(tmp_path, redis_url):
    from sandbox.errors import InvalidParameterValueException

    source = "def handler(event, context):\n    return 1\n"
    with Runtime(tmp_path / "one", store=redis_url, concurrency_limit=20) as first, \
            Runtime(tmp_path / "two", store=redis_url, concurrency_limit=20) as second:
        make_function(first, "f", source)
        make_function(first, "g", source)
        first.put_function_concurrency("f", 15)
        # 20 - 15 - 5 leaves less than the unreserved minimum (2 of 20).
        with pytest.raises(InvalidParameterValueException, match="UnreservedConcurrent"):
            second.put_function_concurrency("g", 5)
        second.put_function_concurrency("g", 3)
        first.put_function_concurrency("f", 0)
        from sandbox.errors import TooManyRequestsException

        with pytest.raises(TooManyRequestsException):
            second.invoke("f", {})


def test_permissions_changed_through_one_runtime_bind_the_others(tmp_path, redis_url):
    """Users and function policies are shared records: another Runtime reads
    them again within a second (IAM_RELOAD_S)."""
    source = "def handler(event, context):\n    return 1\n"
    with Runtime(tmp_path / "one", store=redis_url) as first, \
            Runtime(tmp_path / "two", store=redis_url) as second:
        make_function(first, "f", source)
        # Another account's user, allowed by its own account: the function's
        # policy decides.
        allow = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]}
        bob = first.create_user("bob", [allow], account="222233334444")
        assert wait_for(lambda: _outcome(second, bob) == "denied", 3)
        first.add_permission("f", "bob", "lambda:InvokeFunction", bob)
        assert wait_for(lambda: _outcome(second, bob) == "allowed", 3)
        first.remove_permission("f", "bob")
        assert wait_for(lambda: _outcome(second, bob) == "denied", 3)
        first.delete_user(bob)
        assert wait_for(lambda: _outcome(second, bob) == "unknown", 3)


def test_a_permission_added_while_iam_reloads_is_not_undone(tmp_path, redis_url):
    """The reload every second (shared stores) reads the IAM records, then
    replaces this Runtime's view with them: a permission added through this
    Runtime between the two must still be there after it."""
    from sandbox.iam.registry import FUNCTION_POLICY

    source = "def handler(event, context):\n    return 1\n"
    with Runtime(tmp_path / "one", store=redis_url) as rt:
        make_function(rt, "f", source)
        allow = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]}
        bob = rt.create_user("bob", [allow], account="222233334444")
        iam = rt._iam
        store = iam._store
        read_done, go_on = threading.Event(), threading.Event()
        list_records = store.list_iam_records

        def held_after_reading(kind: str) -> list:
            records = list_records(kind)
            if kind == FUNCTION_POLICY and threading.current_thread().name == "reload":
                read_done.set()
                go_on.wait(10)
            return records

        store.list_iam_records = held_after_reading
        reloader = threading.Thread(target=iam.reload, name="reload")
        reloader.start()
        assert read_done.wait(5)  # it has read every record, and waits
        adder = threading.Thread(
            target=lambda: rt.add_permission("f", "bob", "lambda:InvokeFunction", bob))
        adder.start()
        time.sleep(0.3)  # the permission is added now, or waits for the reload
        go_on.set()
        reloader.join(10)
        adder.join(10)
        store.list_iam_records = list_records
        assert _outcome(rt, bob) == "allowed"


def _outcome(rt: Runtime, caller: str) -> str:
    from sandbox.errors import AccessDeniedException, NoSuchEntityException

    try:
        rt.invoke("f", {}, caller=caller)
    except AccessDeniedException:
        return "denied"
    except NoSuchEntityException:
        return "unknown"
    return "allowed"


def test_an_update_is_not_undone_by_the_follower_reading_the_mappings_just_before(
        tmp_path, redis_url):
    """A Runtime on a shared store follows the others' mapping changes every
    second. If it read the mappings, then an update of its own came, the
    update must stand: the poller must not be restarted from the record read
    before it (with the old function), and the mapping must not look idle
    meanwhile (drain would return with a message not delivered)."""
    out = {name: tmp_path / name for name in ("first", "second")}
    with Runtime(tmp_path / "state", store=redis_url, isolation=False,
                 retry_base_delay_s=0.05) as rt:
        for name, directory in out.items():
            directory.mkdir()
            make_function(rt, name, QUEUE_SOURCE, environment={"DELIVERIES": str(directory)})
        rt.create_queue("q")
        uuid = rt.create_event_source_mapping("first", rt.arns.queue("q"))
        store = rt._mappings._ctx.store
        read_done, go_on = threading.Event(), threading.Event()
        list_mappings = store.list_mappings

        def held_after_reading() -> list:
            records = list_mappings()
            if threading.current_thread().name == "sandbox-mappings":
                read_done.set()
                go_on.wait(10)
            return records

        store.list_mappings = held_after_reading
        assert read_done.wait(5)  # the follower has read, and waits
        updater = threading.Thread(
            target=lambda: rt.update_event_source_mapping(uuid, function="second"))
        updater.start()
        time.sleep(0.3)  # the update runs now, or waits for the follower's turn
        go_on.set()
        updater.join(10)
        store.list_mappings = list_mappings
        time.sleep(0.2)  # the follower's turn is over
        rt.send_message("q", "7")
        assert rt.drain(20)
        assert ([n for n, _, _ in deliveries(out["first"])],
                [n for n, _, _ in deliveries(out["second"])]) == ([], [7])
