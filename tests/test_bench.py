"""``sandbox bench``: percentile math, the interleaving, the bwrap detection,
the target verdicts, and one real ``--quick`` run end to end.

No assertion here is about speed: figures go to benchmarks/ and the report.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import descendants, wait_gone

from sandbox import cli
from sandbox.bench import cases as bench_cases
from sandbox.bench.cases import Case, bwrap_peer
from sandbox.bench.report import target_rows
from sandbox.bench.runner import run_cases, schedule
from sandbox.bench.stats import Summary, percentile

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- percentiles ------------------------------------------------------------------


@pytest.mark.parametrize(("pct", "expected"), [
    (0, 1.0), (50, 3.0), (90, 4.6), (99, 4.96), (100, 5.0), (25, 2.0), (12.5, 1.5),
])
def test_percentile_interpolates_between_closest_ranks(pct: float, expected: float) -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], pct) == pytest.approx(expected)


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize(("values", "pct", "message"), [
    ([], 50, "no values"), ([1.0], -1, "within 0-100"), ([1.0], 101, "within 0-100"),
])
def test_percentile_rejects_bad_input(values: list[float], pct: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        percentile(values, pct)


def test_summary_converts_seconds_to_milliseconds_and_sorts() -> None:
    summary = Summary.of_seconds([0.004, 0.001, 0.003, 0.002, 0.005])
    assert (summary.samples, summary.min, summary.p50, summary.max) == (5, 1.0, 3.0, 5.0)
    assert summary.p90 == pytest.approx(4.6)
    assert summary.mean == pytest.approx(3.0)
    with pytest.raises(ValueError):
        Summary.of_seconds([])


# -- interleaving -----------------------------------------------------------------


def test_schedule_rotates_so_every_item_takes_every_position() -> None:
    order = list(schedule(["a", "b", "c"], 3))
    rounds = [[item for r, item in order if r == n] for n in range(3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for position in range(3):
        assert sorted(r[position] for r in rounds) == ["a", "b", "c"]


def test_schedule_rejects_zero_rounds() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(schedule(["a"], 0))


def test_run_cases_interleaves_turns_and_takes_per_round_samples() -> None:
    calls: list[tuple[str, int]] = []

    def case(name: str, per_round: int, value: float) -> Case:
        def sample(n: int) -> list[float]:
            calls.append((name, n))
            return [value] * n

        return Case(name, "floor", None, None, per_round, sample, name)

    advanced: list[tuple[str, int]] = []
    samples = run_cases([case("x", 3, 0.001), case("y", 1, 0.002)], rounds=2,
                        advance=lambda c, n: advanced.append((c.name, n)))
    assert calls == [("x", 3), ("y", 1), ("y", 1), ("x", 3)]
    assert advanced == calls
    assert samples == {"x": [0.001] * 6, "y": [0.002] * 2}


# -- bwrap detection ---------------------------------------------------------------


def test_bwrap_peer_is_skipped_when_not_installed(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    argv, reason = bwrap_peer(bench_cases.HANDLERS["noop"])
    assert argv is None
    assert reason == "bubblewrap (bwrap) is not installed"


def test_bwrap_peer_is_skipped_when_it_fails_here(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\n"
                    "exit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    argv, reason = bwrap_peer(bench_cases.HANDLERS["noop"])
    assert argv is None
    assert reason is not None and "No permissions to create new namespace" in reason


# -- targets -----------------------------------------------------------------------


def _summary(p50_ms: float) -> Summary:
    return Summary(10, p50_ms, p50_ms, p50_ms, p50_ms, p50_ms, p50_ms, 0.0)


def test_targets_say_pass_miss_and_by_how_much() -> None:
    summaries = {"warm": _summary(0.3), "floor-roundtrip": _summary(0.1),
                 "snapshot": _summary(1.0), "floor-os-fork": _summary(1.0),
                 "peer-bwrap": _summary(15.0)}
    rows = {r["target"]: r for r in target_rows(summaries, {"noop": {"uss_over_cold_rss": 0.1}})}
    warm = rows["warm p50 <= 2x floor-roundtrip p50"]
    assert (warm["verdict"], warm["value"]) == ("MISS", pytest.approx(3.0))
    assert warm["missed_by"] == pytest.approx(1.5)  # 3x against 2x allowed
    assert rows["snapshot p50 <= 2x floor-os-fork p50"]["verdict"] == "PASS"
    bwrap = rows["peer-bwrap p50 >= 30x snapshot p50"]
    assert (bwrap["verdict"], bwrap["missed_by"]) == ("MISS", pytest.approx(2.0))  # 15x of 30x
    assert rows["warm-heavy p50 <= 2x floor-roundtrip p50"]["verdict"] == "n/a"
    idle = rows["idle noop environment USS <= 15% of a cold interpreter's RSS"]
    assert idle["verdict"] == "PASS"


# -- end to end --------------------------------------------------------------------

EXPECTED_CASES = {
    "warm", "snapshot", "cold", "warm-heavy", "snapshot-heavy", "cold-heavy",
    "peer-python", "peer-python-heavy", "peer-forkserver", "peer-forkserver-heavy",
    "peer-pool", "peer-pool-heavy", "floor-fork-native", "floor-os-fork", "floor-roundtrip",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """``sandbox bench --quick --out DIR`` through the CLI entry point, once."""
    out = tmp_path_factory.mktemp("bench")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["bench", "--quick", "--no-progress", "--out", str(out)])
    return out, code, stdout.getvalue()


def test_quick_bench_writes_every_named_case(quick_run: tuple[Path, int, str]) -> None:
    out, code, stdout = quick_run
    assert code == 0
    document = json.loads((out / "bench.json").read_text())
    names = {entry["name"] for entry in document["cases"]}
    skipped = {entry["name"] for entry in document["skipped"]}
    assert names >= EXPECTED_CASES
    assert {"peer-bwrap", "peer-bwrap-heavy"} <= names | skipped
    for entry in document["cases"]:
        assert entry["unit"] == "ms" and entry["samples"] >= 1
        assert 0 < entry["min"] <= entry["p50"] <= entry["p90"] <= entry["p99"] <= entry["max"]
    assert {c["start"] for c in document["cases"] if c["family"] == "sandbox"} == {
        "warm", "snapshot", "cold"}
    assert document["machine"]["cpu"]["count"] == os.cpu_count()
    assert "| `warm` |" in stdout


def test_quick_bench_reports_ratios_targets_and_sweeps(quick_run: tuple[Path, int, str]
                                                       ) -> None:
    document = json.loads((quick_run[0] / "bench.json").read_text())
    warm = next(r for r in document["ratios"] if r["case"] == "warm")
    assert {"floor-roundtrip", "floor-os-fork", "peer-pool"} <= set(warm["over"])
    assert all(t["verdict"] in ("PASS", "MISS", "n/a") for t in document["targets"])
    sweeps: dict[str, Any] = document["sweeps"]
    assert [r["concurrency"] for r in sweeps["concurrency"]] == [1, 4, 16, 64]
    assert [r["functions"] for r in sweeps["functions"]] == [1, 10, 100, 1000]
    assert sweeps["payload"][-1]["bytes"] == 6 * 1024 * 1024
    for handler in ("noop", "heavy"):
        memory = sweeps["memory"][handler]
        assert memory["idle_envs"] >= 1 and memory["env_uss_mb"] > 0
        assert memory["cold_interpreter"]["rss_mb"] > 0 and memory["envs_fit_budget"] > 0


def test_quick_bench_writes_markdown_pytest_benchmark_json_and_pngs(
        quick_run: tuple[Path, int, str]) -> None:
    out = quick_run[0]
    markdown = (out / "bench.md").read_text()
    for name in EXPECTED_CASES:
        assert f"| `{name}` |" in markdown
    assert "| target | measured | verdict |" in markdown
    compatible = json.loads((out / "pytest-benchmark.json").read_text())
    first = compatible["benchmarks"][0]
    assert {"min", "max", "mean", "median", "stddev", "rounds", "iqr", "ops"} <= set(
        first["stats"])
    assert {b["name"] for b in compatible["benchmarks"]} >= EXPECTED_CASES
    for png in ("latency_cdf.png", "p50_bars.png", "sweeps.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_quick_bench_leaves_no_process_behind(quick_run: tuple[Path, int, str]) -> None:
    assert wait_gone(descendants()) == set()
