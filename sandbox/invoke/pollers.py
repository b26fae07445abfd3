"""Pollers of event source mappings: read a queue or a stream, invoke the
function synchronously with a batch, and act on the result as Lambda does.

Queue sources: a batch's messages are deleted when the invocation succeeds;
on a function error they stay and reappear after the visibility timeout.
Pollers are added while batches come back full (a backlog), up to the
function's concurrency, and leave again when the queue is empty.

Stream sources: one poller per shard and parallelization lane (records with
one partition key always take the same lane, so they stay in order). With a
shared store, a shard and lane is processed by the one Runtime that holds its
lease, and its checkpoint moves only while that lease is held. A
position (checkpoint) per lane advances only past records that succeeded or
were handed to the failure path, in the same transaction as the on-failure
record.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from .. import constants as C
from ..errors import ResourceNotFoundException, SandboxError
from ..iam.delegated import DelegatedChecks
from ..services.arns import Arns
from ..services.queues import QueueService, md5_of_body, system_attributes
from ..services.streams import StreamService, sequence_number, shard_id
from ..store.base import (
    LeaseLost,
    Message,
    Outbox,
    SharedStore,
    Store,
    StreamRecord,
    mapping_lease_key,
)
from . import sync
from .asynchronous import Lookup
from .concurrency import ConcurrencyLimiter, backoff_delay
from .destinations import Destinations, iso_timestamp
from .ids import new_request_id
from .sync import InvokeResult

log = logging.getLogger("sandbox.invoke")

# Upper bound on one queue mapping's poller threads (each runs one batch at a time).
QUEUE_POLLERS_MAX = 16
# How long an idle poller waits for new messages or records before looking again.
IDLE_WAIT_S = 1.0


class MappingContext:
    """What pollers share: services, the limiter and the function lookup."""

    def __init__(self, store: Store, arns: Arns, queues: QueueService, streams: StreamService,
                 limiter: ConcurrencyLimiter, lookup: Lookup, destinations: Destinations,
                 schedule_events: Callable[[list[int]], None], retry_base_delay_s: float) -> None:
        self.store = store
        self.arns = arns
        self.queues = queues
        self.streams = streams
        self.limiter = limiter
        self.lookup = lookup
        self.destinations = destinations
        self.schedule_events = schedule_events
        self.retry_base_delay_s = retry_base_delay_s
        # Told of every invocation a poller makes: (function, "mapping", result).
        self.on_invoked: Callable[[str, str, Any], None] = lambda *_: None

    @property
    def checks(self) -> DelegatedChecks:
        """The role checks of mappings and their destinations."""
        return self.destinations.checks


def failed_items(result: InvokeResult, identifiers: list[str]) -> set[str] | None:
    """The items a ReportBatchItemFailures response names as failed.

    Returns an empty set when the batch succeeded (no response, an empty or
    null ``batchItemFailures``), None when the whole batch failed (a function
    error, a response that is not JSON, or an item whose ``itemIdentifier`` is
    missing, empty, null or not in the batch), else the failed identifiers.
    """
    if result.function_error is not None:
        return None
    try:
        response = json.loads(result.raw_payload) if result.raw_payload else None
    except ValueError:
        return None
    if not isinstance(response, dict):
        return set()
    failures = response.get("batchItemFailures")
    if failures is None or failures == []:
        return set()
    if not isinstance(failures, list):
        return None
    known = set(identifiers)
    failed = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in known:
            return None
        failed.add(identifier)
    return failed


class Poller:
    """Threads working for one mapping; ``record`` is its Lambda-shaped configuration."""

    def __init__(self, ctx: MappingContext, record: dict[str, Any], function: str,
                 source: str) -> None:
        self.ctx = ctx
        self.record = record
        self.uuid = str(record["UUID"])
        self.function = function
        self.source = source  # the queue or stream name
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._denials = 0  # polls refused in a row for want of the role's permission

    def start(self) -> None:
        raise NotImplementedError

    def idle(self) -> bool:
        raise NotImplementedError

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=self._run, args=(target, *args),
                                  name=f"sandbox-poller-{self.uuid[:8]}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _run(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        finally:
            with self._lock:
                if threading.current_thread() in self._threads:
                    self._threads.remove(threading.current_thread())

    def _leave_if_extra(self) -> bool:
        """Removes the calling thread when others remain (checked and done
        under one lock, so two idle pollers cannot both leave)."""
        with self._lock:
            if len(self._threads) > 1:
                self._threads.remove(threading.current_thread())
                return True
            return False

    @property
    def thread_count(self) -> int:
        with self._lock:
            return len(self._threads)

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))

    def _may_read(self) -> bool:
        """Whether the function's execution role may read the source now (its
        policies as they are at this poll). A refusal is logged (once until
        reading is allowed again) and backed off like a failing poll; the
        mapping stays Enabled and resumes once the role allows it, as Lambda
        keeps polling an enabled SQS or Kinesis source."""
        try:
            self.ctx.checks.mapping_source(self.function, self.record["EventSourceArn"])
        except ResourceNotFoundException:
            return True  # the function is gone: _invoke waits for it to return
        except SandboxError as exc:
            with self._lock:
                denials = self._denials
                self._denials += 1
            if denials == 0:
                log.warning("mapping %s: cannot read %s: %s; retrying", self.uuid,
                            self.record["EventSourceArn"], exc.message)
            self._backoff(denials)
            return False
        with self._lock:
            denied, self._denials = self._denials, 0
        if denied:
            log.info("mapping %s: reading %s again", self.uuid, self.record["EventSourceArn"])
        return True

    def _invoke(self, event: dict[str, Any]) -> InvokeResult | None:
        """One synchronous invocation with a batch; waits for the function to
        exist and for a concurrency slot. None when stopped first, or when it
        failed after the mapping was stopped (close() may have killed it); a
        result that came back whole is acted on even then."""
        body = json.dumps(event).encode()
        failures = 0
        while not self.stop_event.is_set():
            function = self.ctx.lookup(self.function)
            if function is None:
                self.stop_event.wait(IDLE_WAIT_S)
                continue
            if not self.ctx.limiter.acquire(self.function, self.stop_event.is_set):
                return None
            try:
                # The caller is the source's service principal: only an explicit
                # Deny in the function's policy refuses it (sandbox/iam/delegated.py).
                self.ctx.checks.mapping_invoke(self.function, self.record["EventSourceArn"])
                result = sync.invoke(function.pool, function.log, new_request_id(), body,
                                     function.arn, platform=function.platform)
            except SandboxError as exc:
                log.warning("mapping %s: invoke of %s failed: %s; retrying", self.uuid,
                            self.function, exc.message)
                self._backoff(failures)
                failures += 1
                continue
            finally:
                self.ctx.limiter.release(self.function)
            self.ctx.on_invoked(self.function, "mapping", result)
            if self.stop_event.is_set() and result.function_error is not None:
                return None  # perhaps cut short by close(): not the function's failure
            return result
        return None

    def _backoff(self, failures: int) -> None:
        self.stop_event.wait(backoff_delay(self.ctx.retry_base_delay_s, failures))


class QueuePoller(Poller):
    """Polls a queue; scales with the backlog."""

    def start(self) -> None:
        self._spawn(self._poll)

    def idle(self) -> bool:
        visible, in_flight = self.ctx.queues.depth(self.source)
        with self._lock:
            busy = self._busy
        return busy == 0 and visible == 0 and in_flight == 0

    def _poll(self) -> None:
        batch_size = int(self.record["BatchSize"])
        window = float(self.record["MaximumBatchingWindowInSeconds"])
        missing = False
        while not self.stop_event.is_set():
            if not self._may_read():
                if self._leave_if_extra():
                    return  # one poller is enough to wait for the permission
                continue
            try:
                messages = self._gather(batch_size, window)
            except SandboxError as exc:  # the queue was deleted: wait for it to return
                if not missing:
                    log.warning("mapping %s: %s", self.uuid, exc.message)
                missing = True
                self.stop_event.wait(IDLE_WAIT_S)
                continue
            missing = False
            if not messages:
                if self._leave_if_extra():
                    return  # the backlog is gone: one poller is enough
                continue
            if (len(messages) == batch_size and self.thread_count < min(
                    QUEUE_POLLERS_MAX, self.ctx.limiter.capacity(self.function))):
                self._spawn(self._poll)
            with self._lock:
                self._busy += 1
            try:
                self._process(messages)
            finally:
                with self._lock:
                    self._busy -= 1

    def _gather(self, batch_size: int, window: float) -> list[Message]:
        messages = self.ctx.queues.receive(self.source, batch_size, IDLE_WAIT_S,
                                           stop=self.stop_event)
        if not messages or window <= 0:
            return messages
        deadline = time.monotonic() + window
        while len(messages) < batch_size and not self.stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            messages += self.ctx.queues.receive(self.source, batch_size - len(messages),
                                                min(remaining, IDLE_WAIT_S),
                                                stop=self.stop_event)
        return messages

    def _process(self, messages: list[Message]) -> None:
        result = self._invoke(self.queue_event(messages))
        if result is None:
            return  # stopped: the messages reappear after their visibility timeout
        if C.REPORT_BATCH_ITEM_FAILURES in self.record["FunctionResponseTypes"]:
            failed = failed_items(result, [m.message_id for m in messages])
        else:
            failed = None if result.function_error is not None else set()
        if failed is None:
            return  # the whole batch failed: every message reappears
        done = [m.receipt_handle for m in messages if m.message_id not in failed]
        if done:
            self.ctx.queues.delete_batch(self.source, done)

    def queue_event(self, messages: list[Message]) -> dict[str, Any]:
        """Lambda's SQS event."""
        arn = self.record["EventSourceArn"]
        return {"Records": [{
            "messageId": m.message_id,
            "receiptHandle": m.receipt_handle,
            "body": m.body,
            "attributes": system_attributes(m),
            "messageAttributes": {name: _lambda_attribute(value)
                                  for name, value in m.attributes.items()},
            "md5OfBody": md5_of_body(m.body),
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": self.ctx.arns.region,
        } for m in messages]}


