"""Peers of ``sandbox bench`` for regression tracking: the same cases, built by
sandbox.bench.cases, timed by pytest-benchmark.

peer-forkserver   multiprocessing forkserver with the handler preloaded: a new
                  process per invocation, its result sent back over a pipe.
peer-pool         a warm ProcessPoolExecutor worker: submit + result.
peer-bwrap        bubblewrap running a fresh python that imports and calls the
                  handler; skipped where bwrap is not installed or cannot run.

Compare with snapshot-* (forkserver, bwrap), warm-* (pool) and cold-*
(bwrap) of test_core.py in the ratio table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.bench.cases import CaseSet, case_name

ROUNDS = {"peer-forkserver": 100, "peer-pool": 2000, "peer-bwrap": 15}


@pytest.fixture(scope="module")
def peers() -> Iterator[CaseSet]:
    with CaseSet() as case_set:
        case_set.build(families={"peer"})
        yield case_set


def _bench_peer(benchmark: Any, peers: CaseSet, peer: str, handler: str) -> None:
    name = case_name(peer, handler)
    skipped = {s.name: s.reason for s in peers.skipped}
    if name in skipped:
        pytest.skip(skipped[name])
    benchmark.pedantic(peers.get(name).sample, args=(1,), rounds=ROUNDS[peer],
                       warmup_rounds=2)


@pytest.mark.benchmark(group="peer-forkserver")
@pytest.mark.parametrize("handler", ["noop", "heavy"])
def test_peer_forkserver(benchmark: Any, peers: CaseSet, handler: str) -> None:
    _bench_peer(benchmark, peers, "peer-forkserver", handler)


@pytest.mark.benchmark(group="peer-pool")
@pytest.mark.parametrize("handler", ["noop", "heavy"])
def test_peer_pool(benchmark: Any, peers: CaseSet, handler: str) -> None:
    _bench_peer(benchmark, peers, "peer-pool", handler)


@pytest.mark.benchmark(group="peer-bwrap")
@pytest.mark.parametrize("handler", ["noop", "heavy"])
def test_peer_bwrap(benchmark: Any, peers: CaseSet, handler: str) -> None:
    _bench_peer(benchmark, peers, "peer-bwrap", handler)
