"""Entry point of a cold-started environment: a fresh interpreter, exec'd by
the launcher zygote with its channel on fd 3 and its log on fds 1 and 2."""

from __future__ import annotations

import sys

from .. import _native
from ..protocol import Channel, FdStream
from .handler import initialize
from .invoke_loop import exit_environment, line_buffered_stdio, serve_invocations

CHANNEL_FD = 3


def main() -> None:
    # execve made this process dumpable again: where environments share a
    # uid, the others could read its memory through /proc until this.
    if "--undumpable" in sys.argv[1:]:
        _native.make_undumpable()
    del sys.argv[1:]
    init_and_serve()


def init_and_serve() -> None:
    """INIT in this process, then its invocations on its channel (fd 3)
    until it ends: a cold environment, or one forked from the zygote tree."""
    line_buffered_stdio()
    handler, init_error, init_ms = initialize()
    serve_invocations(Channel(FdStream(CHANNEL_FD)), handler, init_error, init_ms)
    exit_environment(0)


if __name__ == "__main__":
    main()
