"""What ``sandbox bench`` writes: bench.json, a pytest-benchmark JSON, Markdown, PNGs.

Files in the output directory:

* ``bench.json``: one entry per case (``warm``, ``snapshot``, ``cold``,
  ``peer-…``, ``floor-…``; ``-heavy`` for the heavy handler;
  ``tree-first-…`` and ``cold-first-…`` for the zygote tree's handlers) with
  its percentiles in milliseconds, the ratios, the targets, the sweeps and
  the zygote tree's memory (``tree_memory``).
* ``pytest-benchmark.json``: the cases in pytest-benchmark's JSON layout
  (seconds), so ``pytest-benchmark compare`` can read it.
* ``bench.md``: the tables.
* ``latency_cdf.png`` (latency CDF per start kind, log axis),
  ``p50_bars.png`` (p50 bars with p99 whiskers, against peers and floors) and
  ``sweeps.png`` (throughput by concurrency, latency by payload size).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from .cases import Case, Skipped
from .stats import Summary, percentile, ratio
from .tree import TREE_HANDLER_NAMES, cold_case_name, tree_case_name

FAMILY_ORDER = {"sandbox": 0, "peer": 1, "floor": 2}


@dataclass(frozen=True)
class Target:
    """A ratio target of issue 7: ``numerator p50 op limit × denominator p50``
    (issue 8's targets: :func:`tree_target_rows`)."""

    label: str
    numerator: str
    denominator: str
    op: str  # "<=" or ">="
    limit: float


TARGETS = (
    Target("warm p50 <= 2x floor-roundtrip p50", "warm", "floor-roundtrip", "<=", 2.0),
    Target("warm-heavy p50 <= 2x floor-roundtrip p50", "warm-heavy", "floor-roundtrip",
           "<=", 2.0),
    Target("snapshot p50 <= 2x floor-os-fork p50", "snapshot", "floor-os-fork", "<=", 2.0),
    Target("snapshot-heavy p50 <= 2x floor-os-fork p50", "snapshot-heavy", "floor-os-fork",
           "<=", 2.0),
    Target("peer-bwrap p50 >= 30x snapshot p50", "peer-bwrap", "snapshot", ">=", 30.0),
    Target("peer-bwrap-heavy p50 >= 30x snapshot-heavy p50", "peer-bwrap-heavy",
           "snapshot-heavy", ">=", 30.0),
)
IDLE_USS_LIMIT = 0.15  # idle environment USS <= 15 % of a cold interpreter's RSS
# Issue 8: a new function's first start where the tree holds its imports.
TREE_FIRST_START_MS = 5.0  # p50 at most
TREE_OVER_COLD = 10.0  # cold first start p50 over tree first start p50, at least


def machine_info() -> dict[str, Any]:
    """Where the run happened, for labelling its figures."""
    load = os.getloadavg()
    return {
        "node": platform.node(), "processor": platform.processor() or platform.machine(),
        "machine": platform.machine(), "system": platform.system(),
        "release": platform.release(), "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu": {"count": os.cpu_count(), "model": _cpu_model()},
        "memory_mb": psutil.virtual_memory().total // 2**20,
        "loadavg_at_end": [round(x, 2) for x in load],
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _commit() -> dict[str, Any]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {"id": None, "dirty": None}
    return {"id": out.stdout.strip() or None, "dirty": bool(dirty.stdout.strip())}


# -- the figures ---------------------------------------------------------------------


def ratio_rows(cases: Sequence[Case], summaries: dict[str, Summary]) -> list[dict[str, Any]]:
    """p50 of each of this runtime's cases over each floor and each peer of the
    same handler (above 1: slower than that reference)."""
    floors = [c for c in cases if c.family == "floor" and c.name in summaries]
    rows = []
    for case in cases:
        if case.family != "sandbox" or case.name not in summaries:
            continue
        p50 = summaries[case.name].p50
        peers = [c for c in cases if c.family == "peer" and c.handler == case.handler
                 and c.name in summaries]
        rows.append({"case": case.name, "p50_ms": p50,
                     "over": {ref.name: ratio(p50, summaries[ref.name].p50)
                              for ref in (*floors, *peers)}})
    return rows


def target_rows(summaries: dict[str, Summary], memory: dict[str, Any] | None
                ) -> list[dict[str, Any]]:
    """Each target with the measured value (``unit``: ``x`` for a ratio, ``ms``,
    ``%`` for a fraction), PASS/MISS/n/a and by how much it missed."""
    rows = []
    for target in TARGETS:
        num = summaries.get(target.numerator)
        den = summaries.get(target.denominator)
        value = ratio(num.p50 if num else None, den.p50 if den else None)
        rows.append(_verdict(target.label, value, target.op, target.limit))
    rows += tree_target_rows(summaries)
    if memory:
        for handler in ("noop", "heavy"):
            figures = memory.get(handler)
            if figures:
                rows.append(_verdict(
                    f"idle {handler} environment USS <= 15% of a cold interpreter's RSS",
                    figures["uss_over_cold_rss"], "<=", IDLE_USS_LIMIT, "%"))
    return rows


def tree_target_rows(summaries: dict[str, Summary]) -> list[dict[str, Any]]:
    """Issue 8's targets for each tree handler: the first start of a new
    function via the warm tree within 5 ms at p50, and at least 10x faster
    than a cold first start (p50 over p50)."""
    rows = []
    for handler in TREE_HANDLER_NAMES:
        tree = summaries.get(tree_case_name(handler))
        cold = summaries.get(cold_case_name(handler))
        rows.append(_verdict(f"{tree_case_name(handler)} p50 <= {TREE_FIRST_START_MS:g} ms",
                             tree.p50 if tree else None, "<=", TREE_FIRST_START_MS, "ms"))
        rows.append(_verdict(
            f"{tree_case_name(handler)} >= {TREE_OVER_COLD:g}x faster than "
            f"{cold_case_name(handler)} (p50)",
            ratio(cold.p50 if cold else None, tree.p50 if tree else None), ">=",
            TREE_OVER_COLD))
    return rows


def _verdict(label: str, value: float | None, op: str, limit: float,
             unit: str = "x") -> dict[str, Any]:
    if value is None:
        return {"target": label, "value": None, "limit": limit, "op": op, "unit": unit,
                "verdict": "n/a", "missed_by": None}
    passed = value <= limit if op == "<=" else value >= limit
    # How far off, as a factor: over the ceiling (<=), or short of the floor (>=).
    missed_by = None if passed else (value / limit if op == "<=" else limit / value)
    return {"target": label, "value": value, "limit": limit, "op": op, "unit": unit,
            "verdict": "PASS" if passed else "MISS", "missed_by": missed_by}


# -- writers -------------------------------------------------------------------------


def bench_document(cases: Sequence[Case], summaries: dict[str, Summary],
                   skipped: Sequence[Skipped], sweeps: dict[str, Any] | None,
                   meta: dict[str, Any], tree_memory: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The content of bench.json (``tree_memory``: see
    :func:`sandbox.bench.tree_memory.tree_memory`)."""
    entries = []
    for case in sorted(cases, key=lambda c: FAMILY_ORDER[c.family]):
        summary = summaries.get(case.name)
        if summary is None:
            continue
        entries.append({"name": case.name, "family": case.family, "handler": case.handler,
                        "start": case.start, "description": case.description, "unit": "ms",
                        **summary.as_dict()})
    return {
        **meta,
        "machine": machine_info(),
        "commit": _commit(),
        "cases": entries,
        "skipped": [{"name": s.name, "reason": s.reason} for s in skipped],
        "ratios": ratio_rows(cases, summaries),
        "targets": target_rows(summaries, (sweeps or {}).get("memory")),
        "sweeps": sweeps,
        "tree_memory": tree_memory,
    }


def pytest_benchmark_document(document: dict[str, Any],
                              samples: dict[str, list[float]]) -> dict[str, Any]:
    """bench.json's cases in pytest-benchmark's JSON layout (times in seconds)."""
    benchmarks = []
    for entry in document["cases"]:
        data = sorted(samples[entry["name"]])
        summary = Summary.of_seconds(data)
        q1, q3 = (_quartile(data, 0.25), _quartile(data, 0.75))
        iqr = q3 - q1
        mean = summary.mean / 1000.0
        benchmarks.append({
            "group": entry["family"], "name": entry["name"],
            "fullname": f"sandbox bench::{entry['name']}", "params": None, "param": None,
            "extra_info": {"description": entry["description"], "handler": entry["handler"]},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 1,
                        "max_time": 0, "min_time": 0, "warmup": False},
            "stats": {
                "min": data[0], "max": data[-1], "mean": mean,
                "stddev": summary.stdev / 1000.0, "rounds": len(data),
                "median": summary.p50 / 1000.0, "iqr": iqr, "q1": q1, "q3": q3,
                "iqr_outliers": sum(1 for x in data if x < q1 - 1.5 * iqr
                                    or x > q3 + 1.5 * iqr),
                "stddev_outliers": sum(1 for x in data
                                       if abs(x - mean) > summary.stdev / 1000.0),
                "outliers": "", "ld15iqr": next(x for x in data if x >= q1 - 1.5 * iqr),
                "hd15iqr": next(x for x in reversed(data) if x <= q3 + 1.5 * iqr),
                "ops": 1.0 / mean if mean else 0.0, "total": sum(data), "iterations": 1,
            },
        })
    return {"machine_info": document["machine"], "commit_info": document["commit"],
            "benchmarks": benchmarks, "datetime": document["finished"],
            "version": "4.0.0"}


def _quartile(sorted_seconds: list[float], q: float) -> float:
    return percentile(sorted_seconds, q * 100.0)


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def markdown(document: dict[str, Any]) -> str:
    """The tables of bench.md."""
    machine = document["machine"]
    lines = [
        f"# sandbox bench ({'quick' if document['quick'] else 'full'} run)",
        "",
        f"Machine: {machine['cpu']['count']} CPU ({machine['cpu']['model']}), "
        f"{machine['memory_mb']} MiB, {machine['system']} {machine['release']}, "
        f"Python {machine['python_version']}; load average at the end "
        f"{', '.join(map(str, machine['loadavg_at_end']))}. {document['finished']}, "
        f"{document['rounds']} interleaved rounds, {document['duration_s']:.1f} s.",
        "",
        "| case | samples | min ms | p50 ms | p90 ms | p99 ms | max ms | what one sample is |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in document["cases"]:
        lines.append(f"| `{e['name']}` | {e['samples']} | {_ms(e['min'])} | {_ms(e['p50'])} | "
                     f"{_ms(e['p90'])} | {_ms(e['p99'])} | {_ms(e['max'])} | "
                     f"{e['description']} |")
    for s in document["skipped"]:
        lines.append(f"| `{s['name']}` | – | | | | | | skipped: {s['reason']} |")
    ratios = document["ratios"]
    if ratios:
        refs = list(dict.fromkeys(ref.replace("-heavy", "") for r in ratios for ref in r["over"]))
        lines += ["", "p50 of each case over the p50 of each floor and of each peer running "
                  "the same handler (above 1×: slower):", "",
                  "| case | " + " | ".join(refs) + " |",
                  "|---|" + "---:|" * len(refs)]
        for r in ratios:
            by_base = {ref.replace("-heavy", ""): v for ref, v in r["over"].items()}
            lines.append(f"| `{r['case']}` | " + " | ".join(_x(by_base.get(ref))
                                                             for ref in refs) + " |")
    lines += ["", "| target | measured | verdict |", "|---|---:|---|"]
    for t in document["targets"]:
        miss = ""
        if t["missed_by"] is not None:
            miss = (f" ({t['missed_by']:.2f}× over the limit)" if t["op"] == "<="
                    else f" ({t['missed_by']:.2f}× short)")
        lines.append(f"| {t['target']} | {_target_value(t)} | {t['verdict']}{miss} |")
    lines += _tree_memory_markdown(document.get("tree_memory"))
    lines += _sweep_markdown(document.get("sweeps"))
    return "\n".join(lines) + "\n"


def _target_value(row: dict[str, Any]) -> str:
    value = row["value"]
    if value is None:
        return "–"
    unit = row.get("unit", "x")
    if unit == "%":
        return f"{value * 100:.1f} %"
    if unit == "ms":
        return f"{_ms(value)} ms"
    return _x(value)


def _tree_memory_markdown(memory: dict[str, Any] | None) -> list[str]:
    if not memory:
        return []
    if "error" in memory:
        return ["", f"Zygote tree memory: not measured: {memory['error']}"]
    lines = ["", "Zygote tree memory (MiB; psutil `memory_full_info`: USS is what only this "
             "process maps, PSS shares each page among the processes mapping it, so PSS "
             "adds up to what the tree really uses):", "",
             "| process | pid | parent | holds | RSS | USS | PSS |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for p in memory["processes"]:
        lines.append(f"| {p['role']} | {p['pid']} | {p['parent']} | {p['holds']} | "
                     f"{p['rss_mb']:.1f} | {p['uss_mb']:.2f} | {p['pss_mb']:.2f} |")
    lines += ["", "| role | processes | sum RSS | sum USS | sum PSS |",
              "|---|---:|---:|---:|---:|"]
    for role, r in (*memory["by_role"].items(), ("all", memory["totals"])):
        lines.append(f"| {role} | {r['count']} | {r['rss_mb']:.1f} | {r['uss_mb']:.1f} | "
                     f"{r['pss_mb']:.1f} |")
    totals = memory["totals"]
    lines += ["", f"Unshared (sum of USS over sum of RSS): {totals['uss_over_rss'] * 100:.1f} %. "
              f"The whole tree uses {totals['pss_mb']:.1f} MiB (sum of PSS); as many fresh "
              f"interpreters as it has environments would use "
              f"{memory['cold_equivalent_pss_mb']:.1f} MiB (their PSS).", "",
              "| handler | idle envs | env RSS | env USS | env PSS | fresh interpreter RSS "
              "| USS | PSS | env PSS / interpreter PSS |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, h in memory["handlers"].items():
        cold = h["cold_interpreter"]
        lines.append(f"| {name} | {h['idle_envs']} | {h['env_rss_mb']:.1f} | "
                     f"{h['env_uss_mb']:.2f} | {h['env_pss_mb']:.2f} | {cold['rss_mb']:.1f} | "
                     f"{cold['uss_mb']:.2f} | {cold['pss_mb']:.2f} | "
                     f"{h['env_pss_over_cold_pss'] * 100:.1f} % |")
    return lines


def _sweep_markdown(sweeps: dict[str, Any] | None) -> list[str]:
    if not sweeps:
        return []
    lines = ["", "Concurrency (one no-op function, warm):", "",
             "| concurrency | invocations | per second | p50 ms | p99 ms |",
             "|---:|---:|---:|---:|---:|"]
    for r in sweeps["concurrency"]:
        lines.append(f"| {r['concurrency']} | {r['invocations']} | "
                     f"{r['throughput_per_s']:.0f} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} |")
    lines += ["", "Registered functions (warm latency of one of them):", "",
              "| functions | p50 ms | p99 ms | create_function ms each |",
              "|---:|---:|---:|---:|"]
    for r in sweeps["functions"]:
        lines.append(f"| {r['functions']} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
                     f"{_ms(r['create_ms_each'])} |")
    lines += ["", "Payload size (warm):", "", "| bytes | p50 ms | p99 ms | MiB/s at p50 |",
              "|---:|---:|---:|---:|"]
    for r in sweeps["payload"]:
        rate = "–" if r["mib_per_s"] is None else f"{r['mib_per_s']:.0f}"
        lines.append(f"| {r['bytes']} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {rate} |")
    memory = sweeps["memory"]
    lines += ["", f"Idle environments (mean per environment) against a fresh interpreter "
              f"that imported the same handler; how many fit in {memory['budget_mb']} MiB is "
              "estimated as (budget − zygote RSS) / USS, and budget / RSS for interpreters:",
              "",
              "| handler | idle envs | USS MiB | PSS MiB | RSS MiB | cold interpreter RSS MiB "
              "| USS / cold RSS | envs fit | cold interpreters fit |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for handler in ("noop", "heavy"):
        m = memory[handler]
        lines.append(f"| {handler} | {m['idle_envs']} | {m['env_uss_mb']:.2f} | "
                     f"{m['env_pss_mb']:.2f} | {m['env_rss_mb']:.1f} | "
                     f"{m['cold_interpreter']['rss_mb']:.1f} | "
                     f"{m['uss_over_cold_rss'] * 100:.1f} % | {m['envs_fit_budget']} | "
                     f"{m['cold_interpreters_fit_budget']} |")
    return lines


# -- plots ---------------------------------------------------------------------------


def plot(document: dict[str, Any], samples: dict[str, list[float]], out_dir: str) -> list[str]:
    """Writes the PNGs; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    machine = document["machine"]
    label = (f"{machine['cpu']['count']} CPU, {machine['node']}, "
             f"{document['finished'][:16]} UTC")
    paths = []

    fig, ax = plt.subplots(figsize=(8, 5))
    for entry in document["cases"]:
        if entry["family"] != "sandbox" and entry["name"] not in (
                "peer-bwrap", "peer-python", "peer-forkserver"):
            continue
        ms = sorted(s * 1000.0 for s in samples[entry["name"]])
        ys = [(i + 1) / len(ms) for i in range(len(ms))]
        style = "--" if entry["handler"] == "heavy" else "-"
        if entry["family"] == "peer":
            style = ":"
        ax.step(ms, ys, style, where="post", label=entry["name"])
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log)")
    ax.set_ylabel("fraction of invocations")
    ax.set_title(f"sandbox bench: latency CDF per start kind ({label})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir, "latency_cdf.png"))
    plt.close(fig)

    entries = document["cases"]
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = {"sandbox": "tab:blue", "peer": "tab:orange", "floor": "tab:gray"}
    xs = range(len(entries))
    p50 = [e["p50"] for e in entries]
    whisker = [[0.0] * len(entries), [e["p99"] - e["p50"] for e in entries]]
    ax.bar(xs, p50, color=[colors[e["family"]] for e in entries], yerr=whisker, capsize=3)
    ax.set_xticks(list(xs), [e["name"] for e in entries], rotation=60, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("p50 ms (whisker: p99, log)")
    ax.set_title(f"sandbox (blue) vs peers (orange) vs floors (grey) ({label})", fontsize=9)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    paths.append(_save(fig, out_dir, "p50_bars.png"))
    plt.close(fig)

    sweeps = document.get("sweeps")
    if sweeps:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        conc = sweeps["concurrency"]
        left.plot([r["concurrency"] for r in conc], [r["throughput_per_s"] for r in conc], "o-")
        left.set_xscale("log", base=2)
        left.set_xlabel("concurrent callers")
        left.set_ylabel("invocations / s")
        twin = left.twinx()
        twin.plot([r["concurrency"] for r in conc], [r["p99_ms"] for r in conc], "s--",
                  color="tab:red")
        twin.set_ylabel("p99 ms", color="tab:red")
        pay = sweeps["payload"]
        right.plot([max(r["bytes"], 1) for r in pay], [r["p50_ms"] for r in pay], "o-")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("event bytes (0 shown at 1)")
        right.set_ylabel("warm p50 ms")
        fig.suptitle(f"sweeps ({label})", fontsize=9)
        fig.tight_layout()
        paths.append(_save(fig, out_dir, "sweeps.png"))
        plt.close(fig)
    return paths


def _save(fig: Any, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=100)
    return path


def write_all(document: dict[str, Any], samples: dict[str, list[float]],
              out_dir: str) -> list[str]:
    """Writes every file into ``out_dir`` (created); returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, content in (
            ("bench.json", document),
            ("pytest-benchmark.json", pytest_benchmark_document(document, samples))):
        path = os.path.join(out_dir, name)
        with open(path, "w") as file:
            json.dump(content, file, indent=2)
            file.write("\n")
        paths.append(path)
    path = os.path.join(out_dir, "bench.md")
    with open(path, "w") as file:
        file.write(markdown(document))
    paths.append(path)
    paths += plot(document, samples, out_dir)
    return paths


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

