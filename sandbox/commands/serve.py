"""``sandbox serve``: Lambda's REST API over a Runtime until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.parse
import warnings
from typing import Any

from .. import constants as C
from ..errors import SandboxError
from .common import EXIT_OK, EXIT_USAGE, fail


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="serve Lambda's API (boto3, the AWS CLI) on this host",
        description="Serves Lambda's REST API, so boto3.client('lambda', endpoint_url=...) "
                    "and `aws lambda --endpoint-url ...` work unmodified. Requests are "
                    "SigV4-verified: access key test / secret test is the account's root; "
                    "--credentials adds more. Metrics at /metrics. SIGTERM or SIGINT stops "
                    "accepting, finishes requests in flight and exits.")
    parser.add_argument("--host", default=C.DEFAULT_HTTP_HOST,
                        help=f"address to bind (default {C.DEFAULT_HTTP_HOST}: this host only)")
    parser.add_argument("--port", type=int, default=C.DEFAULT_HTTP_PORT,
                        help=f"port (default {C.DEFAULT_HTTP_PORT}; 0 picks a free one)")
    parser.add_argument("--state-dir", default=None,
                        help="keep functions, roles and logs here (default: a temporary "
                             "directory removed on exit)")
    parser.add_argument("--store", default=os.environ.get("SANDBOX_STORE", "sqlite"),
                        help="sqlite (the state dir's database, the default) or a Redis URL "
                             "(redis://host:port/db) that several servers share: each "
                             "async event, queue message and stream batch is worked on by "
                             "one of them (env SANDBOX_STORE)")
    parser.add_argument("--template", default=None,
                        help="a SAM template whose functions and roles are defined first")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="a template parameter value (repeatable)")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--no-auth", action="store_true",
                      help="accept unsigned requests, all as the account's root")
    auth.add_argument("--credentials", default=None, metavar="FILE",
                      help="an AWS credentials file: each profile's keys, and its "
                           "`principal` (default user/<profile>), are accepted besides test/test")
    parser.add_argument("--strict-roles", action="store_true",
                        help="refuse CreateFunction with a Role no role is defined for, as "
                             "Lambda does (default: create one without permissions, warn)")
    parser.add_argument("--concurrency-limit", type=int, default=1000,
                        help="concurrent executions across functions (default 1000)")
    parser.add_argument("--idle-timeout", type=float, default=300.0,
                        help="seconds before an idle environment shuts down (default 300)")
    parser.add_argument("--shutdown-timeout", type=float, default=C.TIMEOUT_S_MAX,
                        help="seconds SIGTERM waits for requests in flight (default "
                             f"{C.TIMEOUT_S_MAX:g}: the longest function timeout)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(run=serve)


def _without_password(url: str) -> str:
    """A store URL fit to print: any password in it replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _parameters(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--parameter must be KEY=VALUE, got {item!r}")
        values[key] = value
    return values


def serve(args: argparse.Namespace) -> int:
    """Runs the server in the foreground; exit 0 after a graceful shutdown."""
    from ..api import Runtime
    from ..http import (
        CredentialStore,
        LambdaServer,
        default_credentials,
        read_credentials_file,
        serve_forever,
    )
    from ..http.credentials import ensure_identities

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    warnings.simplefilter("always")
    try:
        parameters = _parameters(args.parameter)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    options: dict[str, Any] = {"state_dir": args.state_dir, "store": args.store,
                               "concurrency_limit": args.concurrency_limit,
                               "idle_timeout_s": args.idle_timeout}
    try:
        runtime = (Runtime.from_template(args.template, parameters, **options)
                   if args.template else Runtime(**options))
    except SandboxError as exc:
        return fail(f"{exc.code}: {exc.message}", EXIT_USAGE)
    try:
        credentials = None
        if not args.no_auth:
            pairs = default_credentials(runtime.account_id)
            if args.credentials:
                pairs.update(read_credentials_file(args.credentials, runtime.account_id))
            credentials = CredentialStore(pairs)
            for arn in ensure_identities(credentials, runtime):
                logging.getLogger("sandbox.http").info("created IAM user %s", arn)
        server = LambdaServer(runtime, args.host, args.port, credentials=credentials,
                              strict_roles=args.strict_roles, owns_runtime=True,
                              shutdown_timeout_s=args.shutdown_timeout)
    except BaseException as exc:
        runtime.close()
        if isinstance(exc, SandboxError):
            return fail(f"{exc.code}: {exc.message}", EXIT_USAGE)
        raise

    def ready(server: LambdaServer) -> None:
        # One line on stdout, for people and for scripts waiting for the port.
        shared = "" if args.store == "sqlite" else f", store {_without_password(args.store)}"
        print(f"sandbox: serving Lambda's API on {server.url} (state dir "
              f"{runtime.state_dir}{shared})", flush=True)

    try:
        serve_forever(server, ready)
    except OSError as exc:  # the address is taken or cannot be bound
        return fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", EXIT_USAGE)
    return EXIT_OK
