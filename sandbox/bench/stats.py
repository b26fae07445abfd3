"""Percentiles of latency samples, in milliseconds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of already sorted values, by linear interpolation
    between closest ranks (numpy's default "linear" method).

    Raises:
        ValueError: no values, or ``pct`` outside 0–100.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0-100, got {pct!r}")
    rank = (len(sorted_values) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


@dataclass(frozen=True)
class Summary:
    """Spread of one case's samples, in milliseconds."""

    samples: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    stdev: float

    @classmethod
    def of_seconds(cls, seconds: Sequence[float]) -> Summary:
        """Summary of samples given in seconds.

        Raises:
            ValueError: no samples.
        """
        ms = sorted(s * 1000.0 for s in seconds)
        if not ms:
            raise ValueError("no samples")
        return cls(samples=len(ms), min=ms[0], p50=percentile(ms, 50), p90=percentile(ms, 90),
                   p99=percentile(ms, 99), max=ms[-1], mean=statistics.fmean(ms),
                   stdev=statistics.stdev(ms) if len(ms) > 1 else 0.0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is unknown or the divisor is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator
