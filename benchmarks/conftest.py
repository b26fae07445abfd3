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
    with Runtime() as rt:
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
            names[kind] = name
    return Functions(snapshot, cold)


# -- the ratio table ---------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: tuple[str, str | None]  # (group, param)
    denominator: tuple[str, str | None]
    op: str | None  # "<=" or ">=", None: informational
    target: float | None


RATIOS = (
    Ratio("warm-noop / floor-roundtrip", ("warm-noop", None), ("floor-roundtrip", None),
          "<=", 3.0),
    Ratio("warm-heavy / floor-roundtrip", ("warm-heavy", None), ("floor-roundtrip", None),
          None, None),
    Ratio("snapshot-noop / floor-os-fork", ("snapshot-noop", None), ("floor-os-fork", None),
          "<=", 3.0),
    Ratio("snapshot-heavy / floor-os-fork", ("snapshot-heavy", None), ("floor-os-fork", None),
          "<=", 3.0),
    Ratio("snapshot-noop / floor-fork-native", ("snapshot-noop", None),
          ("floor-fork-native", None), None, None),
    Ratio("cold-heavy / snapshot-heavy", ("cold-heavy", None), ("snapshot-heavy", None),
          ">=", 10.0),
    Ratio("cold-noop / snapshot-noop", ("cold-noop", None), ("snapshot-noop", None),
          None, None),
    Ratio("cold-noop / peer-python-c[noop]", ("cold-noop", None), ("peer-python-c", "noop"),
          None, None),
    Ratio("cold-heavy / peer-python-c[heavy]", ("cold-heavy", None),
          ("peer-python-c", "heavy"), None, None),
)

ORDER = ("floor-roundtrip", "floor-fork-native", "floor-os-fork", "peer-python-c",
         "warm-noop", "warm-heavy", "snapshot-noop", "snapshot-heavy", "cold-noop",
         "cold-heavy")


def _benchmarks(config: pytest.Config) -> list[Any]:
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return []
    return [b for b in session.benchmarks if b and not b.has_error]


def _median(benchmarks: list[Any], key: tuple[str, str | None]) -> float | None:
    group, param = key
    for bench in benchmarks:
        if bench.group == group and (param is None or bench.param == param):
            return float(bench.stats.median)
    return None


def compute_ratios(benchmarks: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for ratio in RATIOS:
        num, den = _median(benchmarks, ratio.numerator), _median(benchmarks, ratio.denominator)
        value = num / den if num is not None and den else None
        if value is None:
            verdict = "n/a"
        elif ratio.op == "<=":
            verdict = "PASS" if value <= ratio.target else "MISS"
        elif ratio.op == ">=":
            verdict = "PASS" if value >= ratio.target else "MISS"
        else:
            verdict = "info"
        rows.append({"ratio": ratio.label, "value": value, "numerator_median_s": num,
                     "denominator_median_s": den,
                     "target": f"{ratio.op} {ratio.target:g}x" if ratio.op else None,
                     "verdict": verdict})
    return rows


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


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
    terminalreporter.section("sandbox: ratios of medians (targets from issue 2)")
    write(f"  {'ratio':<36} {'value':>9}   {'target':<8} verdict")
    for row in compute_ratios(benchmarks):
        value = f"{row['value']:8.2f}x" if row["value"] is not None else "      n/a"
        write(f"  {row['ratio']:<36} {value}   {row['target'] or '':<8} {row['verdict']}")
