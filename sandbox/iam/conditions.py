"""The Condition element: operators, IfExists, set qualifiers, missing keys.

Rules, as the IAM User Guide ("IAM JSON policy elements: Condition operators"
and "Single-valued vs. multivalued context keys") states them:

- several values for one key are ORed; several keys, and several operators,
  are ANDed (the caller ANDs the conditions this module returns);
- condition key names match case-insensitively, values as the operator says;
- a key missing from the request makes the condition false, except for the
  negated operators (``StringNotEquals``, ``ArnNotLike``, ``NotIpAddress``, ...),
  which are then true, ``...IfExists``, which is then true, and ``Null``;
- ``ForAnyValue:`` is true when at least one request value passes (false for a
  missing or empty key); ``ForAllValues:`` when every request value passes
  (true for a missing or empty key). With a negated operator, a request value
  passes when it matches none of the policy's values;
- a negated operator without a set qualifier is true when the request value
  matches none of the policy's values.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import MalformedPolicyDocumentException
from .matching import arn_matches, wildcard_match

# The request's context: lower-cased key -> a value or a list of values.
Context = Mapping[str, Any]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return float(value)


def _date(value: Any) -> datetime.datetime:
    """ISO 8601 (with or without zone; UTC if none) or epoch seconds."""
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
    else:
        text = str(value)
        try:
            moment = datetime.datetime.fromtimestamp(float(text), datetime.UTC)
        except ValueError:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


def _bool(value: Any) -> str:
    text = _text(value).lower()
    if text not in ("true", "false"):
        raise ValueError(f"{value!r} is not true or false")
    return text


def _binary(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return base64.b64decode(str(value), validate=True)


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(str(value), strict=False)


def _address(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(str(value))


@dataclasses.dataclass(frozen=True)
class _Operator:
    """A base operator: how to read policy and request values and compare them."""

    policy_value: Callable[[Any], Any]
    request_value: Callable[[Any], Any]
    test: Callable[[Any, Any], bool]  # (policy value, request value) -> matches
    negated: bool = False


def _string(test: Callable[[str, str], bool], negated: bool = False) -> _Operator:
    return _Operator(_text, _text, test, negated)


def _numeric(test: Callable[[float, float], bool], negated: bool = False) -> _Operator:
    return _Operator(_number, _number, test, negated)


def _dated(test: Callable[[datetime.datetime, datetime.datetime], bool],
           negated: bool = False) -> _Operator:
    return _Operator(_date, _date, test, negated)


def _arn(negated: bool = False) -> _Operator:
    return _Operator(_text, _text, arn_matches, negated)


def _equal(p: Any, r: Any) -> bool:
    return bool(p == r)


def _fold_equal(p: str, r: str) -> bool:
    return p.casefold() == r.casefold()


def _like(p: str, r: str) -> bool:
    return wildcard_match(p, r)


def _in_network(p: Any, r: Any) -> bool:
    return r.version == p.version and r in p


OPERATORS: dict[str, _Operator] = {
    "StringEquals": _string(_equal),
    "StringNotEquals": _string(_equal, negated=True),
    "StringEqualsIgnoreCase": _string(_fold_equal),
    "StringNotEqualsIgnoreCase": _string(_fold_equal, negated=True),
    "StringLike": _string(_like),
    "StringNotLike": _string(_like, negated=True),
    "NumericEquals": _numeric(_equal),
    "NumericNotEquals": _numeric(_equal, negated=True),
    "NumericLessThan": _numeric(lambda p, r: r < p),
    "NumericLessThanEquals": _numeric(lambda p, r: r <= p),
    "NumericGreaterThan": _numeric(lambda p, r: r > p),
    "NumericGreaterThanEquals": _numeric(lambda p, r: r >= p),
    "DateEquals": _dated(_equal),
    "DateNotEquals": _dated(_equal, negated=True),
    "DateLessThan": _dated(lambda p, r: r < p),
    "DateLessThanEquals": _dated(lambda p, r: r <= p),
    "DateGreaterThan": _dated(lambda p, r: r > p),
    "DateGreaterThanEquals": _dated(lambda p, r: r >= p),
    "Bool": _Operator(_bool, _bool, _equal),
    "BinaryEquals": _Operator(_binary, _binary, _equal),
    "IpAddress": _Operator(_network, _address, _in_network),
    "NotIpAddress": _Operator(_network, _address, _in_network, negated=True),
    "ArnEquals": _arn(),
    "ArnLike": _arn(),
    "ArnNotEquals": _arn(negated=True),
    "ArnNotLike": _arn(negated=True),
}
NULL = "Null"
IF_EXISTS = "IfExists"
FOR_ANY_VALUE = "ForAnyValue"
FOR_ALL_VALUES = "ForAllValues"


@dataclasses.dataclass(frozen=True)
class Condition:
    """One operator applied to one key with its values (ORed)."""

    operator: str  # as written, e.g. "ForAnyValue:StringLikeIfExists"
    key: str  # as written; looked up lower-cased
    values: tuple[Any, ...]  # parsed by the base operator
    base: str  # "StringLike", or "Null"
    qualifier: str | None  # None, "ForAnyValue" or "ForAllValues"
    if_exists: bool

    def holds(self, context: Context) -> bool:
        """Whether the condition is true for a request's context."""
        raw = context.get(self.key.lower())
        present = raw is not None and raw != []
        if self.base == NULL:
            # {"Null": {"key": "true"}} asks "is the key absent?"
            return any((value == "true") != present for value in self.values)
        if not present:
            if self.if_exists:
                return True
            if self.qualifier == FOR_ALL_VALUES:
                return True
            if self.qualifier == FOR_ANY_VALUE:
                return False
            return OPERATORS[self.base].negated
        operator = OPERATORS[self.base]
        requested = raw if isinstance(raw, list | tuple) else [raw]
        passes = [self._passes(operator, value) for value in requested]
        if self.qualifier == FOR_ALL_VALUES:
            return all(passes)
        if self.qualifier == FOR_ANY_VALUE:
            return any(passes)
        return all(passes) if operator.negated else any(passes)

    def _passes(self, operator: _Operator, raw: Any) -> bool:
        """One request value against the policy values: matches any of them
        (positive operator) or none of them (negated)."""
        try:
            value = operator.request_value(raw)
        except (TypeError, ValueError, binascii.Error):
            # A request value the operator cannot read matches nothing.
            return operator.negated
        matched = False
        for policy_value in self.values:
            try:
                if operator.test(policy_value, value):
                    matched = True
                    break
            except TypeError:  # e.g. naive vs aware dates, IPv4 vs IPv6
                continue
        return not matched if operator.negated else matched


