"""Lambda API requests of the invocation model → Runtime calls, and the
Runtime's records → Lambda's response shapes.

The parameters are those of botocore's service model of Lambda
(``botocore/data/lambda/2015-03-31/service-2.json``): what boto3 sends for
PutFunctionConcurrency, Put/UpdateFunctionEventInvokeConfig and
Create/UpdateEventSourceMapping, and what it parses from
FunctionEventInvokeConfig and EventSourceMappingConfiguration. The HTTP API
(:mod:`.operations`) and SAM templates (:mod:`sandbox.sam`) share them, so a
template's ``Events`` make the same mappings boto3 would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameterValueException

# CreateEventSourceMapping / UpdateEventSourceMapping parameter → the
# Runtime's option (DestinationConfig.OnFailure.Destination → on_failure).
MAPPING_OPTIONS = {
    "BatchSize": "batch_size",
    "MaximumBatchingWindowInSeconds": "maximum_batching_window_s",
    "FunctionResponseTypes": "function_response_types",
    "StartingPosition": "starting_position",
    "BisectBatchOnFunctionError": "bisect_batch_on_function_error",
    "MaximumRetryAttempts": "maximum_retry_attempts",
    "MaximumRecordAgeInSeconds": "maximum_record_age_s",
    "ParallelizationFactor": "parallelization_factor",
    "Enabled": "enabled",
}
# StartingPosition cannot change after creation (UpdateEventSourceMapping has no such member).
UPDATE_MAPPING_OPTIONS = {k: v for k, v in MAPPING_OPTIONS.items() if k != "StartingPosition"}
# Members of EventSourceMappingConfiguration this runtime fills in.
MAPPING_SHAPE = ("UUID", "StartingPosition", "BatchSize", "MaximumBatchingWindowInSeconds",
                 "ParallelizationFactor", "EventSourceArn", "FunctionArn", "LastModified",
                 "LastProcessingResult", "State", "StateTransitionReason", "DestinationConfig",
                 "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError",
                 "MaximumRetryAttempts", "FunctionResponseTypes", "EventSourceMappingArn")
INVOKE_CONFIG_SHAPE = ("LastModified", "FunctionArn", "MaximumRetryAttempts",
                       "MaximumEventAgeInSeconds", "DestinationConfig")


def _present(value: Any) -> bool:
    return value not in (None, [], {}, "")


def mapping_arguments(params: Mapping[str, Any], *, update: bool = False
                      ) -> tuple[dict[str, Any], list[str]]:
    """The Runtime's options for a Create/UpdateEventSourceMapping request
    (without FunctionName, EventSourceArn and UUID).

    Returns:
        The options, and the names of the given parameters this runtime does
        not support (FilterCriteria, ScalingConfig, an OnSuccess destination,
        ...), for the caller to refuse or warn about.
    """
    known = UPDATE_MAPPING_OPTIONS if update else MAPPING_OPTIONS
    options = {known[key]: value for key, value in params.items() if key in known}
    unsupported = sorted(key for key, value in params.items()
                         if key not in known and key not in ("FunctionName", "EventSourceArn",
                                                             "UUID", "DestinationConfig")
                         and _present(value))
    destinations = params.get("DestinationConfig") or {}
    if not isinstance(destinations, Mapping):
        raise InvalidParameterValueException("DestinationConfig must be an object")
    for outcome, target in destinations.items():
        if outcome == "OnFailure" and isinstance(target, Mapping):
            options["on_failure"] = target.get("Destination") or None
        elif _present(target):
            unsupported.append(f"DestinationConfig.{outcome}")
    return options, unsupported


def mapping_shape(record: Mapping[str, Any], region: str, account_id: str) -> dict[str, Any]:
    """A mapping record as Lambda's EventSourceMappingConfiguration."""
    shaped = {key: record[key] for key in MAPPING_SHAPE if key in record}
    shaped["EventSourceMappingArn"] = (
        f"arn:aws:lambda:{region}:{account_id}:event-source-mapping:{record['UUID']}")
    shaped.setdefault("LastProcessingResult", "No records processed")
    return shaped


def invoke_config_arguments(params: Mapping[str, Any],
                            current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Runtime's put_function_event_invoke_config arguments for a
    Put (``current`` None: omitted settings take their defaults) or Update
    (``current``: the stored configuration, whose settings the request's
    replace one by one) FunctionEventInvokeConfig request.

    Raises:
        InvalidParameterValueException: DestinationConfig is not an object,
            or names an outcome other than OnSuccess and OnFailure.
    """
    base = dict(current or {})
    destinations = {outcome: (base.get("DestinationConfig") or {}).get(outcome, {})
                    .get("Destination") for outcome in ("OnSuccess", "OnFailure")}
    given = params.get("DestinationConfig")
    if given is not None:
        if not isinstance(given, Mapping):
            raise InvalidParameterValueException("DestinationConfig must be an object")
        unknown = sorted(set(given) - {"OnSuccess", "OnFailure"})
        if unknown:
            raise InvalidParameterValueException(
                f"DestinationConfig may only have OnSuccess and OnFailure, got "
                f"{', '.join(unknown)}")
        for outcome, target in given.items():
            destinations[outcome] = (target or {}).get("Destination") or None
    return {
        "maximum_retry_attempts": params.get("MaximumRetryAttempts",
                                             base.get("MaximumRetryAttempts")),
        "maximum_event_age_s": params.get("MaximumEventAgeInSeconds",
                                          base.get("MaximumEventAgeInSeconds")),
        "on_success": destinations["OnSuccess"],
        "on_failure": destinations["OnFailure"],
    }


def invoke_config_shape(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration as Lambda's FunctionEventInvokeConfig."""
    return {key: record[key] for key in INVOKE_CONFIG_SHAPE if key in record}


def concurrency_argument(params: Mapping[str, Any]) -> int:
    """PutFunctionConcurrency's ReservedConcurrentExecutions (required).

    Raises:
        InvalidParameterValueException: missing or not an integer.
    """
    value = params.get("ReservedConcurrentExecutions")
    if isinstance(value, str) and value.isdigit():  # a template's parameter
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterValueException(
            f"ReservedConcurrentExecutions is required and must be an integer, got {value!r}")
    return value
