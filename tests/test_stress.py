"""``sandbox stress``: the mix, each misbehaving kind's outcomes, the soak
verdicts, and a leak checker that finds what is deliberately leaked."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import descendants, wait_gone

from sandbox import cli
from sandbox.errors import InvalidParameterValueException
from sandbox.limits import cgroups
from sandbox.stress import leaks
from sandbox.stress.command import render, stress
from sandbox.stress.driver import LatencyRecorder, flatness
from sandbox.stress.mix import parse_mix

# -- the mix -----------------------------------------------------------------------


def test_parse_mix_keeps_the_order_and_drops_zero_weights() -> None:
    assert parse_mix("noop:70,cpu:10,alloc:10,crash:5,timeout:5,orphan:0") == {
        "noop": 70, "cpu": 10, "alloc": 10, "crash": 5, "timeout": 5}
    assert parse_mix(" crash : 1 , noop:2 ") == {"crash": 1, "noop": 2}


@pytest.mark.parametrize(("mix", "message"), [
    ("", "mix is empty"),
    ("noop", "'noop' is not kind:weight"),
    ("noop:70,sleepy:5", "kind 'sleepy' is unknown; known kinds: noop, cpu"),
    ("noop:seventy", "weight of 'noop' must be a whole number, got 'seventy'"),
    ("noop:1.5", "must be a whole number"),
    ("noop:-1", "must not be negative, got -1"),
    ("noop:1,noop:2", "'noop' is given twice"),
    ("noop:0,crash:0", "all 0"),
])
def test_parse_mix_names_what_is_wrong(mix: str, message: str) -> None:
    with pytest.raises(InvalidParameterValueException, match=message):
        parse_mix(mix)


def test_cli_rejects_a_bad_mix_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stress", "--mix", "noop:lots", "--duration", "1"]) == 2
    assert "weight of 'noop' must be a whole number" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    ({"concurrency": 0, "count": 1}, "concurrency must be 1-1000"),
    ({"concurrency": 1, "count": 0}, "count must be at least 1"),
    ({"concurrency": 1, "duration_s": 0}, "duration must be positive"),
])
def test_stress_rejects_bad_sizes(args: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidParameterValueException, match=message):
        stress("noop:1", **args)  # type: ignore[arg-type]


# -- each kind ---------------------------------------------------------------------


def _memory_status() -> str:
    # The OOM killer ends it where a memory cgroup exists; else RLIMIT_AS raises.
    return "oom" if cgroups.detect().version else "error"


@pytest.mark.parametrize(("kind", "count", "statuses"), [
    ("noop", 6, {"ok"}),
    ("cpu", 2, {"ok"}),
    ("alloc", 2, None),
    ("crash", 3, {"signal"}),
    ("timeout", 2, {"timeout"}),
])
def test_each_kind_ends_as_it_should_and_leaks_nothing(kind: str, count: int,
                                                       statuses: set[str] | None) -> None:
    expected = statuses or {_memory_status()}
    report = stress(f"{kind}:1", concurrency=2, count=count, seed=7)
    outcomes = report.result.outcomes[kind]
    assert sum(outcomes.values()) == count
    assert set(outcomes) == expected, report.result.unexpected
    assert report.result.unexpected_count == 0
    assert report.leaks == []
    assert report.ok and "result: OK" in render(report)


def test_a_mixed_run_for_a_duration_counts_every_invocation_once() -> None:
    report = stress("noop:5,crash:1,timeout:1", concurrency=4, duration_s=1.5, seed=1)
    result = report.result
    assert result.invocations == sum(len(v) for v in result.latencies.values()) > 0
    assert len(result.all_latencies) == result.invocations
    assert result.unexpected_count == 0 and report.leaks == []
    assert not report.soak and report.flatness == []
    assert wait_gone(descendants()) == set()


def test_a_crash_that_leaves_a_grandchild_is_reported_as_a_crash() -> None:
    """A grandchild still holding the channel does not hide the crash: the
    zygote's report of the exit wakes the waiting invocation."""
    report = stress("orphan:1", concurrency=1, count=2, seed=3)
    assert report.leaks == []
    assert set(report.result.outcomes["orphan"]) == {"signal"}