def parse_conditions(block: Any, where: str) -> tuple[Condition, ...]:
    """Parses a statement's ``Condition`` element.

    Raises:
        MalformedPolicyDocumentException: naming the operator, key or value.
    """
    if not isinstance(block, Mapping) or not block:
        raise MalformedPolicyDocumentException(
            f"{where}: Condition must be a non-empty object of operators")
    conditions = []
    for operator_name, keys in block.items():
        base, qualifier, if_exists = _split_operator(operator_name, where)
        if not isinstance(keys, Mapping) or not keys:
            raise MalformedPolicyDocumentException(
                f"{where}: Condition {operator_name} must be an object of condition keys")
        for key, values in keys.items():
            conditions.append(_parse_one(operator_name, base, qualifier, if_exists, key,
                                         values, where))
    return tuple(conditions)


def _split_operator(name: Any, where: str) -> tuple[str, str | None, bool]:
    if not isinstance(name, str):
        raise MalformedPolicyDocumentException(f"{where}: Invalid Condition type : {name!r}")
    qualifier = None
    base = name
    prefix, colon, rest = name.partition(":")
    if colon:
        if prefix not in (FOR_ANY_VALUE, FOR_ALL_VALUES):
            raise MalformedPolicyDocumentException(
                f"{where}: Invalid Condition type : {name} (the set qualifier must be "
                f"{FOR_ANY_VALUE} or {FOR_ALL_VALUES})")
        qualifier, base = prefix, rest
    if_exists = base.endswith(IF_EXISTS) and base != IF_EXISTS
    if if_exists:
        base = base[: -len(IF_EXISTS)]
    if base == NULL:
        if if_exists or qualifier:
            raise MalformedPolicyDocumentException(
                f"{where}: Invalid Condition type : {name} (Null takes neither IfExists "
                f"nor a set qualifier)")
    elif base not in OPERATORS:
        raise MalformedPolicyDocumentException(f"{where}: Invalid Condition type : {name}")
    return base, qualifier, if_exists


def _parse_one(operator_name: str, base: str, qualifier: str | None, if_exists: bool,
               key: Any, values: Any, where: str) -> Condition:
    if not isinstance(key, str) or not key:
        raise MalformedPolicyDocumentException(
            f"{where}: Condition {operator_name} has an invalid key {key!r}")
    if ":" not in key:
        raise MalformedPolicyDocumentException(
            f"{where}: Condition key {key} must be prefaced by a vendor, e.g. aws:SourceArn")
    listed = list(values) if isinstance(values, list) else [values]
    if not listed:
        raise MalformedPolicyDocumentException(
            f"{where}: Condition {operator_name} {key} has no values")
    parsed = []
    for value in listed:
        if not isinstance(value, str | int | float | bool):
            raise MalformedPolicyDocumentException(
                f"{where}: Condition {operator_name} {key} value {value!r} must be a "
                f"string, number or boolean")
        try:
            if base == NULL:
                parsed.append(_bool(value))
            else:
                parsed.append(OPERATORS[base].policy_value(value))
        except (TypeError, ValueError, binascii.Error) as exc:
            raise MalformedPolicyDocumentException(
                f"{where}: Condition {operator_name} {key} value {value!r} is not valid "
                f"for {base}: {exc}") from None
    return Condition(operator_name, key, tuple(parsed), base, qualifier, if_exists)
