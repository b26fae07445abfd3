"""``sandbox functions list|get|create|delete``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import constants as C
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    Lambda,
    add_target,
    fail,
    lambda_api,
    print_json,
    print_table,
    progress,
    report_done,
    run_command,
    strip_metadata,
)

# The role CreateFunction names when --role is not given: a server that is not
# --strict-roles defines it, without permissions, on first use.
DEFAULT_ROLE = f"arn:aws:iam::{C.DEFAULT_ACCOUNT_ID}:role/sandbox-default"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("functions", help="list, show, create and delete functions",
                                 description="Manage functions on a server or, with --local, "
                                             "in a state directory.")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a table of the functions")
    add_target(listing)
    listing.set_defaults(run=list_functions)
    get = actions.add_parser("get", help="one function's configuration (and its reserved "
                                         "concurrency, when set)")
    get.add_argument("name")
    add_target(get)
    get.set_defaults(run=get_function)
    create = actions.add_parser(
        "create", help="register a function",
        description="Registers NAME with code from a directory (used in place) or a .zip "
                    "file (uploaded).")
    create.add_argument("name")
    create.add_argument("--handler", required=True, help="module.function, e.g. app.handler")
    create.add_argument("--code", required=True, help="a directory or a .zip file")
    create.add_argument("--memory", type=int, default=C.DEFAULT_MEMORY_MB, help="MB")
    create.add_argument("--timeout", type=int, default=int(C.DEFAULT_TIMEOUT_S), help="seconds")
    create.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable (repeatable)")
    create.add_argument("--description", default="")
    create.add_argument("--role", default=None,
                        help=f"execution role ARN (server default {DEFAULT_ROLE})")
    add_target(create)
    create.set_defaults(run=create_function)
    delete = actions.add_parser("delete", help="delete a function")
    delete.add_argument("name")
    add_target(delete)
    delete.set_defaults(run=delete_function)


def _rows(functions: list[dict[str, Any]]) -> list[list[Any]]:
    return [[f["FunctionName"], f.get("Handler"), f.get("MemorySize"), f.get("Timeout"),
             f.get("Runtime"), f.get("LastModified")] for f in functions]


_COLUMNS = ("name", "handler", "memory MB", "timeout s", "runtime", "last modified")


def list_functions(args: argparse.Namespace) -> int:
    def body() -> int:
        with lambda_api(args) as api:
            functions = _all_functions(api)
        if args.output == "json":
            print_json({"Functions": functions})
        else:
            print_table(None, _COLUMNS, _rows(functions))
        return EXIT_OK

    return run_command(body)


def _all_functions(api: Lambda) -> list[dict[str, Any]]:
    if api.local:
        return list(api.runtime.list_functions())
    functions: list[dict[str, Any]] = []
    for page in api.client.get_paginator("list_functions").paginate():
        functions.extend(page["Functions"])
    return functions


def get_function(args: argparse.Namespace) -> int:
    def body() -> int:
        with lambda_api(args) as api:
            if api.local:
                config = dict(api.runtime.get_function(args.name))
                concurrency = api.runtime.get_function_concurrency(args.name)
            else:
                reply = api.call("get_function", FunctionName=args.name)
                config, concurrency = dict(reply["Configuration"]), reply.get("Concurrency")
        if concurrency:  # as GetFunction's Concurrency: only when reserved
            config["ReservedConcurrentExecutions"] = concurrency["ReservedConcurrentExecutions"]
        if args.output == "json":
            print_json(strip_metadata(config))
        else:
            rows = [[key, value] for key, value in config.items() if key != "ResponseMetadata"]
            print_table(config["FunctionName"], ("property", "value"), rows)
        return EXIT_OK

    return run_command(body)


def create_function(args: argparse.Namespace) -> int:
    environment = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            return fail(f"--env must be KEY=VALUE, got {item!r}", EXIT_USAGE)
        environment[key] = value
    code_path = os.path.abspath(args.code)
    if not (os.path.isdir(code_path) or code_path.endswith(".zip")):
        return fail(f"--code must be a directory or a .zip file, got {args.code!r}", EXIT_USAGE)

    def body() -> int:
        with lambda_api(args) as api, progress(f"creating {args.name}"):
            if api.local:
                code = code_path
                if code_path.endswith(".zip"):
                    from ..http.deployment import unpack_zip

                    with open(code_path, "rb") as file:
                        code = unpack_zip(file.read(), os.path.join(
                            api.runtime.state_dir, "packages", args.name))
                config = api.runtime.create_function(
                    args.name, args.handler, code, args.memory, float(args.timeout),
                    environment, description=args.description, role=args.role)
            else:
                if code_path.endswith(".zip"):
                    with open(code_path, "rb") as file:
                        code_spec: dict[str, Any] = {"ZipFile": file.read()}
                else:
                    code_spec = {"S3Bucket": C.LOCAL_CODE_BUCKET, "S3Key": code_path}
                config = strip_metadata(api.call(
                    "create_function", FunctionName=args.name, Runtime=C.RUNTIME_NAME,
                    Role=args.role or DEFAULT_ROLE, Handler=args.handler, Code=code_spec,
                    MemorySize=args.memory, Timeout=args.timeout,
                    Environment={"Variables": environment}, Description=args.description))
        return report_done(args, config, f"created {config['FunctionArn']}")

    return run_command(body)


def delete_function(args: argparse.Namespace) -> int:
    def body() -> int:
        with lambda_api(args) as api:
            if api.local:
                api.runtime.delete_function(args.name)
            else:
                api.call("delete_function", FunctionName=args.name)
        return report_done(args, {"Deleted": args.name}, f"deleted {args.name}")

    return run_command(body)
