"""The ``sandbox`` command: ``doctor``; ``serve``, ``invoke``, ``functions``, ``logs``,
``roles`` (sandbox/commands)."""

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    doctor_parser = commands.add_parser(
        "doctor", help="what this host enforces for every environment, and why not")
    doctor_parser.add_argument("--output", choices=("text", "json"), default="text")
    doctor_parser.set_defaults(run=doctor)
    # -- interfaces (sandbox/commands): serve, invoke, functions, logs, roles --
    from .commands import register as register_interfaces

    register_interfaces(commands)
    # -- end interfaces --
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
