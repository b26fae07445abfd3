"""Logs: the per-function log file, Lambda's START/END/REPORT lines, the
handler's output between them, r.log_tail; and sandbox/logs.py's helpers."""

from __future__ import annotations

import re
import threading

import pytest

from sandbox import logs

NUM = r"\d+\.\d{2}"


def read_log(rt, name):
    with open(rt.log_path(name), encoding="utf-8") as f:
        return f.read()


def block_of(text, request_id):
    """The START..REPORT block of one request in a log file."""
    match = re.search(
        rf"^START RequestId: {request_id} Version: \$LATEST\n(.*?)"
        rf"^END RequestId: {request_id}\n(REPORT RequestId: {request_id}\t[^\n]*)\n",
        text, re.M | re.S)
    assert match, f"no block for {request_id} in:\n{text}"
    return match.group(1), match.group(2)


def test_log_file_has_start_output_end_report(runtime, actions, start):
    r1 = runtime.invoke(actions, {"action": "print", "text": "hello from the handler"})
    r2 = runtime.invoke(actions, {"action": "print", "text": "second call"})
    text = read_log(runtime, actions)
    assert runtime.log_path(actions).startswith(runtime.state_dir)
    output1, report1 = block_of(text, r1.request_id)
    output2, report2 = block_of(text, r2.request_id)
    assert "hello from the handler\n" in output1 and "to stderr\n" in output1
    assert "second call" in output2 and "hello from the handler" not in output2
    assert text.index(r1.request_id) < text.index(r2.request_id)
    pattern = (rf"REPORT RequestId: {r1.request_id}\tDuration: {NUM} ms\t"
               rf"Billed Duration: \d+ ms\tMemory Size: 128 MB\tMax Memory Used: \d+ MB\t"
               rf"Init Duration: {NUM} ms\t")
    assert re.match(pattern, report1), report1
    assert report1.endswith(f"Start: {start}")
    assert ("Restore Duration: " in report1) == (start == "snapshot")
    assert re.fullmatch(
        rf"REPORT RequestId: {r2.request_id}\tDuration: {NUM} ms\tBilled Duration: \d+ ms\t"
        rf"Memory Size: 128 MB\tMax Memory Used: \d+ MB\tCPU Time: {NUM} ms\tStart: warm",
        report2), report2
    # The REPORT figures are the report's.
    assert f"Billed Duration: {r1.report['billed_duration_ms']} ms" in report1
    assert f"Duration: {r1.report['duration_ms']:.2f} ms" in report1
    assert f"Init Duration: {r1.report['init_duration_ms']:.2f} ms" in report1


def test_init_output_appears_before_the_first_invocation(runtime, make_function, start):
    make_function("f", """
        print("printed during INIT")
        def handler(event, context):
            print("printed by the handler")
            return 1
        """, start=start)
    r = runtime.invoke("f", {})
    text = read_log(runtime, "f")
    assert "printed during INIT" in text
    assert text.index("printed during INIT") < text.index(f"START RequestId: {r.request_id}")
    output, _ = block_of(text, r.request_id)
    assert "printed by the handler" in output


def test_log_tail_is_the_last_4_kib_ending_with_report(runtime, actions):
    r = runtime.invoke(actions, {"action": "print", "text": "A" * 10_000})
    assert len(r.log_tail.encode()) <= 4096
    assert len(r.log_tail.encode()) >= 4000  # the block is longer than the limit
    last = r.log_tail.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"REPORT RequestId: {r.request_id}\t")
    assert r.log_tail.endswith("\n")
    assert read_log(runtime, actions).endswith(r.log_tail)


def test_short_log_tail_is_the_whole_block(runtime, actions):
    r = runtime.invoke(actions, {"action": "print", "text": "short"})
    assert r.log_tail.startswith(f"START RequestId: {r.request_id} Version: $LATEST\n")
    assert "short\n" in r.log_tail
    assert f"END RequestId: {r.request_id}\n" in r.log_tail


def test_output_before_a_timeout_reaches_the_log(runtime, actions, start):
    r = runtime.invoke(actions, {"action": "sleep", "seconds": 30})
    assert r.payload["errorType"] == "Sandbox.Timedout"
    output, report = block_of(read_log(runtime, actions), r.request_id)
    assert "about to sleep 30" in output
    assert "Task timed out after 1.00 seconds" in output
    assert "Status: timeout" in report
    assert "about to sleep 30" in r.log_tail


