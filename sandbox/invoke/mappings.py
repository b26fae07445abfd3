"""Event source mappings: Lambda's validation, their records, and the
pollers that run for the enabled ones (see pollers.py)."""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from typing import Any

from .. import constants as C
from ..errors import InvalidParameterValueException, ResourceNotFoundException, SandboxError
from .pollers import MappingContext, Poller, QueuePoller, StreamPoller

log = logging.getLogger("sandbox.invoke")

# Options only stream sources take, with the values that mean "not set": a
# queue mapping given any other value is refused (a starting position at all).
STREAM_ONLY = {"starting_position": None, "bisect_batch_on_function_error": False,
               "maximum_retry_attempts": -1, "maximum_record_age_s": -1, "on_failure": None,
               "parallelization_factor": 1}
# How long update and delete wait for a mapping's batch in flight to finish.
STOP_WAIT_S = 60.0
# Shared stores: how often a Runtime looks for mappings other Runtimes changed.
FOLLOW_INTERVAL_S = 1.0
UPDATABLE = ("function", "batch_size", "maximum_batching_window_s", "function_response_types",
             "bisect_batch_on_function_error", "maximum_retry_attempts", "maximum_record_age_s",
             "on_failure", "parallelization_factor", "enabled")
_FIELDS = {
    "batch_size": "BatchSize",
    "maximum_batching_window_s": "MaximumBatchingWindowInSeconds",
    "function_response_types": "FunctionResponseTypes",
    "starting_position": "StartingPosition",
    "bisect_batch_on_function_error": "BisectBatchOnFunctionError",
    "maximum_retry_attempts": "MaximumRetryAttempts",
    "maximum_record_age_s": "MaximumRecordAgeInSeconds",
    "parallelization_factor": "ParallelizationFactor",
}


