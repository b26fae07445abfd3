"""The ``sandbox`` command: ``doctor``, ``bench`` and ``stress``; ``serve``,
``invoke``, ``functions``, ``logs``, ``roles`` (sandbox/commands)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _doctor_lines(report: dict[str, Any]) -> list[str]:
    def mark(enforced: bool) -> str:
        return "yes" if enforced else "NO "

    cgroup = report["cgroup"]
    lines = [f"cgroups        {('v' + str(cgroup['version'])) if cgroup['version'] else 'none'}"
             f"  ({cgroup['reason']})"]
    for name, value in cgroup["parents"].items():
        lines.append(f"  {name or 'unified':13} {value}")
    for key in ("memory", "pids", "cpu_quota", "oom_detection", "timeout_kills_descendants"):
        item = report[key]
        why = item.get("reason") or ""
        lines.append(f"{mark(item['enforced'])} {key:26} {item.get('by') or ''} {why}".rstrip())
    for step, item in report["isolation"].items():
        lines.append(f"{mark(item['enforced'])} {step:26} {item['reason'] or ''}".rstrip())
    lines.append(f"    run as                     {report['run_as']}")
    lines.append(f"    rlimits                    {', '.join(report['rlimits'])}")
    return lines


def doctor(args: argparse.Namespace) -> int:
    """Prints what this host enforces; exits 1 if a limit is not enforced."""
    from .limits import HostLimits

    host = HostLimits()
    try:
        report = host.describe()
    finally:
        host.close()
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(_doctor_lines(report)))
    missing = [k for k in ("memory", "pids", "timeout_kills_descendants")
               if not report[k]["enforced"]]
    missing += [k for k, v in report["isolation"].items() if not v["enforced"]]
    return 1 if missing else 0


def bench(args: argparse.Namespace) -> int:
    """Measures start kinds against peers and floors; writes the report files."""
    from .bench.command import run
    from .bench.report import markdown

    document, paths = run(args.out, quick=args.quick, progress=not args.no_progress)
    print(markdown(document))
    print("wrote " + ", ".join(paths))
    return 0


def stress(args: argparse.Namespace) -> int:
    """Runs a mix of normal and misbehaving functions; exits 1 on a leak or an
    unexpected outcome, 2 on a bad mix."""
    from .errors import InvalidParameterValueException
    from .stress.command import run

    try:
        return run(duration_s=args.duration, concurrency=args.concurrency, mix=args.mix,
                   count=args.count, seed=args.seed, out=sys.stdout)
    except InvalidParameterValueException as exc:
        print(f"sandbox stress: {exc.message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    doctor_parser = commands.add_parser(
        "doctor", help="what this host enforces for every environment, and why not")
    doctor_parser.add_argument("--output", choices=("text", "json"), default="text")
    doctor_parser.set_defaults(run=doctor)
    bench_parser = commands.add_parser(
        "bench", help="cold, snapshot and warm starts against peers and the physical floor")
    bench_parser.add_argument("--quick", action="store_true",
                              help="fewer rounds and smaller sweeps (under 30 s on 2 cores)")
    bench_parser.add_argument("--out", default="bench-results",
                              help="directory for bench.json, bench.md and the PNG plots")
    bench_parser.add_argument("--no-progress", action="store_true",
                              help="no progress bar on stderr")
    bench_parser.set_defaults(run=bench)
    stress_parser = commands.add_parser(
        "stress", help="normal and misbehaving functions at once, then a leak check")
    stress_parser.add_argument("--duration", type=float, default=60.0,
                               help="seconds to run (ignored with --count)")
    stress_parser.add_argument("--concurrency", type=int, default=32)
    stress_parser.add_argument("--mix", default="noop:70,cpu:10,alloc:10,crash:5,timeout:5",
                               help="kind:weight,... of noop, cpu, alloc, crash, orphan, timeout")
    stress_parser.add_argument("--count", type=int, default=None,
                               help="soak mode: run this many invocations, sampling the "
                                    "dispatcher's RSS and fd count")
    stress_parser.add_argument("--seed", type=int, default=None,
                               help="seed of the kind picker (reproducible mixes)")
    stress_parser.set_defaults(run=stress)
    # -- interfaces (sandbox/commands): serve, invoke, functions, logs, roles --
    from .commands import register as register_interfaces

    register_interfaces(commands)
    # -- end interfaces --
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
