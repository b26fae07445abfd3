"""Request ids."""

from __future__ import annotations

import random


def new_request_id() -> str:
    """A random (version 4) UUID string.

    From the ``random`` generator (seeded from the OS at start): request ids
    need uniqueness, not secrecy, and ``os.urandom`` is a system call per id,
    which on the asynchronous accept path hands the GIL to delivery threads.
    """
    h = f"{random.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
