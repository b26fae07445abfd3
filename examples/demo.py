"""make demo: registers the example functions, invokes them, prints their
REPORT lines and a cold / snapshot / warm latency table."""

from __future__ import annotations

import os
import statistics
import time

from sandbox import Runtime

HERE = os.path.dirname(os.path.abspath(__file__))
ROUNDS = {"cold": 10, "snapshot": 50, "warm": 500}


def timed_invoke(rt: Runtime, name: str, expect: str) -> float:
    started = time.perf_counter()
    result = rt.invoke(name, {})
    elapsed = time.perf_counter() - started
    if result.function_error or result.report is None or result.report["start"] != expect:
        raise SystemExit(f"{name}: expected a {expect} start, got {result.report}: "
                         f"{result.payload}")
    return elapsed * 1000.0


def latencies(rt: Runtime, name: str, kind: str) -> list[float]:
    samples = []
    rt.invoke(name, {})  # the zygote's INIT (snapshot) or the launcher's boot (cold)
    for _ in range(ROUNDS[kind]):
        if kind != "warm":
            rt.shutdown_idle(name, wait=True)
        samples.append(timed_invoke(rt, name, kind))
    return samples


def main() -> None:
    # CPU is not tied to memory here: at Lambda's 128 MB = 7 % of a vCPU, the
    # table would show the quota rather than the start kinds.
    with Runtime(cpu_follows_memory=False) as rt:
        rt.create_function("hello", handler="app.handler", code=os.path.join(HERE, "hello"),
                           environment={"GREETING": "hi"})
        print("== hello: three invokes (snapshot start, then warm) ==")
        for who in ("ada", "grace", "linus"):
            result = rt.invoke("hello", {"name": who})
            print(f"payload: {result.payload}")
            print(result.log_tail.rstrip().splitlines()[-1])
        print()
        table = []
        for example in ("noop", "heavy"):
            for kind in ("cold", "snapshot", "warm"):
                name = f"{example}-{kind}"
                rt.create_function(name, handler="app.handler",
                                   code=os.path.join(HERE, example),
                                   start="cold" if kind == "cold" else "snapshot")
                samples = latencies(rt, name, kind)
                table.append((example, kind, len(samples), min(samples),
                              statistics.median(samples),
                              statistics.quantiles(samples, n=10)[-1], max(samples)))
        print("== invoke latency, caller to result (ms) ==")
        print(f"{'handler':8} {'start':9} {'n':>4} {'min':>9} {'p50':>9} {'p90':>9} {'max':>9}")
        for example, kind, n, low, p50, p90, high in table:
            print(f"{example:8} {kind:9} {n:4d} {low:9.3f} {p50:9.3f} {p90:9.3f} {high:9.3f}")
        enforced = rt.capabilities()
        off = [step for step, item in enforced["isolation"].items() if not item["enforced"]]
        print(f"\nisolation on every start: cgroup v{enforced['cgroup']['version']}, "
              f"all steps but: {', '.join(off) or 'none'} (see: python -m sandbox doctor)")
        print(f"logs were written under {rt.state_dir}/logs (removed on exit)")


if __name__ == "__main__":
    main()
