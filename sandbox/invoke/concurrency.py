"""Concurrent executions: the Runtime-wide limit and reserved concurrency.

As in Lambda: a function with reserved concurrency N runs at most N
invocations at once and those N are kept for it alone; every other function
shares what is left of the Runtime's limit (the unreserved pool). A
synchronous invoke that finds no slot is throttled (TooManyRequestsException);
asynchronous and polled work waits for one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .. import constants as C
from ..errors import InvalidParameterValueException, TooManyRequestsException
from ..store.base import SharedStore


def backoff_delay(retry_base_delay_s: float, failures: int) -> float:
    """How long throttled work waits after ``failures`` earlier throttles
    (0 for the first): Lambda's 1 s doubling up to 5 minutes at the default
    60 s base, scaled with the base."""
    first = retry_base_delay_s * C.THROTTLE_FIRST_DELAY_FRACTION
    return float(min(first * 2.0 ** failures, retry_base_delay_s * C.THROTTLE_MAX_DELAY_FRACTION))


def unreserved_minimum(limit: int) -> int:
    """How much of ``limit`` must stay unreserved (Lambda: 100 of 1,000)."""
    return min(C.UNRESERVED_CONCURRENCY_MIN, limit // 10)


class ConcurrencyLimiter:
    """Counts executions per function against reserved and unreserved pools."""

    def __init__(self, limit: int, reserved: dict[str, int] | None = None) -> None:
        self.limit = limit
        self._reserved: dict[str, int] = dict(reserved or {})
        self._running: dict[str, int] = {}
        self._unreserved_running = 0
        # Slots each function holds from the unreserved pool, so that a change
        # of reservation while they run releases them to the right pool.
        self._unreserved_held: dict[str, int] = {}
        self._changed = threading.Condition(threading.Lock())

    # -- settings --------------------------------------------------------------------
    def reserved(self, function: str) -> int | None:
        return self._reserved.get(function)

    def set_reserved(self, function: str, count: int | None) -> None:
        """Reserves ``count`` executions for ``function`` (None: removes the
        reservation).

        Raises:
            InvalidParameterValueException: ``count`` is negative, or would
                leave less than the unreserved minimum.
        """
        with self._changed:
            if count is not None:
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise InvalidParameterValueException(
                        f"reserved_concurrent_executions must be a non-negative integer, "
                        f"got {count!r}")
                others = sum(n for f, n in self._reserved.items() if f != function)
                floor = unreserved_minimum(self.limit)
                if self.limit - others - count < floor:
                    raise InvalidParameterValueException(
                        "Specified ReservedConcurrentExecutions for function decreases "
                        "account's UnreservedConcurrentExecution below its minimum value "
                        f"of [{floor}].")
                self._reserved[function] = count
            else:
                self._reserved.pop(function, None)
            self._changed.notify_all()

    @property
    def unreserved_capacity(self) -> int:
        return self.limit - sum(self._reserved.values())

    def capacity(self, function: str) -> int:
        """The most executions ``function`` could ever get at once."""
        reserved = self._reserved.get(function)
        return reserved if reserved is not None else self.unreserved_capacity

    # -- slots ---------------------------------------------------------------------------
    def try_acquire(self, function: str) -> str | None:
        """Takes a slot; returns None on success, else the throttle reason
        (Lambda's TooManyRequestsException reason)."""
        with self._changed:
            running = self._running.get(function, 0)
            reserved = self._reserved.get(function)
            if reserved is not None:
                if running >= reserved:
                    return C.REASON_RESERVED_LIMIT
            elif self._unreserved_running >= self.limit - sum(self._reserved.values()):
                return C.REASON_ACCOUNT_LIMIT
            else:
                self._unreserved_running += 1
                self._unreserved_held[function] = self._unreserved_held.get(function, 0) + 1
            self._running[function] = running + 1
            return None

    def acquire_or_throttle(self, function: str) -> None:
        """The synchronous path: a slot, or TooManyRequestsException."""
        reason = self.try_acquire(function)
        if reason is not None:
            raise TooManyRequestsException(C.THROTTLE_MESSAGE, reason)

    def acquire(self, function: str, stopped: Callable[[], bool], poll_s: float = 0.5) -> bool:
        """Waits for a slot (asynchronous and polled work); False if
        ``stopped()`` became true first."""
        while not stopped():
            if self.try_acquire(function) is None:
                return True
            with self._changed:
                self._changed.wait(poll_s)
        return False

    def release(self, function: str) -> None:
        with self._changed:
            _count_down(self._running, function)
            if _count_down(self._unreserved_held, function):
                self._unreserved_running -= 1
            self._changed.notify_all()

    def running(self, function: str) -> int:
        return self._running.get(function, 0)

    @property
    def total_running(self) -> int:
        """Executions in progress across every function."""
        with self._changed:
            return sum(self._running.values())

    def wake(self) -> None:
        """Wakes every waiter (used on close)."""
        with self._changed:
            self._changed.notify_all()


# The store's settings kind of reserved concurrency (api.py's CONCURRENCY_KIND,
# read by the store's slot script too).
RESERVED_SETTINGS_KIND = "concurrency"


class SharedConcurrencyLimiter(ConcurrencyLimiter):
    """The same limits counted across every Runtime of a shared store: a
    slot is a lease in the store (renewed while this Runtime lives, expiring
    when it dies), so the account limit and each reservation hold for all of
    them together, not for each. Reservations are read from the store (at
    every acquire, and before each check of them), so a change made through
    any Runtime applies to all."""

    def __init__(self, store: SharedStore, limit: int,
                 reserved: dict[str, int] | None = None) -> None:
        super().__init__(limit, reserved)
        self._store = store

    def _read_reservations(self) -> None:
        stored = self._store.list_function_settings(RESERVED_SETTINGS_KIND)
        reserved = {name: int(record["ReservedConcurrentExecutions"])
                    for name, record in stored.items()}
        with self._changed:
            self._reserved = reserved

    def reserved(self, function: str) -> int | None:
        self._read_reservations()
        return super().reserved(function)

    def set_reserved(self, function: str, count: int | None) -> None:
        self._read_reservations()
        super().set_reserved(function, count)

    def capacity(self, function: str) -> int:
        self._read_reservations()
        return super().capacity(function)

    def try_acquire(self, function: str) -> str | None:
        reason = self._store.acquire_slot(function, self.limit)
        if reason is not None:
            return C.REASON_RESERVED_LIMIT if reason == "reserved" else C.REASON_ACCOUNT_LIMIT
        with self._changed:
            self._running[function] = self._running.get(function, 0) + 1
        return None

    def release(self, function: str) -> None:
        self._store.release_slot(function)
        with self._changed:
            _count_down(self._running, function)
            self._changed.notify_all()


def _count_down(counts: dict[str, int], key: str) -> bool:
    """Takes one from ``counts[key]`` (the key goes at zero); whether there
    was one to take."""
    count = counts.get(key, 0)
    if count <= 0:
        counts.pop(key, None)
        return False
    if count == 1:
        del counts[key]
    else:
        counts[key] = count - 1
    return True
