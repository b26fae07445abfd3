"""Interleaved rounds: every case takes its turn in every round, so drift of
the machine (other load, frequency, page cache) hits all cases alike.

The order within a round rotates by one case per round, so no case always
runs right after the same neighbour (a cold start's page-cache churn, a pool
worker's wake-up) or always first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from .cases import Case
from .stats import Summary

T = TypeVar("T")


def schedule(items: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """(round, item) pairs: each round has every item once, in an order rotated
    by one position per round.

    Raises:
        ValueError: ``rounds`` is below 1.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    count = len(items)
    for round_index in range(rounds):
        shift = round_index % count if count else 0
        for item in (*items[shift:], *items[:shift]):
            yield round_index, item


def run_cases(cases: Sequence[Case], rounds: int,
              advance: Callable[[Case, int], None] | None = None) -> dict[str, list[float]]:
    """Takes ``case.per_round`` samples of each case in each of ``rounds`` rounds.

    Args:
        advance: called after each turn with the case and its sample count
            (the progress bar).
    Returns:
        Samples in seconds, by case name.
    """
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    for _, case in schedule(cases, rounds):
        samples[case.name].extend(case.sample(case.per_round))
        if advance is not None:
            advance(case, case.per_round)
    return samples


def summarize(samples: dict[str, list[float]]) -> dict[str, Summary]:
    return {name: Summary.of_seconds(values) for name, values in samples.items() if values}
