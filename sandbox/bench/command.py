"""``sandbox bench``: one run, interleaved, then the sweeps and the report files."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from ..errors import ServiceException
from . import report, runner, sweeps, tree
from .cases import CaseSet
from .tree_memory import tree_memory


@dataclass(frozen=True)
class Plan:
    """How much a run measures: rounds, samples per turn, sweep sizes, and the
    idle environments per function of the zygote tree's memory report."""

    rounds: int
    per_round_scale: float
    sweeps: sweeps.SweepConfig | None
    tree_idle_envs: int = 2


QUICK = Plan(rounds=6, per_round_scale=0.5, sweeps=sweeps.QUICK, tree_idle_envs=2)
FULL = Plan(rounds=30, per_round_scale=1.0, sweeps=sweeps.FULL, tree_idle_envs=4)


def run(out_dir: str, quick: bool = False, progress: bool = True,
        plan: Plan | None = None) -> tuple[dict[str, Any], list[str]]:
    """Measures every case and sweep, writes the report files into ``out_dir``.

    Args:
        plan: overrides the quick/full plan (tests use a smaller one).
    Returns:
        bench.json's content and the paths written.
    """
    plan = plan or (QUICK if quick else FULL)
    started = time.monotonic()
    meta: dict[str, Any] = {"quick": quick, "started": report.now_iso(),
                            "rounds": plan.rounds}
    with CaseSet(plan.per_round_scale) as case_set, _progress(progress) as bar:
        case_set.build()
        tree.add_cases(case_set)
        cases = case_set.cases
        total = plan.rounds * sum(c.per_round for c in cases)
        task = bar.add_task("cases", total=total) if bar else None
        sweep_task = (bar.add_task("sweeps", total=plan.sweeps.steps)
                      if bar and plan.sweeps else None)

        def advance(case: Any, count: int) -> None:
            if bar is not None:
                bar.update(task, advance=count, description=f"cases: {case.name}")

        samples = runner.run_cases(cases, plan.rounds, advance)
        case_set.close()  # its environments and peers must not weigh on the sweeps
        try:
            memory = tree_memory(plan.tree_idle_envs)
        except ServiceException as exc:  # reported in its place, the rest still counts
            memory = {"error": exc.message}

        def sweep_step(label: str) -> None:
            if bar is not None:
                bar.update(sweep_task, advance=1, description=f"sweeps: {label}")

        sweep_results = sweeps.run_sweeps(plan.sweeps, sweep_step) if plan.sweeps else None
        summaries = runner.summarize(samples)
        meta["finished"] = report.now_iso()
        meta["duration_s"] = time.monotonic() - started
        document = report.bench_document(cases, summaries, case_set.skipped, sweep_results,
                                         meta, memory)
    paths = report.write_all(document, samples, out_dir)
    return document, paths


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress("[progress.description]{task.description:<36}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)