# -- soak --------------------------------------------------------------------------


def test_soak_mode_samples_the_dispatcher_and_judges_flatness() -> None:
    report = stress("noop:1", concurrency=2, count=400, seed=2, sample_interval_s=0.005)
    assert report.soak and report.result.invocations == 400
    assert len(report.result.samples) >= 2
    assert [f.name for f in report.flatness] == ["dispatcher RSS", "dispatcher fds"]
    assert all(f.flat is not False for f in report.flatness), report.flatness
    assert report.leaks == []


def test_flatness_passes_a_plateau_and_fails_steady_growth() -> None:
    plateau = [10, 50, 100, 101, 100, 102, 101, 100, 101, 102]
    assert flatness("rss", plateau, 0.1, 0).flat is True
    growing = [100 + 20 * i for i in range(10)]
    verdict = flatness("rss", growing, 0.1, 0)
    assert verdict.flat is False and verdict.second_peak > verdict.allowed
    assert flatness("rss", [1, 2, 3], 0.1, 0).flat is None  # too few to judge


def test_latency_recorder_keeps_exact_count_and_max_in_bounded_memory() -> None:
    recorder = LatencyRecorder(capacity=100, seed=1)
    for i in range(10_000):
        recorder.add(i / 10_000)
    assert (len(recorder), recorder.max) == (10_000, 0.9999)
    assert len(recorder.sample) == 100
    # A uniform sample of 0..1: its median is near 0.5, not stuck at the first 100.
    assert 0.3 < sorted(recorder.sample)[50] < 0.7


# -- the leak checker --------------------------------------------------------------


def test_leak_checker_finds_a_leaked_process_file_fd_cgroup_and_orphan(tmp_path: Path) -> None:
    root = tmp_path / "run"
    temp_dir = root / "tmp"
    temp_dir.mkdir(parents=True)
    parents = list(cgroups.detect().parents.values())
    before = leaks.take(parents, str(temp_dir))

    child = subprocess.Popen(["sleep", "30"])
    # An orphan: its parent (the shell) exits at once, so it is nobody's child
    # of ours, but it works in the run's directory.
    orphan_pid = int(subprocess.run(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
                                    cwd=root, capture_output=True, text=True,
                                    check=True).stdout)
    (temp_dir / "left.txt").write_text("x")
    fd = os.open(os.devnull, os.O_RDONLY)
    # Named as a live Runtime's, so no concurrent Runtime sweeps it as stale.
    cgroup_dir = os.path.join(parents[0], cgroups.runtime_dir_name()) if parents else None
    if cgroup_dir:
        os.mkdir(cgroup_dir)
    try:
        found = leaks.find_leaks(before, parents, str(temp_dir), str(root), settle_s=0.2)
        by_kind: Counter[str] = Counter(leak.kind for leak in found)
        idents = {(leak.kind, leak.ident) for leak in found}
        assert ("process", str(child.pid)) in idents
        assert ("process", str(orphan_pid)) in idents
        assert ("tempfile", str(temp_dir / "left.txt")) in idents
        assert ("fd", str(fd)) in idents
        if cgroup_dir:
            assert ("cgroup", cgroup_dir) in idents
        assert by_kind["process"] == 2
    finally:
        child.kill()
        child.wait()
        os.kill(orphan_pid, signal.SIGKILL)
        os.close(fd)
        (temp_dir / "left.txt").unlink()
        if cgroup_dir:
            os.rmdir(cgroup_dir)
    assert wait_gone({orphan_pid}) == set()
    assert leaks.find_leaks(before, parents, str(temp_dir), str(root), settle_s=1.0) == []


def test_cli_stress_prints_the_report_and_exits_0_when_clean() -> None:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["stress", "--mix", "noop:3,crash:1", "--concurrency", "2",
                         "--count", "8", "--seed", "5"])
    text = stdout.getvalue()
    assert code == 0, text
    assert "sandbox stress: 8 invocations" in text
    assert "leak check: no process, cgroup, fd" in text and "result: OK" in text
