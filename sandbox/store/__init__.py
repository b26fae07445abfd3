"""Durable state behind one interface: the embedded SQLite store by default,
Redis (``redis://`` URLs) for several Runtimes sharing the work."""

from __future__ import annotations

import os

from .base import SharedStore, Store
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "SharedStore", "Store", "open_store"]


def open_store(store: str, state_dir: str, fsync_commits: bool) -> Store:
    """The store a Runtime's ``store`` option names: "sqlite" (``sandbox.db``
    in the state dir) or a ``redis://host:port/db`` URL.

    Raises:
        InvalidParameterValueException: neither.
    """
    if store == "sqlite":
        return SQLiteStore(os.path.join(state_dir, "sandbox.db"),
                           synchronous="FULL" if fsync_commits else "NORMAL")
    from .redis import RedisStore  # redis-py is imported only when Redis is used

    return RedisStore(store)
