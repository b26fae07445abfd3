"""``sandbox bench``: percentile math, the interleaving, the bwrap detection,
the target verdicts, the zygote tree's cases and memory report, and one real
``--quick`` run end to end.

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

from sandbox import Runtime, cli
from sandbox.bench import cases as bench_cases
from sandbox.bench.cases import Case, bwrap_peer
from sandbox.bench.report import target_rows
from sandbox.bench.runner import run_cases, schedule
from sandbox.bench.stats import Summary, percentile
from sandbox.bench.tree import TREE_HANDLERS, FirstStarts, imports_of, warm_tree
from sandbox.environments.tree import DEFAULT_PRELOAD
from sandbox.errors import ServiceException

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


def test_tree_targets_judge_the_first_start_in_ms_and_against_cold() -> None:
    summaries = {"tree-first-stdlib": _summary(4.0), "cold-first-stdlib": _summary(30.0),
                 "tree-first-thirdparty": _summary(8.0),
                 "cold-first-thirdparty": _summary(100.0)}
    rows = {r["target"]: r for r in target_rows(summaries, None)}
    fast = rows["tree-first-stdlib p50 <= 5 ms"]
    assert (fast["verdict"], fast["value"], fast["unit"]) == ("PASS", 4.0, "ms")
    versus_cold = rows["tree-first-stdlib >= 10x faster than cold-first-stdlib (p50)"]
    assert (versus_cold["verdict"], versus_cold["unit"]) == ("MISS", "x")
    assert versus_cold["value"] == pytest.approx(7.5)
    assert versus_cold["missed_by"] == pytest.approx(10 / 7.5)
    slow = rows["tree-first-thirdparty p50 <= 5 ms"]
    assert (slow["verdict"], slow["missed_by"]) == ("MISS", pytest.approx(1.6))
    assert rows["tree-first-thirdparty >= 10x faster than cold-first-thirdparty (p50)"][
        "verdict"] == "PASS"
    assert rows["tree-first-base p50 <= 5 ms"]["verdict"] == "n/a"


# -- the zygote tree's cases ---------------------------------------------------------


def test_imports_of_lists_top_level_imports_as_preload_names(tmp_path: Path) -> None:
    source = tmp_path / "app.py"
    source.write_text("import json, xml.etree.ElementTree\nfrom email import message\n"
                      "from . import sibling\nimport yaml as y\n\n"
                      "def handler(event, context):\n    import csv\n")
    assert imports_of(str(source)) == ("email", "json", "xml.etree.ElementTree", "yaml")


def test_tree_handlers_need_a_node_except_the_base_one() -> None:
    by_name = {h.name: h for h in TREE_HANDLERS}
    assert set(by_name) == {"stdlib", "thirdparty", "base"}
    base = set(DEFAULT_PRELOAD)
    assert by_name["base"].preload and set(by_name["base"].preload) <= base
    assert not by_name["base"].node
    for name in ("stdlib", "thirdparty"):
        assert by_name[name].node and set(by_name[name].preload) - base
    assert {"yaml", "rich.console"} <= set(by_name["thirdparty"].preload)


@pytest.fixture
def tree_runtime() -> Any:
    # No CPU quota: at 128 MB's 7 % of a vCPU the node's imports take seconds.
    with Runtime(cpu_follows_memory=False) as rt:
        yield rt


def test_first_start_samples_fork_from_the_warm_node_and_delete_their_function(
        tree_runtime: Runtime) -> None:
    stdlib = next(h for h in TREE_HANDLERS if h.name == "stdlib")
    parent = warm_tree(tree_runtime, stdlib)
    nodes = {n["pid"]: n for n in tree_runtime.zygote_tree()["tree"]}
    assert nodes[parent]["parent"] is not None  # a node, not the base
    times = FirstStarts(tree_runtime, stdlib, "snapshot", parent).sampler()(2)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert [f["FunctionName"] for f in tree_runtime.list_functions()] == ["tree-warm-stdlib"]


def test_first_start_sample_refuses_a_zygote_forked_elsewhere(tree_runtime: Runtime) -> None:
    """A sample whose zygote did not fork from the warm node measured
    something else: it fails, and its function is deleted all the same."""
    base = next(h for h in TREE_HANDLERS if h.name == "base")
    elsewhere = FirstStarts(tree_runtime, base, "snapshot", parent_pid=1)
    with pytest.raises(ServiceException, match="did not measure the warm tree"):
        elsewhere.sampler()(1)
    assert not [f for f in tree_runtime.list_functions()
                if f["FunctionName"].startswith("first-")]


# -- end to end --------------------------------------------------------------------

TREE_CASES = {f"{kind}-first-{handler}" for kind in ("tree", "cold")
              for handler in ("stdlib", "thirdparty", "base")}
EXPECTED_CASES = {
    "warm", "snapshot", "cold", "warm-heavy", "snapshot-heavy", "cold-heavy",
    "peer-python", "peer-python-heavy", "peer-forkserver", "peer-forkserver-heavy",
    "peer-pool", "peer-pool-heavy", "floor-fork-native", "floor-os-fork", "floor-roundtrip",
    *TREE_CASES,
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


def test_quick_bench_runs_the_tree_cases_with_their_targets(
        quick_run: tuple[Path, int, str]) -> None:
    document = json.loads((quick_run[0] / "bench.json").read_text())
    by_name = {entry["name"]: entry for entry in document["cases"]}
    for handler in ("stdlib", "thirdparty", "base"):
        tree, cold = by_name[f"tree-first-{handler}"], by_name[f"cold-first-{handler}"]
        assert (tree["family"], tree["handler"], tree["start"]) == (
            "sandbox", handler, "snapshot")
        assert (cold["handler"], cold["start"]) == (handler, "cold")
    targets = {t["target"]: t for t in document["targets"]}
    for handler in ("stdlib", "thirdparty", "base"):
        within = targets[f"tree-first-{handler} p50 <= 5 ms"]
        faster = targets[f"tree-first-{handler} >= 10x faster than cold-first-{handler} (p50)"]
        assert within["unit"] == "ms" and within["verdict"] in ("PASS", "MISS")
        assert within["value"] == by_name[f"tree-first-{handler}"]["p50"]
        assert faster["value"] == pytest.approx(
            by_name[f"cold-first-{handler}"]["p50"] / by_name[f"tree-first-{handler}"]["p50"])
        assert faster["verdict"] == ("PASS" if faster["value"] >= 10 else "MISS")


def test_quick_bench_reports_the_memory_of_the_zygote_tree(
        quick_run: tuple[Path, int, str]) -> None:
    out = quick_run[0]
    memory = json.loads((out / "bench.json").read_text())["tree_memory"]
    processes = memory["processes"]
    by_pid = {p["pid"]: p for p in processes}
    roles = [p["role"] for p in processes]
    assert roles.count("base") == 1 and roles.count("node") == 2
    assert roles.count("function zygote") == 3
    for p in processes:
        assert 0 < p["uss_mb"] <= p["pss_mb"] <= p["rss_mb"], p
        if p["role"] == "environment":
            assert by_pid[p["parent"]]["role"] == "function zygote"
            assert by_pid[p["parent"]]["holds"] == p["holds"]
    zygote_parents = {p["holds"]: by_pid[p["parent"]]["role"] for p in processes
                      if p["role"] == "function zygote"}
    assert zygote_parents == {"memory-stdlib": "node", "memory-thirdparty": "node",
                              "memory-base": "base"}
    totals = memory["totals"]
    assert totals["count"] == len(processes)
    assert totals["rss_mb"] == pytest.approx(sum(p["rss_mb"] for p in processes))
    assert totals["uss_over_rss"] == pytest.approx(totals["uss_mb"] / totals["rss_mb"])
    assert sum(r["count"] for r in memory["by_role"].values()) == len(processes)
    for handler in ("stdlib", "thirdparty", "base"):
        figures = memory["handlers"][handler]
        assert figures["idle_envs"] >= 2
        assert figures["env_pss_over_cold_pss"] == pytest.approx(
            figures["env_pss_mb"] / figures["cold_interpreter"]["pss_mb"])
    assert memory["cold_equivalent_pss_mb"] > 0
    markdown = (out / "bench.md").read_text()
    assert "Zygote tree memory" in markdown
    assert "| function zygote |" in markdown and "| environment |" in markdown


def test_quick_bench_leaves_no_process_behind(quick_run: tuple[Path, int, str]) -> None:
    assert wait_gone(descendants()) == set()
