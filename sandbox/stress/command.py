"""``sandbox stress``: one run of the mix, its report, and the leak check.

The run gets a private directory: the functions' code lives there, and it is
this process's ``tempfile`` directory while the Runtime exists (so the
Runtime's state directory and anything else the dispatcher makes land there,
and anything left over is ours to report).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from ..api import Runtime
from ..bench.stats import Summary
from ..errors import InvalidParameterValueException
from ..limits import cgroups
from . import driver, handlers, leaks
from .mix import parse_mix

MAX_CONCURRENCY = 1000
MIB = 2**20
# Soak flatness: the later half's peak may exceed the earlier half's by this much.
RSS_TOLERANCE = (0.10, 16 * MIB)
FD_TOLERANCE = (0.0, 8)


@dataclass
class StressReport:
    """A whole run: what the callers saw, the soak verdicts and the leaks."""

    weights: dict[str, int]
    concurrency: int
    result: driver.DriveResult
    leaks: list[leaks.Leak]
    flatness: list[driver.Flatness] = field(default_factory=list)
    soak: bool = False

    @property
    def not_flat(self) -> list[driver.Flatness]:
        return [f for f in self.flatness if f.flat is False]

    @property
    def ok(self) -> bool:
        return not self.leaks and not self.result.unexpected_count and not self.not_flat


def _validate(duration_s: float | None, concurrency: int, count: int | None) -> None:
    if count is not None and count < 1:
        raise InvalidParameterValueException(f"count must be at least 1, got {count}")
    if count is None and (duration_s is None or not duration_s > 0):
        raise InvalidParameterValueException(f"duration must be positive, got {duration_s}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidParameterValueException(
            f"concurrency must be 1-{MAX_CONCURRENCY}, got {concurrency}")


@contextmanager
def _tempfile_dir(path: str) -> Iterator[None]:
    previous = tempfile.tempdir
    tempfile.tempdir = path
    try:
        yield
    finally:
        tempfile.tempdir = previous


def stress(mix: str, concurrency: int, duration_s: float | None = None,
           count: int | None = None, seed: int | None = None,
           sample_interval_s: float = 0.5) -> StressReport:
    """Runs the mix on a fresh Runtime, closes it, then checks for leaks.

    ``count`` (soak mode) takes precedence over ``duration_s``.

    Raises:
        InvalidParameterValueException: a bad mix, duration, count or concurrency.
    """
    weights = parse_mix(mix)
    _validate(duration_s, concurrency, count)
    root = tempfile.mkdtemp(prefix="sandbox-stress-")
    temp_dir = os.path.join(root, "tmp")
    os.mkdir(temp_dir)
    parents = list(cgroups.detect().parents.values())
    try:
        before = leaks.take(parents, temp_dir)
        with _tempfile_dir(temp_dir):
            rt = Runtime(concurrency_limit=max(concurrency, 1000))
            try:
                functions = handlers.register(rt, list(weights), os.path.join(root, "code"))
                result = driver.drive(rt.invoke, functions, weights, concurrency,
                                      duration_s=None if count is not None else duration_s,
                                      count=count, seed=seed,
                                      sample_interval_s=sample_interval_s)
            finally:
                rt.close()
        found = leaks.find_leaks(before, parents, temp_dir, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report = StressReport(weights, concurrency, result, found, soak=count is not None)
    if report.soak:
        report.flatness = [
            driver.flatness("dispatcher RSS", [s.rss_bytes for s in result.samples],
                            *RSS_TOLERANCE),
            driver.flatness("dispatcher fds", [s.fds for s in result.samples],
                            *FD_TOLERANCE),
        ]
    return report


def _ms(recorders: list[driver.LatencyRecorder]) -> str:
    sample = [t for r in recorders for t in r.sample]
    if not sample:
        return "-"
    s = Summary.of_seconds(sample)
    top = max(r.max for r in recorders) * 1000.0
    return f"p50 {s.p50:9.2f} ms  p99 {s.p99:9.2f} ms  max {top:9.2f} ms"


def render(report: StressReport) -> str:
    """The text report."""
    result = report.result
    total = result.invocations
    rate = total / result.elapsed_s if result.elapsed_s else 0.0
    lines = [f"sandbox stress: {total} invocations in {result.elapsed_s:.1f} s "
             f"({rate:.0f}/s) by {report.concurrency} callers; mix "
             + ",".join(f"{k}:{w}" for k, w in report.weights.items()),
             f"  {'all':<8} {_ms([result.all_latencies])}",
             "outcomes by kind (expected in brackets):"]
    for kind, counter in result.outcomes.items():
        expected = "/".join(sorted(handlers.KINDS[kind].expected))
        outcomes = ", ".join(f"{status} {n}" for status, n in counter.most_common())
        lines.append(f"  {kind:<8} {sum(counter.values()):>8}  [{expected}]  {outcomes}")
        lines.append(f"  {'':<8} {_ms([result.latencies[kind]])}")
    if result.interrupted:
        lines.append("INTERRUPTED: the callers were stopped early")
    if result.unexpected_count:
        lines.append(f"UNEXPECTED OUTCOMES: {result.unexpected_count}")
        lines += [f"  {kind}: {status}: {detail}" for kind, status, detail in result.unexpected]
    samples = result.samples
    if samples:
        rss = [s.rss_bytes / MIB for s in samples]
        fds = [s.fds for s in samples]
        lines.append(f"dispatcher: {len(samples)} samples; RSS {min(rss):.1f}-{max(rss):.1f} "
                     f"MiB (last {rss[-1]:.1f}); fds {min(fds)}-{max(fds)} (last {fds[-1]})")
    for flat in report.flatness:
        if flat.flat is None:
            lines.append(f"soak: {flat.name}: too few samples to judge")
        else:
            lines.append(f"soak: {flat.name}: {'flat' if flat.flat else 'GROWING'} "
                         f"(earlier peak {flat.first_peak:.0f}, later peak "
                         f"{flat.second_peak:.0f}, allowed {flat.allowed:.0f})")
    if report.leaks:
        lines.append(f"LEAK CHECK FAILED: {len(report.leaks)} left behind")
        lines += [f"  {leak}" for leak in report.leaks]
    else:
        lines.append("leak check: no process, cgroup, fd, temporary file or shared-memory "
                     "segment left behind")
    lines.append("result: " + ("OK" if report.ok else "FAILED"))
    return "\n".join(lines)


def run(duration_s: float, concurrency: int, mix: str, count: int | None,
        seed: int | None, out: TextIO) -> int:
    """The command: prints the report; 0 when clean, 1 on a leak, an
    unexpected outcome or growth in soak mode."""
    report = stress(mix, concurrency, duration_s=duration_s, count=count, seed=seed)
    print(render(report), file=out)
    return 0 if report.ok else 1
