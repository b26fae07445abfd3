"""Asynchronous invocation (Event): a durable queue, delivery threads, retries,
maximum event age, destinations and a dead-letter queue per function.

An event is acknowledged (202) only once its row is committed. A delivery
retires the row only in the transaction that also writes its destination
record or dead-letter message, so a crash at any moment leaves the event
either pending (delivered again after restart: at least once) or retired
with its records written. On restart every stored event is scheduled again.

With a shared store (Redis) several Runtimes deliver: this one does not
schedule what it accepts but claims due events from the store (its own and
the others', and those a dead Runtime left), a few at a time so that the
work spreads; a retry goes back to the store, to be claimed again when due.

Function errors are retried ``MaximumRetryAttempts`` times, ``base`` and
then ``2 x base`` seconds apart (Lambda: 1 and 2 minutes). An event that
finds no concurrency goes back to the queue with exponential backoff
(Lambda: 1 s doubling to 5 min); it never counts as an attempt.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from .. import constants as C
from ..environments import FunctionPool
from ..errors import InvalidParameterValueException, ResourceNotFoundException, SandboxError
from ..logs import FunctionLog
from ..services.arns import Arns
from ..store.base import AsyncEvent, NewEvent, Outbox, SharedStore, Store
from . import sync
from .concurrency import ConcurrencyLimiter, backoff_delay
from .destinations import Destinations, check_destination, invocation_record
from .platform import PlatformHandler

log = logging.getLogger("sandbox.invoke")

# Delivery threads per Runtime; each runs one invocation at a time. More
# events than threads wait in the queue (as Lambda's pollers read its
# internal queue at their own pace).
DELIVERY_THREADS_MAX = 32
# While invocations return within FAST_INVOKE_S on average, a delivery
# spends its time in this process (under the GIL), not waiting for the
# function: more than FAST_DELIVERIES at once would only take the GIL from
# the callers whose events are being accepted. Slower functions get up to
# DELIVERY_THREADS_MAX deliveries at once. Until invocations are measured
# they count as fast (a first invocation, which starts an environment, is
# slow enough to lift the limit at once if its successors are too).
FAST_INVOKE_S = 0.002
FAST_DELIVERIES = 2
INVOKE_TIME_WEIGHT = 0.1
# The first bytes of a function's error message that a dead-letter message carries.
DLQ_ERROR_MESSAGE_MAX = 1024
# Events accepted by this Runtime are kept in memory until delivered, so a
# delivery need not read its row back; beyond this many they are read back.
FRESH_EVENTS_MAX = 10_000

# Shared stores: events claimed but not yet started, at most (more would
# keep them from another Runtime with free threads), and how long one claim
# waits for a new event (also how long stop() may wait for the claim loop).
CLAIM_AHEAD = 32
CLAIM_WAIT_S = 0.1

CONFIG_KIND = "event_invoke_config"
DLQ_KIND = "dead_letter"


class FunctionHandle(Protocol):
    """What a delivery needs of a registered function."""

    pool: FunctionPool
    log: FunctionLog
    arn: str
    platform: PlatformHandler  # serves its platform calls, as its role


Lookup = Callable[[str], FunctionHandle | None]


class AsyncInvoker:
    """Accepts Event invokes and delivers them on background threads."""

    def __init__(self, store: Store, arns: Arns, limiter: ConcurrencyLimiter, lookup: Lookup,
                 destinations: Destinations, notify_queues: Callable[[], None],
                 retry_base_delay_s: float) -> None:
        self._store = store
        self._arns = arns
        self._limiter = limiter
        self._lookup = lookup
        self._destinations = destinations
        self._notify_queues = notify_queues
        self.retry_base_delay_s = retry_base_delay_s
        # Told of every invocation a delivery makes: (function, "async", result).
        self.on_invoked: Callable[[str, str, Any], None] = lambda *_: None
        heap_lock = threading.Lock()
        self._cond = threading.Condition(heap_lock)
        # Shared stores: the claim loop waits here (on the same lock) for room
        # in the heap, so it never takes a wake-up meant for a delivery thread.
        self._room = threading.Condition(heap_lock)
        self._heap: list[tuple[float, int]] = []
        self._in_flight = 0
        self._idle_threads = 0
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._invoke_s = 0.0  # moving average of invocation wall time
        # The last response of events being retried, for their final record;
        # after a restart an event's record carries no response until it runs again.
        self._last_response: dict[int, tuple[str | None, bytes]] = {}
        self._fresh: dict[int, AsyncEvent] = {}
        # This Runtime alone writes the settings, so it may cache them; the lock
        # keeps a reader from caching a value a writer has just replaced.
        self._settings: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._settings_lock = threading.Lock()
        self._shared: SharedStore | None = cast(SharedStore, store) if store.shared else None
        self._feeder: threading.Thread | None = None
        if self._shared is None:
            for due, event_id in store.pending_events():
                self._schedule(due, event_id)
        else:
            self._feeder = threading.Thread(target=self._claim_loop, name="sandbox-async-claim",
                                            daemon=True)
            self._feeder.start()

    # -- configuration ---------------------------------------------------------------------
    def put_config(self, name: str, function_arn: str, maximum_retry_attempts: int | None,
                   maximum_event_age_s: int | None, on_success: str | None,
                   on_failure: str | None) -> dict[str, Any]:
        """PutFunctionEventInvokeConfig: replaces the whole configuration
        (omitted settings return to their defaults).

        Raises:
            InvalidParameterValueException: a setting out of Lambda's range,
                a destination that is not a queue or function ARN, or one the
                function's execution role may not use.
        """
        retries = (C.ASYNC_RETRY_ATTEMPTS_DEFAULT if maximum_retry_attempts is None
                   else maximum_retry_attempts)
        age = C.ASYNC_EVENT_AGE_DEFAULT_S if maximum_event_age_s is None else maximum_event_age_s
        _check_range("maximum_retry_attempts", retries, C.ASYNC_RETRY_ATTEMPTS_MIN,
                     C.ASYNC_RETRY_ATTEMPTS_MAX)
        _check_range("maximum_event_age_s", age, C.ASYNC_EVENT_AGE_MIN_S, C.ASYNC_EVENT_AGE_MAX_S)
        destinations: dict[str, Any] = {}
        for key, arn in (("OnSuccess", on_success), ("OnFailure", on_failure)):
            checked = check_destination(self._arns, arn, key)
            if checked:
                self._destinations.checks.configure_destination(
                    name, checked, invalid_destination_wording=True)
            destinations[key] = {"Destination": checked} if checked else {}
        record = {"FunctionArn": f"{function_arn}:{C.LATEST_VERSION}",
                  "MaximumRetryAttempts": retries, "MaximumEventAgeInSeconds": age,
                  "LastModified": time.time(), "DestinationConfig": destinations}
        with self._settings_lock:
            self._store.put_function_settings(CONFIG_KIND, name, record)
            self._settings.pop((CONFIG_KIND, name), None)
        return record

    def get_config(self, name: str, function_arn: str) -> dict[str, Any]:
        record = self._store.get_function_settings(CONFIG_KIND, name)
        if record is None:
            raise ResourceNotFoundException(
                f"The function {function_arn} doesn't have an EventInvokeConfig")
        return record

    def delete_config(self, name: str, function_arn: str) -> None:
        with self._settings_lock:
            self._settings.pop((CONFIG_KIND, name), None)
            deleted = self._store.delete_function_settings(CONFIG_KIND, name)
        if not deleted:
            raise ResourceNotFoundException(
                f"The function {function_arn} doesn't have an EventInvokeConfig")

    def put_dead_letter(self, name: str, target_arn: str | None) -> None:
        """The function's DeadLetterConfig (TargetArn: a queue), or None to remove it.

        Raises:
            InvalidParameterValueException: not a queue ARN, or the function's
                execution role may not send to it.
        """
        if target_arn is not None:
            service, _ = self._arns.parse(target_arn, "dead-letter TargetArn")
            if service != "sqs":
                raise InvalidParameterValueException(
                    f"dead-letter TargetArn must be a queue ARN, got {target_arn!r}")
            self._destinations.checks.configure_destination(name, target_arn)
        with self._settings_lock:
            self._settings.pop((DLQ_KIND, name), None)
            if target_arn is None:
                self._store.delete_function_settings(DLQ_KIND, name)
            else:
                self._store.put_function_settings(DLQ_KIND, name, {"TargetArn": target_arn})

    def get_dead_letter(self, name: str) -> str | None:
        record = self._setting(DLQ_KIND, name)
        return str(record["TargetArn"]) if record else None

    def forget_function(self, name: str) -> None:
        """Drops cached settings of a deleted function (the store drops its rows)."""
        with self._settings_lock:
            for kind in (CONFIG_KIND, DLQ_KIND):
                self._settings.pop((kind, name), None)

    def _setting(self, kind: str, name: str) -> dict[str, Any] | None:
        key = (kind, name)
        try:
            return self._settings[key]
        except KeyError:
            with self._settings_lock:
                record = self._settings[key] = self._store.get_function_settings(kind, name)
            return record

    # -- accepting ----------------------------------------------------------------------------
    def accept(self, name: str, request_id: str, body: bytes) -> None:
        """Stores the event; returns once it is durable (the 202)."""
        accepted_at = time.time()
        event_id = self._store.add_event(NewEvent(name, request_id, body, accepted_at))
        if self._shared is not None:
            return  # whichever Runtime claims it delivers it
        if len(self._fresh) < FRESH_EVENTS_MAX:
            self._fresh[event_id] = AsyncEvent(event_id, name, request_id, body, accepted_at,
                                               accepted_at, 0, 0)
        self._schedule(0.0, event_id)

    def schedule_stored(self, event_ids: list[int]) -> None:
        """Schedules events another component stored (function destinations)."""
        if self._shared is not None:
            return  # claimed from the store like any other
        for event_id in event_ids:
            self._schedule(0.0, event_id)

    def _claim_loop(self) -> None:
        """Shared stores: claims due events while fewer than CLAIM_AHEAD wait here."""
        assert self._shared is not None
        failures = 0
        while not self._stopping:
            with self._cond:
                while len(self._heap) >= CLAIM_AHEAD // 2 and not self._stopping:
                    self._room.wait(CLAIM_WAIT_S)
                room = CLAIM_AHEAD - len(self._heap)
            try:
                claimed = self._shared.claim_events(max(room, 0), CLAIM_WAIT_S)
                failures = 0
            except Exception:
                # The store is unreachable for longer than its reconnection
                # retries: keep trying (events stay stored).
                log.exception("claiming async events failed; retrying")
                with self._cond:
                    self._cond.wait(self._throttle_delay(failures))
                failures += 1
                continue
            for event_id in claimed:
                self._schedule(0.0, event_id)

    def _deliveries_max(self) -> int:
        return FAST_DELIVERIES if self._invoke_s < FAST_INVOKE_S else DELIVERY_THREADS_MAX

    def _schedule(self, due: float, event_id: int) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, event_id))
            # More queued events than idle threads to wake (a woken thread counts
            # as idle until it runs): another thread, up to the maximum.
            if (len(self._heap) > self._idle_threads
                    and len(self._threads) < self._deliveries_max() and not self._stopping):
                thread = threading.Thread(target=self._work, name="sandbox-async",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            if self._in_flight < self._deliveries_max():
                # else the next delivery to end wakes a thread: no wake-up in vain
                self._cond.notify()

    # -- delivering ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = time.time()
                    if (self._heap and self._heap[0][0] <= now
                            and self._in_flight < self._deliveries_max()):
                        _, event_id = heapq.heappop(self._heap)
                        if len(self._heap) < CLAIM_AHEAD // 2:
                            self._room.notify()
                        self._in_flight += 1
                        break
                    self._idle_threads += 1
                    # Waits for the next due event, or (when deliveries are at their
                    # maximum) for a delivery to end: both notify.
                    due_in = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(due_in if due_in is not None and due_in > 0 else None)
                    self._idle_threads -= 1
            try:
                self._deliver(event_id)
            except Exception:
                # A fault of ours, not the function's: keep the event, try later.
                log.exception("delivery of async event %d failed; retrying", event_id)
                self._schedule(time.time() + self._throttle_delay(0), event_id)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    if self._heap:
                        self._cond.notify()

    def _deliver(self, event_id: int) -> None:
        event = self._fresh.pop(event_id, None) or self._store.load_event(event_id)
        if event is None:
            return
        function = self._lookup(event.function)
        if function is None and self._stopping:
            return  # the Runtime is closing: the event stays stored
        if function is None:
            log.warning("async event %s dropped: function %s no longer exists",
                        event.request_id, event.function)
            self._last_response.pop(event_id, None)
            self._store.retire_event(event_id, Outbox())
            return
        config = self._setting(CONFIG_KIND, event.function) or {}
        max_retries = config.get("MaximumRetryAttempts", C.ASYNC_RETRY_ATTEMPTS_DEFAULT)
        max_age = config.get("MaximumEventAgeInSeconds", C.ASYNC_EVENT_AGE_DEFAULT_S)
        now = time.time()
        if now - event.accepted_at > max_age:
            self._fail(event, function.arn, config, C.CONDITION_EVENT_AGE_EXCEEDED)
            return
        if self._limiter.reserved(event.function) == 0:
            self._fail(event, function.arn, config, C.CONDITION_ZERO_RESERVED_CONCURRENCY)
            return
        if self._limiter.try_acquire(event.function) is not None:
            self._requeue(event, event.attempts, event.throttles + 1,
                          now + self._throttle_delay(event.throttles))
            return
        started = time.monotonic()
        try:
            result = sync.invoke(function.pool, function.log, event.request_id, event.payload,
                                 function.arn, platform=function.platform)
            self._invoke_s += INVOKE_TIME_WEIGHT * (time.monotonic() - started - self._invoke_s)
            self.on_invoked(event.function, "async", result)
        except SandboxError as exc:
            # The environment could not start, or the function changed under us:
            # a system error, retried like a throttle (not an attempt).
            if not self._stopping:
                log.warning("async event %s: %s; retrying", event.request_id, exc.message)
                self._requeue(event, event.attempts, event.throttles + 1,
                              time.time() + self._throttle_delay(event.throttles))
            return
        finally:
            self._limiter.release(event.function)
        if self._stopping:
            # close() may have killed the environment, and destination functions
            # are going away: the event stays stored and runs again after a restart
            # (at least once).
            return
        attempts = event.attempts + 1
        response = (result.function_error, result.raw_payload)
        if result.function_error is None:
            self._succeed(event, function.arn, config, attempts, response)
            return
        if attempts > max_retries:
            self._fail(event, function.arn, config, C.CONDITION_RETRIES_EXHAUSTED, attempts,
                       response)
            return
        due = time.time() + self.retry_base_delay_s * attempts
        if due - event.accepted_at > max_age:
            self._fail(event, function.arn, config, C.CONDITION_EVENT_AGE_EXCEEDED, attempts,
                       response)
            return
        self._last_response[event.id] = response
        self._requeue(event, attempts, event.throttles, due)

    def _throttle_delay(self, throttles: int) -> float:
        return backoff_delay(self.retry_base_delay_s, throttles)

    def _requeue(self, event: AsyncEvent, attempts: int, throttles: int, due: float) -> None:
        self._store.reschedule_event(event.id, attempts, throttles, due)
        if self._shared is None:
            self._schedule(due, event.id)

    def _succeed(self, event: AsyncEvent, function_arn: str, config: dict[str, Any],
                 attempts: int, response: tuple[str | None, bytes]) -> None:
        outbox = Outbox()
        target = config.get("DestinationConfig", {}).get("OnSuccess", {}).get("Destination")
        if target:
            record = invocation_record(function_arn, event.request_id, C.CONDITION_SUCCESS,
                                       attempts, event.payload, response)
            self._destinations.add(outbox, event.function, target, json.dumps(record))
        self._retire(event, outbox)

    def _fail(self, event: AsyncEvent, function_arn: str, config: dict[str, Any],
              condition: str, attempts: int | None = None,
              response: tuple[str | None, bytes] | None = None) -> None:
        """The failure path: the OnFailure record and the dead-letter message."""
        if response is None:
            response = self._last_response.get(event.id)
        attempts = event.attempts if attempts is None else attempts
        outbox = Outbox()
        target = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if target:
            record = invocation_record(function_arn, event.request_id, condition, attempts,
                                       event.payload, response)
            self._destinations.add(outbox, event.function, target, json.dumps(record))
        dlq = self.get_dead_letter(event.function)
        if dlq:
            self._destinations.add(outbox, event.function, dlq,
                                   event.payload.decode(errors="replace"),
                                   _dead_letter_attributes(event, condition, response))
        self._retire(event, outbox)

    def _retire(self, event: AsyncEvent, outbox: Outbox) -> None:
        self._last_response.pop(event.id, None)
        new_events = self._store.retire_event(event.id, outbox)
        if outbox.messages:
            self._notify_queues()
        self.schedule_stored(new_events)

    # -- state -----------------------------------------------------------------------------------
    def idle(self) -> bool:
        """No event is stored (pending, waiting for a retry) or being delivered
        (with a shared store: by any Runtime)."""
        with self._cond:
            if self._heap or self._in_flight:
                return False
        return self._shared is None or self._shared.count_events() == 0

    def stop(self) -> None:
        """Stops taking events; deliveries in progress finish (close() ends their
        environments, and their events stay stored for the next Runtime)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._room.notify_all()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        feeder = [self._feeder] if self._feeder is not None else []
        for thread in [*feeder, *self._threads]:
            thread.join(max(deadline - time.monotonic(), 0.0))


def _dead_letter_attributes(event: AsyncEvent, condition: str,
                            response: tuple[str | None, bytes] | None) -> dict[str, Any]:
    """Lambda's dead-letter message attributes: RequestID, ErrorCode, ErrorMessage."""
    message = condition
    if response is not None and response[0] is not None:
        try:
            message = str(json.loads(response[1]).get("errorMessage", condition))
        except (ValueError, AttributeError):
            message = response[1].decode(errors="replace")
    return {
        "RequestID": {"DataType": "String", "StringValue": event.request_id},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String",
                         "StringValue": message[:DLQ_ERROR_MESSAGE_MAX] or condition},
    }


def _check_range(what: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterValueException(f"{what} must be an integer {low}-{high}, "
                                             f"got {value!r}")

