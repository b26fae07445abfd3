"""``sandbox logs NAME [--follow]``: a function's log (START/output/END/REPORT)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .common import EXIT_OK, EXIT_REFUSED, add_state_dir, fail

FOLLOW_POLL_S = 0.2


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "logs", help="print a function's log",
        description="Prints STATE_DIR/logs/NAME.log (the state dir of `sandbox serve "
                    "--state-dir`, or of --local commands); --follow keeps printing new "
                    "invocations until interrupted.")
    parser.add_argument("name")
    parser.add_argument("--follow", "-f", action="store_true", help="wait for new lines")
    parser.add_argument("--tail", type=int, default=None, metavar="BYTES",
                        help="start this many bytes from the end")
    add_state_dir(parser)
    parser.set_defaults(run=logs)


def logs(args: argparse.Namespace) -> int:
    path = os.path.join(args.state_dir, "logs", f"{args.name}.log")
    try:
        file = open(path, "rb")  # noqa: SIM115 - held open while following
    except FileNotFoundError:
        return fail(f"ResourceNotFoundException: no log for {args.name} in "
                    f"{args.state_dir} ({path})", EXIT_REFUSED)
    out = sys.stdout.buffer
    with file:
        if args.tail is not None:
            size = os.fstat(file.fileno()).st_size
            file.seek(max(size - args.tail, 0))
        try:
            while True:
                chunk = file.read(64 * 1024)
                if chunk:
                    out.write(chunk)
                    continue
                out.flush()
                if not args.follow:
                    break
                time.sleep(FOLLOW_POLL_S)
        except KeyboardInterrupt:
            out.flush()
    return EXIT_OK
