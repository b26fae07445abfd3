"""``sandbox roles create|delete``: execution roles in a state directory."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..http.operations import LAMBDA_TRUST_POLICY
from .common import EXIT_USAGE, add_output, add_state_dir, fail, report_done, run_command


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "roles", help="define execution roles",
        description="Defines execution roles in a state directory (a server started on it "
                    "sees them on its next request).")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a role Lambda may assume")
    create.add_argument("name")
    create.add_argument("--policy", action="append", default=[], metavar="FILE",
                        help="an identity policy document (JSON file; repeatable)")
    create.add_argument("--trust-policy", default=None, metavar="FILE",
                        help="trust policy (default: lambda.amazonaws.com may assume it)")
    add_state_dir(create)
    add_output(create)
    create.set_defaults(run=create_role)
    delete = actions.add_parser("delete", help="delete a role")
    delete.add_argument("arn")
    add_state_dir(delete)
    add_output(delete)
    delete.set_defaults(run=delete_role)


def _document(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def create_role(args: argparse.Namespace) -> int:
    try:
        policies = [_document(path) for path in args.policy]
        trust = _document(args.trust_policy) if args.trust_policy else LAMBDA_TRUST_POLICY
    except (OSError, ValueError) as exc:
        return fail(f"cannot read policy: {exc}", EXIT_USAGE)

    def body() -> int:
        from ..api import Runtime

        with Runtime(state_dir=args.state_dir) as runtime:
            arn = runtime.create_role(args.name, trust, policies)
        return report_done(args, {"Arn": arn}, f"created {arn}")

    return run_command(body)


def delete_role(args: argparse.Namespace) -> int:
    def body() -> int:
        from ..api import Runtime

        with Runtime(state_dir=args.state_dir) as runtime:
            runtime.delete_role(args.arn)
        return report_done(args, {"Deleted": args.arn}, f"deleted {args.arn}")

    return run_command(body)
