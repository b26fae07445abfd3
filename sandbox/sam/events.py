"""SAM's asynchronous-model properties as Lambda API requests.

``Events`` of type SQS and Kinesis become CreateEventSourceMapping requests,
``EventInvokeConfig`` a PutFunctionEventInvokeConfig request and
``ReservedConcurrentExecutions`` a PutFunctionConcurrency request, each in the
shape of botocore's service model (the parameters boto3 would send). The
template translator records them in ``TemplateResult.requests`` and applies
each with :mod:`sandbox.http.lambda_requests`, as the HTTP API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# SAM property → CreateEventSourceMapping parameter, per event type (the SAM
# specification's SQS and Kinesis event sources; same names in both).
_SQS = ("BatchSize", "Enabled", "FilterCriteria", "FunctionResponseTypes",
        "MaximumBatchingWindowInSeconds", "ScalingConfig")
_KINESIS = ("BatchSize", "BisectBatchOnFunctionError", "DestinationConfig", "Enabled",
            "FilterCriteria", "FunctionResponseTypes", "MaximumBatchingWindowInSeconds",
            "MaximumRecordAgeInSeconds", "MaximumRetryAttempts", "ParallelizationFactor",
            "StartingPosition", "StartingPositionTimestamp", "TumblingWindowInSeconds")
EVENT_SOURCES = {"SQS": ("Queue", _SQS), "Kinesis": ("Stream", _KINESIS)}
_INVOKE_CONFIG = ("MaximumEventAgeInSeconds", "MaximumRetryAttempts")

Request = tuple[str, dict[str, Any]]  # (operation name, parameters)


def event_requests(logical: str, function: str, events: Any) -> tuple[list[Request], list[str]]:
    """CreateEventSourceMapping requests for a function's ``Events``.

    Returns:
        The requests, and warnings naming events or properties not carried over.
    """
    requests: list[Request] = []
    warnings: list[str] = []
    if not isinstance(events, Mapping):
        return requests, [f"function {logical}: Events must be a mapping of named events"]
    for event_name, event in events.items():
        kind = event.get("Type") if isinstance(event, Mapping) else None
        if kind not in EVENT_SOURCES:
            warnings.append(f"function {logical}: event {event_name} of type {kind} is not "
                            "supported (only SQS and Kinesis) and was ignored")
            continue
        source_key, allowed = EVENT_SOURCES[kind]
        properties = event.get("Properties") or {}
        source = properties.get(source_key)
        if not isinstance(source, str):
            warnings.append(f"function {logical}: event {event_name} needs {source_key} "
                            "(an ARN) and was ignored")
            continue
        params: dict[str, Any] = {"FunctionName": function, "EventSourceArn": source}
        params.update({key: properties[key] for key in allowed if key in properties})
        if kind == "Kinesis" and "StartingPosition" not in params:
            warnings.append(f"function {logical}: event {event_name} needs StartingPosition "
                            "(Kinesis) and was ignored")
            continue
        ignored = sorted(set(properties) - set(allowed) - {source_key})
        if ignored:
            warnings.append(f"function {logical}: event {event_name}: unsupported properties "
                            f"ignored: {', '.join(ignored)}")
        requests.append(("CreateEventSourceMapping", params))
    return requests, warnings


def invoke_config_request(logical: str, function: str, config: Any
                          ) -> tuple[list[Request], list[str]]:
    """A PutFunctionEventInvokeConfig request for ``EventInvokeConfig``."""
    if not isinstance(config, Mapping):
        return [], [f"function {logical}: EventInvokeConfig must be a mapping"]
    params: dict[str, Any] = {"FunctionName": function}
    params.update({key: config[key] for key in _INVOKE_CONFIG if key in config})
    warnings = []
    destinations = config.get("DestinationConfig") or {}
    converted = {}
    for outcome in ("OnSuccess", "OnFailure"):
        target = destinations.get(outcome)
        if target is None:
            continue
        # SAM's Type (SQS, SNS, Lambda, EventBridge) only tells SAM which policy to
        # add; Lambda's API takes the destination's ARN alone.
        if not isinstance(target, Mapping) or not isinstance(target.get("Destination"), str):
            warnings.append(f"function {logical}: EventInvokeConfig.DestinationConfig."
                            f"{outcome} needs Destination (an ARN) and was ignored")
            continue
        converted[outcome] = {"Destination": target["Destination"]}
    if converted:
        params["DestinationConfig"] = converted
    ignored = sorted(set(config) - set(_INVOKE_CONFIG) - {"DestinationConfig"})
    if ignored:
        warnings.append(f"function {logical}: EventInvokeConfig: unsupported properties "
                        f"ignored: {', '.join(ignored)}")
    return [("PutFunctionEventInvokeConfig", params)], warnings


def concurrency_request(function: str, value: Any) -> list[Request]:
    return [("PutFunctionConcurrency", {"FunctionName": function,
                                        "ReservedConcurrentExecutions": value})]
