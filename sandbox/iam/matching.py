"""Wildcard matching for IAM actions, resources and ARNs.

IAM patterns know two wildcards only: ``*`` (any run of characters, empty
included) and ``?`` (exactly one character). Every other character is literal:
a ``.``, ``+``, ``[`` or ``\\`` in a policy matches itself, never a regular
expression construct.
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str, ignore_case: bool) -> re.Pattern[str] | None:
    """The compiled pattern, or None when it holds no wildcard (compare as text)."""
    if "*" not in pattern and "?" not in pattern:
        return None
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(parts), flags)


def wildcard_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """Whether ``value`` matches ``pattern`` whole, with ``*`` and ``?`` wildcards."""
    compiled = _compile(pattern, ignore_case)
    if compiled is None:
        return pattern.casefold() == value.casefold() if ignore_case else pattern == value
    return compiled.fullmatch(value) is not None


def action_matches(pattern: str, action: str) -> bool:
    """IAM actions match case-insensitively: ``Lambda:Invoke*`` covers
    ``lambda:InvokeFunction``."""
    return wildcard_match(pattern, action, ignore_case=True)


# An ARN has six colon-separated parts; the last (the resource) may hold colons.
ARN_PARTS = 6


def arn_matches(pattern: str, arn: str) -> bool:
    """ArnLike/ArnEquals and the Resource element: each of the six
    colon-delimited parts is matched on its own, so a wildcard never spans a
    colon between parts (it may within the resource part). ``*`` alone matches
    anything."""
    if pattern == "*":
        return True
    pattern_parts = pattern.split(":", ARN_PARTS - 1)
    arn_parts = arn.split(":", ARN_PARTS - 1)
    if len(arn_parts) != ARN_PARTS or len(pattern_parts) != ARN_PARTS:
        return False
    return all(wildcard_match(p, v) for p, v in zip(pattern_parts, arn_parts, strict=True))


@functools.lru_cache(maxsize=4096)
def _compile_resource(pattern: str) -> re.Pattern[str]:
    """Within a segment ``*`` and ``?`` stop at colons, but a ``*`` that ends a
    segment may run on across them (IAM User Guide, "Using wildcards in
    resource ARNs"): ``arn:aws:lambda:*`` covers every Lambda ARN."""
    parts = []
    for index, char in enumerate(pattern):
        if char == "*":
            last_of_segment = index + 1 == len(pattern) or pattern[index + 1] == ":"
            parts.append(".*" if last_of_segment else "[^:]*")
        elif char == "?":
            parts.append("[^:]")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def resource_matches(pattern: str, resource: str) -> bool:
    """The Resource element: ``*``, or an ARN pattern (see _compile_resource).

    A resource that is not an ARN (Lambda accepts a bare function name in a
    few places) is matched as plain text.
    """
    if pattern == "*":
        return True
    if resource.startswith("arn:"):
        return _compile_resource(pattern).fullmatch(resource) is not None
    return wildcard_match(pattern, resource)
