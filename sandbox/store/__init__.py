"""Durable state behind one interface: the embedded SQLite store by default."""

from .base import Store
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store"]
