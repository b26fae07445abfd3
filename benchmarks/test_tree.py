"""First start of a new function through the zygote tree, against a cold start (issue 8).

Run (one process, one run)::

    .venv/bin/python -m pytest benchmarks/test_tree.py --benchmark-only

Handlers (sandbox.bench.tree.TREE_HANDLERS; each function declares the
handler's imports in ``preload``): ``stdlib`` (examples/stdlib-heavy: asyncio,
sqlite3, email, http.server, ... beyond the base zygote's modules),
``thirdparty`` (examples/thirdparty: PyYAML and rich) and ``base``
(examples/base-stdlib: only modules the base zygote holds, so no node).

Groups, one round = the first ``rt.invoke`` of a function created for that
round (untimed) and deleted after it (untimed):

tree-first[handler]  a snapshot function. One function with the same preload
                     was started first, so the tree already holds the imports;
                     every round checks that the new function's zygote forked
                     from that node (or, for ``base``, from the base).
cold-first[handler]  the same with start="cold": a new interpreter.

The cold group of each handler records the tree group's median of this same
run and the ratio cold/tree in its extra_info (printed with the medians by
benchmarks/conftest.py, and in the JSON); the targets of issue 8 (tree first
start p50 <= 5 ms, >= 10x faster than cold) are recorded there as met/missed.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from sandbox import Runtime
from sandbox.bench.report import TREE_FIRST_START_MS, TREE_OVER_COLD
from sandbox.bench.tree import TREE_HANDLER_NAMES, TREE_HANDLERS, FirstStarts, warm_tree

# Rounds per benchmark: the whole module stays around 30 s on 2 cores.
ROUNDS = {"snapshot": 40, "cold": 15}
HANDLERS = {h.name: h for h in TREE_HANDLERS}
# Medians of the tree-first groups in this run, in seconds, by handler.
_TREE_MEDIANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def tree_parents(runtime: Runtime) -> dict[str, int]:
    """Warms the tree for every handler; the pid its functions' zygotes fork from."""
    return {h.name: warm_tree(runtime, h) for h in TREE_HANDLERS}


def _bench_first_start(benchmark: Any, rt: Runtime, handler: str, start: str,
                       parent: int | None) -> None:
    starts = FirstStarts(rt, HANDLERS[handler], start, parent)
    invoke = rt.invoke
    reports: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        return (starts.create(),), {}

    def first_invoke(name: str) -> None:
        results[name] = invoke(name, {})

    def teardown(name: str) -> None:
        reports.append(starts.finish(name, results.pop(name)))

    results: dict[str, Any] = {}
    benchmark.pedantic(first_invoke, setup=setup, teardown=teardown, rounds=ROUNDS[start],
                       warmup_rounds=1)
    for key in ("init_duration_ms", "restore_duration_ms", "duration_ms"):
        values = [r[key] for r in reports if r.get(key) is not None]
        if values:
            benchmark.extra_info[f"reported_{key}_median"] = round(statistics.median(values), 3)


def _median_s(benchmark: Any) -> float | None:
    stats = getattr(benchmark, "stats", None)  # None with --benchmark-disable
    return float(stats.stats.median) if stats is not None else None


@pytest.mark.benchmark(group="tree-first")
@pytest.mark.parametrize("handler", TREE_HANDLER_NAMES)
def test_tree_first_start(benchmark: Any, runtime: Runtime, tree_parents: dict[str, int],
                          handler: str) -> None:
    _bench_first_start(benchmark, runtime, handler, "snapshot", tree_parents[handler])
    median = _median_s(benchmark)
    if median is not None:
        _TREE_MEDIANS[handler] = median
        met = median * 1000.0 <= TREE_FIRST_START_MS
        benchmark.extra_info[f"target_p50_le_{TREE_FIRST_START_MS:g}ms"] = (
            "met" if met else "missed")


@pytest.mark.benchmark(group="cold-first")
@pytest.mark.parametrize("handler", TREE_HANDLER_NAMES)
def test_cold_first_start(benchmark: Any, runtime: Runtime, tree_parents: dict[str, int],
                          handler: str) -> None:
    _bench_first_start(benchmark, runtime, handler, "cold", None)
    median, tree = _median_s(benchmark), _TREE_MEDIANS.get(handler)
    if median is not None and tree:
        ratio = median / tree
        benchmark.extra_info["tree_first_median_ms"] = round(tree * 1000.0, 3)
        benchmark.extra_info["cold_over_tree"] = round(ratio, 2)
        benchmark.extra_info[f"target_ge_{TREE_OVER_COLD:g}x"] = (
            "met" if ratio >= TREE_OVER_COLD else "missed")
