"""The concurrent callers of ``sandbox stress`` and the dispatcher's samples.

``concurrency`` threads invoke functions picked at random by weight (a seeded
generator per thread), until a duration passes or a count of invocations is
reached. A sampler thread records this process's RSS and open fd count, so a
soak run can show that neither grows.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..errors import SandboxError
from .handlers import KINDS


@dataclass
class Sample:
    elapsed_s: float
    completed: int
    rss_bytes: int
    fds: int


class LatencyRecorder:
    """Latencies of one kind in bounded memory: exact count and max, and a
    uniform reservoir sample (Vitter's algorithm R) for the percentiles, so a
    soak run's own bookkeeping does not grow the RSS it is watching."""

    def __init__(self, capacity: int = 10_000, seed: int = 0) -> None:
        self.capacity = capacity
        self.count = 0
        self.max = 0.0
        self.sample: list[float] = []
        self._rng = random.Random(seed)

    def add(self, seconds: float) -> None:
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        if len(self.sample) < self.capacity:
            self.sample.append(seconds)
        else:
            slot = self._rng.randrange(self.count)
            if slot < self.capacity:
                self.sample[slot] = seconds

    def __len__(self) -> int:
        return self.count


@dataclass
class DriveResult:
    """What the callers saw.

    Attributes:
        outcomes: kind -> status -> count (status is the report's ``status``,
            or ``exception:<code>`` when invoke raised).
        latencies: kind -> its latencies (count, max, reservoir sample).
        unexpected: up to 20 (kind, status, detail) of outcomes outside the
            kind's expected set.
    """

    elapsed_s: float = 0.0
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    latencies: dict[str, LatencyRecorder] = field(default_factory=dict)
    all_latencies: LatencyRecorder = field(default_factory=LatencyRecorder)
    unexpected: list[tuple[str, str, str]] = field(default_factory=list)
    unexpected_count: int = 0
    samples: list[Sample] = field(default_factory=list)
    interrupted: bool = False

    @property
    def invocations(self) -> int:
        return sum(sum(c.values()) for c in self.outcomes.values())


class _Sampler(threading.Thread):
    def __init__(self, interval_s: float, completed: Callable[[], int]) -> None:
        super().__init__(name="sandbox-stress-sampler", daemon=True)
        self.interval_s = interval_s
        self.completed = completed
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.started_at = time.monotonic()

    def take(self) -> None:
        proc = psutil.Process()
        self.samples.append(Sample(time.monotonic() - self.started_at, self.completed(),
                                   proc.memory_info().rss, proc.num_fds()))

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.take()


def drive(invoke: Callable[[str, Any], Any], functions: dict[str, str],
          weights: dict[str, int], concurrency: int, duration_s: float | None = None,
          count: int | None = None, seed: int | None = None,
          sample_interval_s: float = 0.5) -> DriveResult:
    """Runs the callers; returns once the duration passed or ``count`` invocations ended.

    Args:
        invoke: ``Runtime.invoke``.
        functions: function name by kind.
        weights: relative weight by kind (the parsed mix).
        count: stop after this many invocations (soak mode); else ``duration_s``.
    """
    if (duration_s is None) == (count is None):
        raise ValueError("give exactly one of duration_s and count")
    kinds = list(weights)
    kind_weights = [weights[k] for k in kinds]
    result = DriveResult(outcomes={k: Counter() for k in kinds},
                         latencies={k: LatencyRecorder(seed=i) for i, k in enumerate(kinds)})
    lock = threading.Lock()
    tickets = itertools.count()
    done = [0]
    deadline = time.monotonic() + duration_s if duration_s is not None else None
    base_seed = random.randrange(2**32) if seed is None else seed

    def record(kind: str, status: str, seconds: float, detail: str) -> None:
        with lock:
            result.outcomes[kind][status] += 1
            result.latencies[kind].add(seconds)
            result.all_latencies.add(seconds)
            done[0] += 1
            if status not in KINDS[kind].expected:
                result.unexpected_count += 1
                if len(result.unexpected) < 20:
                    result.unexpected.append((kind, status, detail[:300]))

    stop = threading.Event()

    def caller(index: int) -> None:
        rng = random.Random(base_seed + index)
        while not stop.is_set():
            if count is not None and next(tickets) >= count:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            kind = rng.choices(kinds, kind_weights)[0]
            t0 = time.perf_counter()
            try:
                res = invoke(functions[kind], {})
            except SandboxError as exc:
                record(kind, f"exception:{exc.code}", time.perf_counter() - t0, exc.message)
                continue
            except Exception as exc:  # a runtime bug: counted as unexpected, never hidden
                record(kind, f"exception:{type(exc).__name__}", time.perf_counter() - t0,
                       repr(exc))
                continue
            seconds = time.perf_counter() - t0
            report = res.report or {}
            record(kind, str(report.get("status", "unknown")), seconds,
                   res.raw_payload.decode(errors="replace"))

    sampler = _Sampler(sample_interval_s, lambda: done[0])
    sampler.take()
    sampler.start()
    threads = [threading.Thread(target=caller, args=(i,), name=f"sandbox-stress-{i}",
                                daemon=True) for i in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:  # Ctrl-C: callers finish their call, then the leak check
        result.interrupted = True
        stop.set()
        for thread in threads:
            thread.join()
    result.elapsed_s = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    sampler.take()
    result.samples = sampler.samples
    return result


@dataclass(frozen=True)
class Flatness:
    """Whether a series stayed flat: the peak of the later half of the samples
    (after warm-up) is within ``tolerance`` of the earlier half's peak."""

    name: str
    first_peak: float
    second_peak: float
    allowed: float
    flat: bool | None  # None: too few samples to judge


def flatness(name: str, values: list[float], relative: float, absolute: float,
             warmup_fraction: float = 0.2, min_samples: int = 4) -> Flatness:
    """Judges a series sampled over a run.

    The first ``warmup_fraction`` of samples (pools filling, caches warming)
    is dropped; the rest is split in two halves. Flat when the later half's
    peak is at most the earlier half's peak × (1 + relative) + absolute:
    growth that continues through the run (a leak) fails, a plateau passes.
    """
    body = values[int(len(values) * warmup_fraction):]
    if len(body) < min_samples:
        return Flatness(name, 0.0, 0.0, 0.0, None)
    half = len(body) // 2
    first, second = max(body[:half]), max(body[half:])
    allowed = first * (1 + relative) + absolute
    return Flatness(name, first, second, allowed, second <= allowed)
