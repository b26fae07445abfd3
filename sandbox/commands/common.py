"""What the subcommands share: where to send requests (a running server, or
an in-process Runtime with ``--local``), output as tables or JSON, and the
exit codes of :mod:`sandbox.commands`."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .. import constants as C
from ..errors import SandboxError

EXIT_OK = 0
EXIT_FUNCTION_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4

DEFAULT_ENDPOINT = f"http://{C.DEFAULT_HTTP_HOST}:{C.DEFAULT_HTTP_PORT}"
DEFAULT_STATE_DIR = ".sandbox"
# With --local, an Event invoke waits for its first attempt: the function's
# timeout plus this much for the environment to start.
LOCAL_EVENT_GRACE_S = 10.0


def add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", choices=("text", "json"), default="text",
                        help="text: tables for people (default); json: for machines")


def add_target(parser: argparse.ArgumentParser) -> None:
    """--endpoint-url, or --local with --state-dir."""
    parser.add_argument("--endpoint-url", default=os.environ.get("SANDBOX_ENDPOINT_URL",
                                                                 DEFAULT_ENDPOINT),
                        help=f"a running `sandbox serve` (default {DEFAULT_ENDPOINT}, or "
                             "$SANDBOX_ENDPOINT_URL)")
    parser.add_argument("--local", action="store_true",
                        help="run in this process on --state-dir instead of asking a server")
    add_state_dir(parser)
    parser.add_argument("--profile", default=None,
                        help="AWS profile whose keys sign requests (default: the AWS_* "
                             "environment variables, else the server's test/test)")
    add_output(parser)


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", default=os.environ.get("SANDBOX_STATE_DIR",
                                                              DEFAULT_STATE_DIR),
                        help=f"the runtime's state directory (default ./{DEFAULT_STATE_DIR}, "
                             "or $SANDBOX_STATE_DIR)")


def fail(message: str, code: int) -> int:
    print(f"sandbox: {message}", file=sys.stderr)
    return code


class Lambda:
    """The operations the commands use, with Lambda's shapes, against a
    server (boto3) or an in-process Runtime."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.local = bool(getattr(args, "local", False))
        self._runtime: Any = None
        self._client: Any = None
        if self.local:
            from ..api import Runtime

            self._runtime = Runtime(state_dir=args.state_dir)
        else:
            import boto3
            from botocore.config import Config

            session = boto3.Session(profile_name=args.profile)
            credentials = session.get_credentials()
            keys = ({} if credentials is not None else
                    {"aws_access_key_id": C.DEFAULT_ACCESS_KEY,
                     "aws_secret_access_key": C.DEFAULT_SECRET_KEY})
            self._client = session.client(
                "lambda", endpoint_url=args.endpoint_url,
                region_name=session.region_name or C.DEFAULT_REGION,
                config=Config(retries={"total_max_attempts": 1}, read_timeout=960), **keys)

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()

    @property
    def runtime(self) -> Any:
        """The in-process Runtime (``--local``), else None."""
        return self._runtime

    @property
    def client(self) -> Any:
        """boto3's Lambda client for the server, else None (``--local``)."""
        return self._client

    def _deliver_locally(self, name: str) -> None:
        """An accepted Event runs before this process (and its Runtime) ends:
        its first attempt gets the function's timeout; retries due later stay
        stored in the state dir for the next Runtime on it."""
        timeout_s = float(self._runtime.get_function(name)["Timeout"]) + LOCAL_EVENT_GRACE_S
        if not self._runtime.drain(timeout_s):
            print("sandbox: the event is stored in the state dir; a Runtime on it (sandbox "
                  "serve --state-dir ...) delivers its retries", file=sys.stderr)

    def call(self, operation: str, **params: Any) -> Any:
        """A Lambda operation by its boto3 name (``list_functions``, ...)."""
        return getattr(self._client, operation)(**params)

    def invoke(self, name: str, payload: bytes, invocation_type: str, tail: bool,
               client_context: str | None) -> dict[str, Any]:
        """Invoke; returns StatusCode, Payload (bytes), FunctionError, Log (text)."""
        if self.local:
            context = json.loads(base64.b64decode(client_context)) if client_context else None
            result = self._runtime.invoke(name, payload, invocation_type,
                                          client_context=context)
            if invocation_type == "Event":
                self._deliver_locally(name)
            return {"StatusCode": result.status_code, "Payload": result.raw_payload,
                    "FunctionError": result.function_error,
                    "Log": result.log_tail if tail else None,
                    "ExecutedVersion": result.executed_version}
        params: dict[str, Any] = {"FunctionName": name, "Payload": payload,
                                  "InvocationType": invocation_type,
                                  "LogType": "Tail" if tail else "None"}
        if client_context:
            params["ClientContext"] = client_context
        reply = self._client.invoke(**params)
        log = reply.get("LogResult")
        return {"StatusCode": reply["StatusCode"], "Payload": reply["Payload"].read(),
                "FunctionError": reply.get("FunctionError"),
                "Log": base64.b64decode(log).decode("utf-8", "replace") if log else None,
                "ExecutedVersion": reply.get("ExecutedVersion")}


@contextmanager
def lambda_api(args: argparse.Namespace) -> Iterator[Lambda]:
    api = Lambda(args)
    try:
        yield api
    finally:
        api.close()


def run_command(body: Callable[[], int]) -> int:
    """Runs a command body, turning refusals and connection failures into
    their exit codes with a one-line message."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    try:
        return body()
    except SandboxError as exc:
        return fail(f"{exc.code}: {exc.message}", EXIT_REFUSED)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return fail(f"{error.get('Code')}: {error.get('Message')}", EXIT_REFUSED)
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except EndpointConnectionError as exc:
        return fail(f"no server answered at {exc.kwargs.get('endpoint_url')} (start one with "
                    "`sandbox serve`, or use --local)", EXIT_UNREACHABLE)


@contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner on a terminal's stderr while long work runs; nothing when
    stderr is not a terminal (scripts, pipes)."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def report_done(args: Any, document: Any, text: str) -> int:
    """Prints what a command did: ``document`` with ``--output json``, else
    ``text``; returns EXIT_OK."""
    if args.output == "json":
        print_json(document)
    else:
        print(text)
    return EXIT_OK


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(table)


def strip_metadata(reply: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in reply.items() if key != "ResponseMetadata"}
