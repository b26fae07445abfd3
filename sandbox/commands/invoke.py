"""``sandbox invoke NAME``: one invocation, against a server or in-process."""

from __future__ import annotations

import argparse
import base64
import json
import sys

from .common import (
    EXIT_FUNCTION_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    add_target,
    fail,
    lambda_api,
    print_json,
    progress,
    run_command,
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "invoke", help="invoke a function and print its result",
        description="Invokes NAME and prints its response payload (text output) or the "
                    "whole reply (json output). Exit 1 when the function failed.")
    parser.add_argument("name", help="function name or ARN")
    parser.add_argument("--payload", default="{}",
                        help="JSON event, or @FILE to read it from a file ('-' for stdin)")
    parser.add_argument("--invocation-type", default="RequestResponse",
                        choices=("RequestResponse", "Event", "DryRun"),
                        help="Event: queue it (202) and return; with --local the event "
                             "runs before the command ends. DryRun: check permission only")
    parser.add_argument("--log-type", default="None", choices=("None", "Tail"),
                        help="Tail: print the last 4 KB of the invocation's log to stderr")
    parser.add_argument("--client-context", default=None,
                        help="a JSON object passed as context.client_context")
    add_target(parser)
    parser.set_defaults(run=invoke)


def _payload(text: str) -> bytes:
    if text == "-" or text == "@-":
        return sys.stdin.buffer.read()
    if text.startswith("@"):
        with open(text[1:], "rb") as file:
            return file.read()
    return text.encode()


def invoke(args: argparse.Namespace) -> int:
    try:
        payload = _payload(args.payload)
        json.loads(payload or b"{}")
    except OSError as exc:
        return fail(f"cannot read payload: {exc}", EXIT_USAGE)
    except ValueError as exc:
        return fail(f"--payload is not JSON: {exc}", EXIT_USAGE)
    client_context = None
    if args.client_context:
        try:
            json.loads(args.client_context)
        except ValueError as exc:
            return fail(f"--client-context is not JSON: {exc}", EXIT_USAGE)
        client_context = base64.b64encode(args.client_context.encode()).decode()

    def body() -> int:
        with lambda_api(args) as api, progress(f"invoking {args.name}"):
            reply = api.invoke(args.name, payload, args.invocation_type,
                               args.log_type == "Tail", client_context)
        if args.output == "json":
            document = dict(reply)
            raw = document.pop("Payload")
            try:
                document["Payload"] = json.loads(raw) if raw else None
            except ValueError:
                document["Payload"] = raw.decode("utf-8", "replace")
            print_json(document)
        else:
            if reply["Log"]:
                sys.stderr.write(reply["Log"])
            if reply["Payload"]:
                sys.stdout.write(reply["Payload"].decode("utf-8", "replace") + "\n")
            else:
                print(f"StatusCode {reply['StatusCode']}")
        return EXIT_FUNCTION_ERROR if reply["FunctionError"] else EXIT_OK

    return run_command(body)