def test_output_before_a_crash_reaches_the_log(runtime, make_function, start):
    make_function("f", """
        import os
        def handler(event, context):
            print("last words")
            os._exit(3)
        """, start=start)
    r = runtime.invoke("f", {})
    output, report = block_of(read_log(runtime, "f"), r.request_id)
    assert "last words" in output
    assert "Runtime exited with error: exit status 3" in output
    assert "Status: exit" in report


def test_unterminated_output_gets_a_newline(runtime, make_function):
    make_function("f", """
        import sys
        def handler(event, context):
            sys.stdout.write("no newline")
            return 1
        """)
    r = runtime.invoke("f", {})
    assert f"no newline\nEND RequestId: {r.request_id}\n" in read_log(runtime, "f")


def test_concurrent_invocations_do_not_interleave(runtime, make_function):
    make_function("f", """
        import time
        def handler(event, context):
            for i in range(20):
                print(event["tag"], i)
                time.sleep(0.005)
            return 1
        """, start="snapshot")
    ids = {}

    def run(tag):
        ids[tag] = runtime.invoke("f", {"tag": tag}).request_id

    threads = [threading.Thread(target=run, args=(t,)) for t in ("aaa", "bbb", "ccc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    text = read_log(runtime, "f")
    for tag, request_id in ids.items():
        output, _ = block_of(text, request_id)
        assert output == "".join(f"{tag} {i}\n" for i in range(20))


def test_log_survives_update_and_goes_with_the_state_dir(runtime, actions):
    runtime.invoke(actions, {"action": "print", "text": "before update"})
    runtime.update_function(actions, description="changed")
    runtime.invoke(actions, {"action": "print", "text": "after update"})
    text = read_log(runtime, actions)
    assert "before update" in text and "after update" in text


# -- helpers ---------------------------------------------------------------------------
@pytest.mark.parametrize("duration, billed", [(0.0, 1), (0.01, 1), (1.0, 1), (1.001, 2),
                                              (99.5, 100), (1000.0, 1000)])
def test_billed_ms(duration, billed):
    assert logs.billed_ms(duration) == billed


def test_report_line_fields():
    report = {"request_id": "rid", "duration_ms": 1.234, "billed_duration_ms": 2,
              "memory_size_mb": 128, "max_memory_used_mb": 20, "init_duration_ms": 12.345,
              "restore_duration_ms": None, "start": "cold", "status": "ok"}
    assert logs.report_line(report) == (
        "REPORT RequestId: rid\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\t"
        "Max Memory Used: 20 MB\tInit Duration: 12.35 ms\tStart: cold")
    report.update(init_duration_ms=None, status="timeout", start="warm")
    assert logs.report_line(report) == (
        "REPORT RequestId: rid\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\t"
        "Max Memory Used: 20 MB\tStatus: timeout\tStart: warm")
    report.update(killed_by_sandbox=True, cpu_time_ms=999.5)
    assert logs.report_line(report).endswith(
        "\tStatus: timeout\tKilled By: sandbox\tCPU Time: 999.50 ms\tStart: warm")
    report.update(status="oom", killed_by_sandbox=False, oom_killed=True, signal=9)
    assert logs.report_line(report).endswith(
        "\tStatus: oom\tSignal: 9\tKilled By: oom\tCPU Time: 999.50 ms\tStart: warm")
    report.update(status="exit", oom_killed=False, signal=None, exit_code=3, cpu_time_ms=None)
    assert logs.report_line(report).endswith("\tStatus: exit\tExit Code: 3\tStart: warm")


def test_tail_keeps_the_last_bytes():
    block = ("\u00e9" * 3000).encode() + b"END"
    tail = logs.tail(block, 4096)
    assert tail.endswith("END")
    assert len(tail.encode("utf-8", "replace")) <= 4096 + 3  # a cut character is replaced
    assert logs.tail(b"short") == "short"


def test_timestamp_format():
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", logs.timestamp())


def test_huge_output_keeps_its_tail(runtime, make_function):
    make_function("f", """
        import sys
        def handler(event, context):
            sys.stdout.write("x" * (3 * 1024 * 1024) + "\\nthe-last-line\\n")
            return 1
        """)
    r = runtime.invoke("f", {})
    assert r.function_error is None
    output, _ = block_of(read_log(runtime, "f"), r.request_id)
    assert output.endswith("the-last-line\n")
    assert re.match(r"\[sandbox: \d+ bytes of output dropped\]\n", output)
    assert len(output) <= 1024 * 1024 + 100
    assert "the-last-line" in r.log_tail
