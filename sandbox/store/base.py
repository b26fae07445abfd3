"""The store interface every backend implements, and the rows it exchanges.

Times are wall-clock seconds since the epoch (``time.time()``): they must
mean the same after a restart. Every method is atomic; methods that take an
:class:`Outbox` apply it in the same transaction as their own change, so a
destination record is written exactly when the work it reports is retired.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ResourceConflictException


class LeaseLost(ResourceConflictException):
    """A checkpoint was refused: this Runtime no longer holds the lease of its
    shard and lane (it stopped renewing for too long; another took over)."""


def mapping_lease_key(uuid: str, shard: int, lane: int) -> str:
    """The lease that lets one Runtime at a time process a stream mapping's
    shard and lane (shared stores)."""
    return f"mapping:{uuid}:{shard}:{lane}"


@dataclasses.dataclass(frozen=True)
class NewMessage:
    """A message to append to a queue."""

    queue: str
    message_id: str
    body: str
    attributes: dict[str, Any]  # message attributes, SQS's MessageAttributes shape
    sent_at: float
    sender_id: str = ""


@dataclasses.dataclass(frozen=True)
class Message:
    """A received message; ``receipt_handle`` names this receive of it."""

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, Any]
    sent_at: float
    first_received_at: float
    receive_count: int
    sender_id: str


@dataclasses.dataclass(frozen=True)
class StreamRecord:
    """One record of a stream shard; ``sequence`` grows with every put to the stream."""

    shard: int
    sequence: int
    partition_key: str
    data: bytes
    arrived_at: float


@dataclasses.dataclass(frozen=True)
class NewEvent:
    """An asynchronous invocation to store."""

    function: str
    request_id: str
    payload: bytes
    accepted_at: float


@dataclasses.dataclass(frozen=True)
class AsyncEvent:
    """A stored asynchronous invocation: ``attempts`` invocations happened,
    ``throttles`` deliveries found no concurrency; it is due at ``due_at``."""

    id: int
    function: str
    request_id: str
    payload: bytes
    accepted_at: float
    due_at: float
    attempts: int
    throttles: int


@dataclasses.dataclass
class Outbox:
    """Messages and events written atomically with another change."""

    messages: list[NewMessage] = dataclasses.field(default_factory=list)
    events: list[NewEvent] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.messages or self.events)


class Store(Protocol):
    """Durable state of one Runtime: registry, queues, streams, async events,
    event source mappings and their checkpoints, per-function settings.
    ``shared`` stores (Redis) are used by several Runtimes at once and also
    implement :class:`SharedStore`."""

    shared: bool

    # -- functions -------------------------------------------------------------------
    def put_function(self, name: str, record: dict[str, Any]) -> None:
        """Creates or replaces a function's configuration record."""

    def get_function(self, name: str) -> dict[str, Any] | None:
        """The record, or None when no such function exists."""

    def delete_function(self, name: str) -> bool:
        """Removes the function; returns whether it existed."""

    def list_functions(self) -> list[dict[str, Any]]:
        """All records, ordered by name."""

    # -- permissions (sandbox/iam): users, roles, organizations, function policies ----
    def put_iam_record(self, kind: str, key: str, record: dict[str, Any]) -> None:
        """Creates or replaces the IAM record ``key`` of ``kind``."""

    def get_iam_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record, or None."""

    def delete_iam_record(self, kind: str, key: str) -> bool:
        """Removes the record; returns whether it existed."""

    def list_iam_records(self, kind: str) -> list[dict[str, Any]]:
        """All records of ``kind``, ordered by key."""
    # -- per-function invocation settings ---------------------------------------------
    def put_function_settings(self, kind: str, name: str, record: dict[str, Any]) -> None:
        """Creates or replaces one kind of setting ("event_invoke_config",
        "concurrency", "dead_letter") of a function."""

    def get_function_settings(self, kind: str, name: str) -> dict[str, Any] | None:
        """The setting, or None."""

    def list_function_settings(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every function's setting of this kind, by function name."""

    def delete_function_settings(self, kind: str | None, name: str) -> bool:
        """Removes one kind (or with None, every kind) of a function's settings."""

    # -- queues ------------------------------------------------------------------------
    def put_queue(self, name: str, record: dict[str, Any]) -> None:
        """Creates or replaces a queue's attributes."""

    def get_queue(self, name: str) -> dict[str, Any] | None:
        """A queue's attributes, or None."""

    def list_queues(self) -> list[dict[str, Any]]:
        """Every queue's attributes, ordered by name."""

    def delete_queue(self, name: str) -> bool:
        """Removes a queue and its messages."""

    def send_messages(self, messages: list[NewMessage]) -> None:
        """Appends messages; returns once they are durable."""

    def receive_messages(self, queue: str, max_messages: int, now: float, visible_at: float,
                         max_receive_count: int | None, dead_letter_queue: str | None,
                         new_handle: Callable[[], str]) -> list[Message]:
        """Up to ``max_messages`` messages visible at ``now``, oldest first, made
        invisible until ``visible_at`` with fresh receipt handles from
        ``new_handle()``. A message already received ``max_receive_count``
        times moves to ``dead_letter_queue`` instead of being returned."""

    def delete_messages(self, queue: str, receipt_handles: list[str]) -> int:
        """Deletes the messages these current receipt handles name; returns how many."""

    def change_visibility(self, queue: str, receipt_handle: str, visible_at: float) -> bool:
        """Makes a received message visible at ``visible_at``; False for a stale handle."""

    def count_messages(self, queue: str, now: float) -> tuple[int, int]:
        """``(visible, in_flight)``: messages receivable now, and received but invisible."""

    def next_visible_at(self, queue: str) -> float | None:
        """When the earliest message becomes visible (None: the queue is empty)."""

    def expire_messages(self, queue: str, sent_before: float) -> int:
        """Deletes messages sent before ``sent_before`` (retention); returns how many."""

    # -- streams -----------------------------------------------------------------------
    def put_stream(self, name: str, record: dict[str, Any]) -> None:
        """Creates a stream."""

    def get_stream(self, name: str) -> dict[str, Any] | None:
        """A stream's description, or None."""

    def list_streams(self) -> list[dict[str, Any]]:
        """Every stream, ordered by name."""

    def delete_stream(self, name: str) -> bool:
        """Removes a stream and its records."""

    def put_record(self, stream: str, shard: int, partition_key: str, lane_key: int,
                   data: bytes, arrived_at: float) -> int:
        """Appends a record; returns its sequence number once durable.
        ``lane_key`` is a stable hash of the partition key."""

    def read_records(self, stream: str, shard: int, after: int, limit: int,
                     lanes: int = 1, lane: int = 0) -> list[StreamRecord]:
        """Records with sequence > ``after`` in order, only those whose
        ``lane_key % lanes == lane``."""

    def last_sequence(self, stream: str, shard: int) -> int:
        """The newest sequence number in the shard (0: none yet, or all expired)."""

    def expire_records(self, stream: str, arrived_before: float) -> int:
        """Deletes records that arrived before ``arrived_before`` (retention)."""

    # -- asynchronous events ---------------------------------------------------------------
    def add_event(self, event: NewEvent) -> int:
        """Stores an event for delivery now; returns its id once durable."""

    def load_event(self, event_id: int) -> AsyncEvent | None:
        """A stored event, or None once it was retired."""

    def pending_events(self) -> list[tuple[float, int]]:
        """``(due_at, id)`` of every stored event."""

    def reschedule_event(self, event_id: int, attempts: int, throttles: int,
                         due_at: float) -> None:
        """Records another attempt or throttle and when to try next."""

    def retire_event(self, event_id: int, outbox: Outbox) -> list[int]:
        """Removes an event, writing ``outbox`` in the same transaction;
        returns the ids of the events the outbox added."""

    # -- event source mappings ---------------------------------------------------------------
    def put_mapping(self, uuid: str, record: dict[str, Any]) -> None:
        """Creates or replaces an event source mapping."""

    def get_mapping(self, uuid: str) -> dict[str, Any] | None:
        """A mapping, or None."""

    def list_mappings(self) -> list[dict[str, Any]]:
        """Every mapping, in creation order."""

    def delete_mapping(self, uuid: str) -> bool:
        """Removes a mapping and its checkpoints."""

    def get_checkpoints(self, uuid: str) -> dict[tuple[int, int], int]:
        """A stream mapping's positions: ``{(shard, lane): last processed sequence}``."""

    def put_checkpoints(self, uuid: str, positions: dict[tuple[int, int], int]) -> None:
        """Replaces every position of a mapping."""

    def advance_checkpoint(self, uuid: str, shard: int, lane: int, sequence: int,
                           outbox: Outbox) -> list[int]:
        """Moves one position forward, writing ``outbox`` in the same
        transaction; returns the ids of the events the outbox added."""

    # -- figures (metrics) ---------------------------------------------------------------
    def event_backlog(self) -> dict[str, tuple[int, float]]:
        """Stored asynchronous events by function: ``(count, oldest accepted_at)``."""

    def queue_backlog(self, queue: str) -> tuple[int, float | None]:
        """``(messages, oldest sent_at)`` of a queue, visible or in flight."""

    def stream_backlog(self, stream: str, shard: int, after: int, lanes: int, lane: int
                       ) -> tuple[int, float | None]:
        """``(records, oldest arrived_at)`` after ``after`` in one shard and lane."""

    def close(self) -> None:
        """Releases the backend's resources."""


class SharedStore(Store, Protocol):
    """A store several Runtimes use at once. Work is shared through claims
    and leases that this Runtime renews while it lives and that expire (to
    be taken over by another) when it stops renewing."""

    def claim_events(self, limit: int, wait_s: float) -> list[int]:
        """Up to ``limit`` event ids for this Runtime to deliver now (waiting
        up to ``wait_s`` for one); each stays claimed until retired or
        rescheduled (a rescheduled event is claimed again when due, by any
        Runtime)."""

    def count_events(self) -> int:
        """Stored events of every Runtime: pending, waiting or being delivered."""

    def hold_lease(self, key: str) -> bool:
        """Takes or keeps the lease ``key``; False while another Runtime holds it."""

    def release_lease(self, key: str) -> None:
        """Gives the lease up."""

    def acquire_slot(self, function: str, limit: int) -> str | None:
        """A concurrency slot counted across every Runtime: None, or the
        limit that was reached ("reserved" or "account")."""

    def release_slot(self, function: str) -> None:
        """Returns a slot ``acquire_slot`` gave."""