def _lambda_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """An SQS message attribute as Lambda's SQS event spells it."""
    attribute: dict[str, Any] = {"stringListValues": [], "binaryListValues": [],
                                 "dataType": value["DataType"]}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    else:
        attribute["binaryValue"] = value["BinaryValue"]
    return attribute


class StreamPoller(Poller):
    """One thread per shard and lane, each from its checkpoint, in order."""

    def start(self) -> None:
        lanes = int(self.record["ParallelizationFactor"])
        positions = self.ctx.store.get_checkpoints(self.uuid)
        shards = int(self.ctx.streams.describe(self.source)["shards"])
        for shard in range(shards):
            for lane in range(lanes):
                self._spawn(self._poll, shard, lane, positions.get((shard, lane), 0))

    def idle(self) -> bool:
        with self._lock:
            if self._busy:
                return False
        lanes = int(self.record["ParallelizationFactor"])
        positions = self.ctx.store.get_checkpoints(self.uuid)
        try:
            shards = int(self.ctx.streams.describe(self.source)["shards"])
        except SandboxError:
            return True  # the stream was deleted: nothing left to read
        return not any(
            self.ctx.streams.read(self.source, shard, positions.get((shard, lane), 0), 1,
                                  lanes, lane)
            for shard in range(shards) for lane in range(lanes))

    def _poll(self, shard: int, lane: int, position: int) -> None:
        shared = cast(SharedStore, self.ctx.store) if self.ctx.store.shared else None
        if shared is None:
            self._poll_shard(shard, lane, position)
            return
        # Several Runtimes: the shard and lane go to whichever holds its lease,
        # from the checkpoint as it is when the lease is taken.
        lease = mapping_lease_key(self.uuid, shard, lane)
        failures = 0
        try:
            while not self.stop_event.is_set():
                try:
                    if not shared.hold_lease(lease):
                        self.stop_event.wait(IDLE_WAIT_S)
                        continue
                    position = self.ctx.store.get_checkpoints(self.uuid).get((shard, lane), 0)
                    self._poll_shard(shard, lane, position, lambda: shared.hold_lease(lease))
                    failures = 0
                except LeaseLost as exc:
                    log.warning("mapping %s: %s", self.uuid, exc.message)
                except Exception:
                    # The store stayed unreachable beyond its reconnection retries:
                    # try again (the checkpoint says where), do not end the poller.
                    log.exception("mapping %s: shard %d lane %d failed; retrying",
                                  self.uuid, shard, lane)
                    self._backoff(failures)
                    failures += 1
        finally:
            try:
                shared.release_lease(lease)
            except Exception:  # unreachable: the lease expires by itself
                log.warning("mapping %s: lease %s not released; it expires", self.uuid, lease)

    def _poll_shard(self, shard: int, lane: int, position: int,
                    still_held: Callable[[], bool] = lambda: True) -> None:
        """Processes one shard and lane from ``position`` until stopped, or
        until ``still_held()`` says another Runtime took its lease."""
        batch_size = int(self.record["BatchSize"])
        window = float(self.record["MaximumBatchingWindowInSeconds"])
        lanes = int(self.record["ParallelizationFactor"])
        while not self.stop_event.is_set():
            if not self._may_read():
                continue
            if not still_held():
                return
            with self._lock:
                self._busy += 1
            try:
                records = self.ctx.streams.read(self.source, shard, position, batch_size,
                                                lanes, lane)
                if records and len(records) < batch_size and window > 0:
                    # Batching window: wait for a fuller batch, at most the window.
                    self.stop_event.wait(window)
                    records = self.ctx.streams.read(self.source, shard, position, batch_size,
                                                    lanes, lane)
                if records:
                    reached = self._process(shard, lane, records)
                    if reached is None:
                        return
                    position = reached
                    continue
            except SandboxError as exc:  # the stream was deleted
                log.warning("mapping %s: %s", self.uuid, exc.message)
                self.stop_event.wait(IDLE_WAIT_S)
                continue
            finally:
                with self._lock:
                    self._busy -= 1
            self.ctx.streams.wait(IDLE_WAIT_S)

    def _process(self, shard: int, lane: int, records: list[StreamRecord]) -> int | None:
        """Runs a batch to completion (success, or the failure path); returns
        the new position, None when stopped."""
        max_retries = int(self.record["MaximumRetryAttempts"])
        max_age = int(self.record["MaximumRecordAgeInSeconds"])
        bisect = bool(self.record["BisectBatchOnFunctionError"])
        report_items = C.REPORT_BATCH_ITEM_FAILURES in self.record["FunctionResponseTypes"]
        # (records, retries so far, invocations so far); halves of a bisected batch
        # go to the front, in order.
        pending = collections.deque([(records, 0, 0)])
        position = records[0].sequence - 1
        while pending:
            batch, retries, invokes = pending[0]
            if max_age != -1:
                now = time.time()
                expired = 0
                while expired < len(batch) and now - batch[expired].arrived_at > max_age:
                    expired += 1
                if expired:
                    self._discard(shard, lane, batch[:expired], C.CONDITION_RECORD_AGE_EXCEEDED,
                                  invokes, None)
                    position = batch[expired - 1].sequence
                    batch = batch[expired:]
                    if not batch:
                        pending.popleft()
                        continue
            result = self._invoke(self.stream_event(shard, batch))
            if result is None:
                return None
            invokes += 1
            if report_items:
                failed = failed_items(result, [sequence_number(r.sequence) for r in batch])
            else:
                failed = None if result.function_error is not None else set()
            if failed == set():
                position = self._advance(shard, lane, batch[-1].sequence, Outbox())
                pending.popleft()
                continue
            first_failed = 0 if failed is None else min(
                i for i, r in enumerate(batch) if sequence_number(r.sequence) in failed)
            if first_failed:
                position = self._advance(shard, lane, batch[first_failed - 1].sequence, Outbox())
                batch = batch[first_failed:]
            if bisect and len(batch) > 1:
                # Splitting does not count as a retry.
                half = len(batch) // 2
                pending.popleft()
                pending.appendleft((batch[half:], retries, invokes))
                pending.appendleft((batch[:half], retries, invokes))
                continue
            retries += 1
            if max_retries != -1 and retries > max_retries:
                self._discard(shard, lane, batch, C.CONDITION_RETRY_ATTEMPTS_EXHAUSTED, invokes,
                              result)
                position = batch[-1].sequence
                pending.popleft()
                continue
            pending[0] = (batch, retries, invokes)
            self._backoff(retries - 1)
            if self.stop_event.is_set():
                return None
        return position

    def _advance(self, shard: int, lane: int, sequence: int, outbox: Outbox) -> int:
        new_events = self.ctx.store.advance_checkpoint(self.uuid, shard, lane, sequence, outbox)
        if outbox.messages:
            self.ctx.queues.notify()
        if new_events:
            self.ctx.schedule_events(new_events)
        return sequence

    def _discard(self, shard: int, lane: int, batch: list[StreamRecord], condition: str,
                 invokes: int, result: InvokeResult | None) -> None:
        """The failure path: Lambda's stream failure record to the on-failure
        destination, written with the checkpoint that skips the batch."""
        outbox = Outbox()
        target = self.record["DestinationConfig"].get("OnFailure", {}).get("Destination")
        if target:
            record = self.failure_record(shard, batch, condition, invokes, result)
            self.ctx.destinations.add(outbox, self.function, target, json.dumps(record))
        self._advance(shard, lane, batch[-1].sequence, outbox)

    def failure_record(self, shard: int, batch: list[StreamRecord], condition: str,
                       invokes: int, result: InvokeResult | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "requestContext": {
                "requestId": result.request_id if result else new_request_id(),
                "functionArn": self.record["FunctionArn"],
                "condition": condition,
                "approximateInvokeCount": invokes,
            },
            "version": C.DESTINATION_RECORD_VERSION,
            "timestamp": iso_timestamp(),
            "KinesisBatchInfo": {
                "shardId": shard_id(shard),
                "startSequenceNumber": sequence_number(batch[0].sequence),
                "endSequenceNumber": sequence_number(batch[-1].sequence),
                "approximateArrivalOfFirstRecord": iso_timestamp(batch[0].arrived_at),
                "approximateArrivalOfLastRecord": iso_timestamp(batch[-1].arrived_at),
                "batchSize": len(batch),
                "streamArn": self.record["EventSourceArn"],
            },
        }
        if result is not None:
            context: dict[str, Any] = {"statusCode": result.status_code,
                                       "executedVersion": C.LATEST_VERSION}
            if result.function_error is not None:
                context["functionError"] = result.function_error
            record["responseContext"] = context
        return record

    def stream_event(self, shard: int, batch: list[StreamRecord]) -> dict[str, Any]:
        """Lambda's Kinesis event (no invokeIdentityArn: execution roles are
        not modelled yet)."""
        arn = self.record["EventSourceArn"]
        return {"Records": [{
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": r.partition_key,
                "sequenceNumber": sequence_number(r.sequence),
                "data": base64.b64encode(r.data).decode(),
                "approximateArrivalTimestamp": round(r.arrived_at, 3),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id(shard)}:{sequence_number(r.sequence)}",
            "eventName": "aws:kinesis:record",
            "awsRegion": self.ctx.arns.region,
            "eventSourceARN": arn,
        } for r in batch]}
