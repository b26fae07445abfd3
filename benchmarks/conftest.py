"""Fixtures of the benchmark suite and the ratio table printed after the run.

The ratios are computed from the medians measured in this same run, so a run
on a loaded or slow host moves numerator and denominator together. They are
printed after pytest-benchmark's own table and, with ``--benchmark-json``,
added to the JSON under ``"sandbox_ratios"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox import Runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
HANDLERS = {"noop": os.path.join(EXAMPLES, "noop"), "heavy": os.path.join(EXAMPLES, "heavy")}


@dataclass(frozen=True)
class Functions:
    """Names of the registered functions, by handler and start kind."""

    snapshot: dict[str, str]
    cold: dict[str, str]


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    # Everything on but the CPU quota: with Lambda's 128 MB = 7 % of a vCPU the
    # figures would measure the quota, not the runtime (peers have no quota).
    with Runtime(cpu_follows_memory=False) as rt:
        yield rt


@pytest.fixture(scope="module")
def functions(runtime: Runtime) -> Functions:
    """One snapshot and one cold function per example handler, each invoked
    once so zygotes and the launcher are booted before anything is timed."""
    snapshot, cold = {}, {}
    for kind, code in HANDLERS.items():
        for start, names in (("snapshot", snapshot), ("cold", cold)):
            name = f"{kind}-{start}"
            runtime.create_function(name, handler="app.handler", code=code, start=start)
            result = runtime.invoke(name, {})
            assert result.function_error is None, result.payload
            assert result.report is not None and result.report["start"] == start
            # The first start forked from the zygote tree and booted the
            # function's zygote meanwhile: snapshot rounds fork from that.
            runtime.wait_zygote_boot(name)
            names[kind] = name
    return Functions(snapshot, cold)


# -- the ratio table ---------------------------------------------------------------


# A reference to a figure: (group, param, extra_info key). With an extra_info key
# the figure is that value (microseconds), measured outside pytest-benchmark.
Ref = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: Ref
    denominator: Ref
    op: str | None  # "<=" or ">=", None: informational
    target: float | None


def _ref(group: str, param: str | None = None, extra: str | None = None) -> Ref:
    return (group, param, extra)


RATIOS = (
    Ratio("warm-noop / floor-roundtrip", _ref("warm-noop"), _ref("floor-roundtrip"),
          "<=", 3.0),
    Ratio("warm-heavy / floor-roundtrip", _ref("warm-heavy"), _ref("floor-roundtrip"),
          None, None),
    Ratio("snapshot-noop / floor-os-fork", _ref("snapshot-noop"), _ref("floor-os-fork"),
          "<=", 3.0),
    Ratio("snapshot-heavy / floor-os-fork", _ref("snapshot-heavy"), _ref("floor-os-fork"),
          "<=", 3.0),
    Ratio("snapshot-heavy / clean-interp os.fork", _ref("snapshot-heavy"),
          _ref("floor-os-fork", None, "clean_interpreter_median_us"), None, None),
    Ratio("snapshot-noop / floor-fork-native", _ref("snapshot-noop"),
          _ref("floor-fork-native"), None, None),
    Ratio("cold-heavy / snapshot-heavy", _ref("cold-heavy"), _ref("snapshot-heavy"),
          ">=", 10.0),
    Ratio("snapshot-noop (isolated) / snapshot-bare-noop", _ref("snapshot-noop"),
          _ref("snapshot-bare-noop"), None, None),
    Ratio("warm-noop (isolated) / warm-bare-noop", _ref("warm-noop"), _ref("warm-bare-noop"),
          None, None),
    Ratio("cold-noop / snapshot-noop", _ref("cold-noop"), _ref("snapshot-noop"), None, None),
    Ratio("cold-noop / peer-python-c[noop]", _ref("cold-noop"), _ref("peer-python-c", "noop"),
          None, None),
    Ratio("cold-heavy / peer-python-c[heavy]", _ref("cold-heavy"),
          _ref("peer-python-c", "heavy"), None, None),
    # Issue 7's targets and its peers (benchmarks/test_peers.py).
    Ratio("warm-noop / floor-roundtrip (issue 7)", _ref("warm-noop"), _ref("floor-roundtrip"),
          "<=", 2.0),
    Ratio("snapshot-noop / floor-os-fork (issue 7)", _ref("snapshot-noop"),
          _ref("floor-os-fork"), "<=", 2.0),
    Ratio("peer-bwrap[noop] / snapshot-noop", _ref("peer-bwrap", "noop"),
          _ref("snapshot-noop"), ">=", 30.0),
    Ratio("peer-bwrap[heavy] / snapshot-heavy", _ref("peer-bwrap", "heavy"),
          _ref("snapshot-heavy"), ">=", 30.0),
    Ratio("snapshot-noop / peer-forkserver[noop]", _ref("snapshot-noop"),
          _ref("peer-forkserver", "noop"), None, None),
    Ratio("snapshot-heavy / peer-forkserver[heavy]", _ref("snapshot-heavy"),
          _ref("peer-forkserver", "heavy"), None, None),
    Ratio("warm-noop / peer-pool[noop]", _ref("warm-noop"), _ref("peer-pool", "noop"),
          None, None),
    # Issue 8's target: a new function's first start via the warm zygote tree
    # (benchmarks/test_tree.py) against a cold first start of the same handler.
    *(Ratio(f"cold-first[{h}] / tree-first[{h}]", _ref("cold-first", h),
            _ref("tree-first", h), ">=", 10.0) for h in ("stdlib", "thirdparty", "base")),
)

ORDER = ("floor-roundtrip", "floor-fork-native", "floor-os-fork", "peer-python-c",
         "peer-forkserver", "peer-pool", "peer-bwrap",
         "warm-noop", "warm-bare-noop", "warm-heavy", "snapshot-noop", "snapshot-bare-noop",
         "snapshot-heavy", "cold-noop", "cold-heavy", "tree-first", "cold-first",
         "isolation-step")


def _benchmarks(config: pytest.Config) -> list[Any]:
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return []
    return [b for b in session.benchmarks if b and not b.has_error]


def _figure(benchmarks: list[Any], ref: Ref, stat: str) -> float | None:
    """A statistic of the referenced benchmark, in seconds."""
    group, param, extra = ref
    for bench in benchmarks:
        if bench.group == group and (param is None or bench.param == param):
            if extra is None:
                return float(getattr(bench.stats, stat))
            value = bench.extra_info.get(extra)
            return float(value) / 1e6 if value is not None and stat == "median" else None
    return None


def _divide(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def compute_ratios(benchmarks: list[Any]) -> list[dict[str, Any]]:
    """The ratio table: of medians (judged against the target), and of minimums
    (the best case of each side, less sensitive to CPU placement and neighbours)."""
    rows = []
    for ratio in RATIOS:
        num = _figure(benchmarks, ratio.numerator, "median")
        den = _figure(benchmarks, ratio.denominator, "median")
        value = _divide(num, den)
        min_value = _divide(_figure(benchmarks, ratio.numerator, "min"),
                            _figure(benchmarks, ratio.denominator, "min"))
        if value is None:
            verdict = "n/a"
        elif ratio.op is None or ratio.target is None:
            verdict = "info"
        elif ratio.op == "<=":
            verdict = "PASS" if value <= ratio.target else "MISS"
        else:
            verdict = "PASS" if value >= ratio.target else "MISS"
        rows.append({"ratio": ratio.label, "value": value, "min_ratio": min_value,
                     "numerator_median_s": num, "denominator_median_s": den,
                     "target": f"{ratio.op} {ratio.target:g}x" if ratio.op else None,
                     "verdict": verdict})
    return rows


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def _fmt_ratio(value: float | None) -> str:
    return f"{value:8.2f}x" if value is not None else "        -"


def _label(bench: Any) -> str:
    return f"{bench.group}[{bench.param}]" if bench.param else bench.group


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any],
                                 output_json: dict[str, Any]) -> None:
    output_json["sandbox_ratios"] = compute_ratios(_benchmarks(config))


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    benchmarks = _benchmarks(config)
    if not benchmarks:
        return
    write = terminalreporter.write_line
    terminalreporter.section("sandbox: medians of this run")
    order = {group: i for i, group in enumerate(ORDER)}
    for bench in sorted(benchmarks, key=lambda b: (order.get(b.group, 99), b.param or "")):
        stats = bench.stats
        write(f"  {_label(bench):<24} median {_fmt_time(stats.median)}   "
              f"min {_fmt_time(stats.min)}   IQR {_fmt_time(stats.iqr)}   "
              f"rounds {stats.rounds}")
        for key, value in sorted(bench.extra_info.items()):
            write(f"  {'':<24}   {key} = {value}")
    steps = sorted((b for b in benchmarks if b.group == "isolation-step"),
                   key=lambda b: b.param or "")
    if steps:
        terminalreporter.section("sandbox: cost of each isolation step (spawn of /bin/true)")
        previous = None
        for bench in steps:
            median = bench.stats.median
            added = "" if previous is None else f"   adds {_fmt_time(median - previous)}"
            write(f"  {bench.param:<28} median {_fmt_time(median)}{added}")
            previous = median
    terminalreporter.section("sandbox: ratios of medians (targets from issues 2, 3 and 7)")
    write(f"  {'ratio':<46} {'medians':>9}   {'target':<8} {'verdict':<8} {'mins':>9}")
    for row in compute_ratios(benchmarks):
        write(f"  {row['ratio']:<46} {_fmt_ratio(row['value'])}   {row['target'] or '':<8} "
              f"{row['verdict']:<8} {_fmt_ratio(row['min_ratio'])}")
