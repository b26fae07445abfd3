"""Request ids."""

from __future__ import annotations

import os


def new_request_id() -> str:
    """A random (version 4) UUID string; cheaper than str(uuid.uuid4())."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