def _int(what: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterValueException(f"{what} must be an integer {low}-{high}, "
                                             f"got {value!r}")
    return value


def validate(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Lambda's fields for a mapping of a "sqs" or "kinesis" source, from
    the Python option names; None means "not given".

    Raises:
        InvalidParameterValueException: the rule that was broken.
    """
    stream = kind == "kinesis"
    if not stream:
        given = [name for name, unset in STREAM_ONLY.items()
                 if options.get(name) is not None and options.get(name) != unset]
        if given:
            raise InvalidParameterValueException(
                f"{', '.join(given)} apply only to stream sources, not to queues")
    batch_size = options.get("batch_size")
    if batch_size is None:
        batch_size = C.STREAM_BATCH_SIZE_DEFAULT if stream else C.QUEUE_BATCH_SIZE_DEFAULT
    _int("batch_size", batch_size, C.BATCH_SIZE_MIN, C.BATCH_SIZE_MAX)
    window = options.get("maximum_batching_window_s")
    window = 0 if window is None else window
    _int("maximum_batching_window_s", window, 0, C.BATCHING_WINDOW_MAX_S)
    if not stream and batch_size > C.QUEUE_BATCH_SIZE_WITHOUT_WINDOW_MAX and window < 1:
        raise InvalidParameterValueException(
            f"Maximum batch window in seconds must be greater than 0 if maximum batch size "
            f"is greater than {C.QUEUE_BATCH_SIZE_WITHOUT_WINDOW_MAX} (batch_size "
            f"{batch_size} needs maximum_batching_window_s >= 1)")
    types = list(options.get("function_response_types") or ())
    for value in types:
        if value != C.REPORT_BATCH_ITEM_FAILURES:
            raise InvalidParameterValueException(
                f"function_response_types may only contain {C.REPORT_BATCH_ITEM_FAILURES!r},"
                f" got {value!r}")
    record: dict[str, Any] = {
        "BatchSize": batch_size, "MaximumBatchingWindowInSeconds": window,
        "FunctionResponseTypes": sorted(set(types)),
    }
    if not stream:
        return record
    position = options.get("starting_position")
    if position is None:
        raise InvalidParameterValueException(
            "starting_position is required for stream sources (TRIM_HORIZON or LATEST)")
    if position not in C.STARTING_POSITIONS:
        raise InvalidParameterValueException(
            f"starting_position must be one of {', '.join(C.STARTING_POSITIONS)}, "
            f"got {position!r}")
    retries = options.get("maximum_retry_attempts")
    retries = -1 if retries is None else _int("maximum_retry_attempts", retries, -1,
                                               C.STREAM_RETRY_ATTEMPTS_MAX)
    age = options.get("maximum_record_age_s")
    age = -1 if age is None else _int("maximum_record_age_s", age, -1, C.STREAM_RECORD_AGE_MAX_S)
    if age != -1 and age < C.STREAM_RECORD_AGE_MIN_S:
        raise InvalidParameterValueException(
            f"maximum_record_age_s must be -1 (infinite) or {C.STREAM_RECORD_AGE_MIN_S}-"
            f"{C.STREAM_RECORD_AGE_MAX_S}, got {age}")
    factor = options.get("parallelization_factor")
    factor = 1 if factor is None else _int("parallelization_factor", factor, 1,
                                            C.PARALLELIZATION_FACTOR_MAX)
    bisect = options.get("bisect_batch_on_function_error")
    if bisect is not None and not isinstance(bisect, bool):
        raise InvalidParameterValueException(
            f"bisect_batch_on_function_error must be a bool, got {bisect!r}")
    record.update({
        "StartingPosition": position, "MaximumRetryAttempts": retries,
        "MaximumRecordAgeInSeconds": age, "ParallelizationFactor": factor,
        "BisectBatchOnFunctionError": bool(bisect),
    })
    return record


def _options(record: dict[str, Any]) -> dict[str, Any]:
    """The Python options a record was validated from."""
    options = {name: record[field] for name, field in _FIELDS.items() if field in record}
    target = record.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    options["on_failure"] = target
    return options


class MappingManager:
    """CRUD of event source mappings; one poller per enabled mapping."""

    def __init__(self, ctx: MappingContext) -> None:
        self._ctx = ctx
        self._pollers: dict[str, Poller] = {}
        self._closed = False
        # Serializes starting and stopping pollers (the API's calls, and with a
        # shared store the thread that follows the other Runtimes' changes).
        self._changing = threading.RLock()
        self._stopped = threading.Event()
        self._follower: threading.Thread | None = None
        for record in ctx.store.list_mappings():
            if record["State"] == "Enabled":
                self._start_stored(record)
        if ctx.store.shared:
            self._follower = threading.Thread(target=self._follow, name="sandbox-mappings",
                                              daemon=True)
            self._follower.start()

    def _start_stored(self, record: dict[str, Any]) -> None:
        try:
            self._start(record)
        except SandboxError as exc:  # its stream was deleted
            log.warning("event source mapping %s not started: %s", record["UUID"],
                        exc.message)

    def _follow(self) -> None:
        """Shared stores: starts, restarts and stops pollers as other Runtimes
        create, update and delete mappings (seen within FOLLOW_INTERVAL_S)."""
        while not self._stopped.wait(FOLLOW_INTERVAL_S):
            # Read under the lock: records read before one of this Runtime's
            # own changes would undo it (restart its poller with the old
            # record) until the next turn.
            with self._changing:
                if self._closed:
                    return
                try:
                    records = {r["UUID"]: r for r in self._ctx.store.list_mappings()}
                except Exception:
                    log.exception("cannot read event source mappings; retrying")
                    continue
                for mapping_id, poller in list(self._pollers.items()):
                    record = records.get(mapping_id)
                    if (record is None or record["State"] != "Enabled"
                            or record["LastModified"] != poller.record["LastModified"]):
                        self._stop(mapping_id)
                for mapping_id, record in records.items():
                    if record["State"] == "Enabled" and mapping_id not in self._pollers:
                        self._start_stored(record)

    def _source(self, arn: str) -> tuple[str, str]:
        """``(kind, name)`` of an existing queue or stream ARN."""
        service, _ = self._ctx.arns.parse(arn, "event_source_arn")
        if service == "sqs":
            return service, self._ctx.queues.resolve(arn)
        if service == "kinesis":
            return service, self._ctx.streams.resolve(arn)
        raise InvalidParameterValueException(
            f"event_source_arn must be a queue or stream ARN, got {arn!r}")

    def _function_name(self, function: str) -> str:
        function = self._ctx.arns.name_of(function, "lambda", "function")
        if self._ctx.lookup(function) is None:
            raise ResourceNotFoundException(
                f"Function not found: {self._ctx.arns.function(function)}")
        return function

    def create(self, function: str, event_source_arn: str, **options: Any) -> str:
        """CreateEventSourceMapping; returns the mapping's UUID.

        Raises:
            InvalidParameterValueException: a bad option, or the function's
                execution role may not read the source or use the on-failure
                destination (Lambda's "The provided execution role does not
                have permissions to call ReceiveMessage on SQS").
        """
        name = self._function_name(function)
        kind, source = self._source(event_source_arn)
        enabled = options.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidParameterValueException(f"enabled must be a bool, got {enabled!r}")
        record = validate(kind, options)
        source_arn = self._ctx.arns.of(kind, source)
        destination = self._destination(kind, options.get("on_failure"))
        self._check_role(name, source_arn, destination)
        mapping_id = str(uuidlib.uuid4())
        record.update({
            "UUID": mapping_id, "FunctionArn": self._ctx.arns.function(name),
            "EventSourceArn": source_arn,
            "State": "Enabled" if enabled else "Disabled",
            "StateTransitionReason": "USER_INITIATED", "LastModified": time.time(),
            "DestinationConfig": destination,
        })
        if kind == "kinesis":
            shards = int(self._ctx.streams.describe(source)["shards"])
            latest = record["StartingPosition"] == "LATEST"
            self._ctx.store.put_checkpoints(mapping_id, {
                (shard, lane): self._ctx.streams.last_sequence(source, shard) if latest else 0
                for shard in range(shards) for lane in range(record["ParallelizationFactor"])})
        with self._changing:
            self._ctx.store.put_mapping(mapping_id, record)
            if enabled:
                self._start(record)
        return mapping_id

    def _check_role(self, function: str, source_arn: str, destination: dict[str, Any]) -> None:
        """Lambda's checks of the function's execution role when a mapping is
        created or updated: it may read the source and send to the on-failure
        destination (InvalidParameterValueException otherwise)."""
        self._ctx.checks.configure_mapping(function, source_arn)
        target = destination.get("OnFailure", {}).get("Destination")
        if target:
            self._ctx.checks.configure_destination(function, target)

    def _destination(self, kind: str, on_failure: str | None) -> dict[str, Any]:
        if on_failure is None:
            return {}
        service, _ = self._ctx.arns.parse(on_failure, "on_failure")
        if kind != "kinesis" or service != "sqs":
            raise InvalidParameterValueException(
                f"on_failure must be a queue ARN (for stream sources), got {on_failure!r}")
        return {"OnFailure": {"Destination": on_failure}}

    def get(self, mapping_id: str) -> dict[str, Any]:
        record = self._ctx.store.get_mapping(mapping_id)
        if record is None:
            raise ResourceNotFoundException(
                f"The resource you requested does not exist. (Service: Lambda; "
                f"EventSourceMapping {mapping_id})")
        return record

    def list(self, function: str | None = None,
             event_source_arn: str | None = None) -> list[dict[str, Any]]:
        records = self._ctx.store.list_mappings()
        if function is not None:
            arn = self._ctx.arns.function(function) if not function.startswith("arn:") \
                else function
            records = [r for r in records if r["FunctionArn"] == arn]
        if event_source_arn is not None:
            records = [r for r in records if r["EventSourceArn"] == event_source_arn]
        return records

    def update(self, mapping_id: str, **changes: Any) -> dict[str, Any]:
        """UpdateEventSourceMapping: the changed options are validated with the rest."""
        unknown = sorted(set(changes) - set(UPDATABLE))
        if unknown:
            raise InvalidParameterValueException(
                f"update_event_source_mapping cannot change {', '.join(unknown)}; "
                f"allowed: {', '.join(UPDATABLE)}")
        old = self.get(mapping_id)
        kind, source = self._source(old["EventSourceArn"])
        options = _options(old)
        function_arn = old["FunctionArn"]
        if changes.get("function") is not None:
            function_arn = self._ctx.arns.function(self._function_name(changes["function"]))
        enabled = changes.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise InvalidParameterValueException(f"enabled must be a bool, got {enabled!r}")
        options.update({k: v for k, v in changes.items()
                        if k not in ("function", "enabled") and v is not None})
        record = validate(kind, options)
        destination = self._destination(kind, options.get("on_failure"))
        self._check_role(self._ctx.arns.parse(function_arn)[1], old["EventSourceArn"],
                         destination)
        record.update({
            "UUID": mapping_id, "FunctionArn": function_arn,
            "EventSourceArn": old["EventSourceArn"],
            "State": old["State"] if enabled is None else ("Enabled" if enabled else "Disabled"),
            "StateTransitionReason": "USER_INITIATED", "LastModified": time.time(),
            "DestinationConfig": destination,
        })
        with self._changing:
            self._stop(mapping_id)
            if (kind == "kinesis"
                    and record["ParallelizationFactor"] != old["ParallelizationFactor"]):
                self._relane(mapping_id, source, old["ParallelizationFactor"],
                             record["ParallelizationFactor"])
            self._ctx.store.put_mapping(mapping_id, record)
            if record["State"] == "Enabled":
                self._start(record)
        return record

    def _relane(self, mapping_id: str, stream: str, old_lanes: int, lanes: int) -> None:
        """A new parallelization factor: every new lane of a shard starts just
        before the shard's earliest record that an old lane had not processed
        (records may repeat, none is lost)."""
        old = self._ctx.store.get_checkpoints(mapping_id)
        shards = int(self._ctx.streams.describe(stream)["shards"])
        positions = {}
        for shard in range(shards):
            start = self._ctx.streams.last_sequence(stream, shard)
            for lane in range(old_lanes):
                unread = self._ctx.streams.read(stream, shard, old.get((shard, lane), 0), 1,
                                                old_lanes, lane)
                if unread:
                    start = min(start, unread[0].sequence - 1)
            positions.update({(shard, lane): start for lane in range(lanes)})
        self._ctx.store.put_checkpoints(mapping_id, positions)

    def delete(self, mapping_id: str) -> dict[str, Any]:
        """Stops the mapping's pollers (waiting for a batch in flight, at most
        STOP_WAIT_S) and removes it; returns its record with State "Deleting"."""
        record = self.get(mapping_id)
        with self._changing:
            self._stop(mapping_id)
            self._ctx.store.delete_mapping(mapping_id)
        return dict(record, State="Deleting")

    def _start(self, record: dict[str, Any]) -> None:
        if self._closed:
            return
        # A queue poller waits for a deleted queue to come back (as Lambda's
        # keeps polling its ARN); a stream's shards must exist to start.
        kind, source = self._ctx.arns.parse(record["EventSourceArn"])
        if kind == "kinesis":
            source = self._ctx.streams.resolve(source)
        _, function = self._ctx.arns.parse(record["FunctionArn"])
        poller_class = QueuePoller if kind == "sqs" else StreamPoller
        poller = poller_class(self._ctx, record, function, source)
        self._pollers[record["UUID"]] = poller
        poller.start()

    def _stop(self, mapping_id: str) -> None:
        poller = self._pollers.pop(mapping_id, None)
        if poller is not None:
            poller.stop()
            self._wake()
            poller.join(STOP_WAIT_S)

    def _wake(self) -> None:
        self._ctx.queues.notify()
        self._ctx.streams.notify()
        self._ctx.limiter.wake()

    def idle(self) -> bool:
        """No batch in flight and nothing left to read, for every enabled mapping
        (not while one is being restarted: its mapping has no poller then)."""
        with self._changing:
            pollers = list(self._pollers.values())
        return all(poller.idle() for poller in pollers)

    def stop(self) -> None:
        self._stopped.set()
        with self._changing:  # no poller starts after this
            self._closed = True
            for poller in list(self._pollers.values()):
                poller.stop()
        self._wake()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        if self._follower is not None:
            self._follower.join(timeout_s)
        for poller in list(self._pollers.values()):
            poller.join(max(deadline - time.monotonic(), 0.0))
