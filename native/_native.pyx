# cython: language_level=3
"""sandbox._native: the fork-server loop and a child's set-up before Python.

One private extension built from small sources: child.pxi (what a child does
between fork and its first Python line), spawn.pxi (the parent side of a
fork), pidns.pxi (an environment's own pid namespace and its init),
serve.pxi (the zygote's poll loop), pages.pxi (pages a start writes,
written ahead by spare children), floor.pxi (bare-fork timing for
benchmarks). The declarations all live in syscalls.pxd.
"""

from posix.types cimport pid_t
from posix.resource cimport rusage
from syscalls cimport *

cdef extern from *:
    """
    #ifndef SANDBOX_DEBUG
    #define SANDBOX_DEBUG 0
    #endif
    """
    const int SANDBOX_DEBUG

DEBUG = bool(SANDBOX_DEBUG)
CHANNEL_FD = 3

include "child.pxi"
include "pidns.pxi"
include "spawn.pxi"
include "serve.pxi"
include "pages.pxi"
include "floor.pxi"
include "seccomp.pxi"
