"""The ``--mix`` of ``sandbox stress``: ``kind:weight`` pairs, e.g.
``noop:70,cpu:10,alloc:10,crash:5,timeout:5`` (weights are relative)."""

from __future__ import annotations

from ..errors import InvalidParameterValueException
from .handlers import KINDS

EXAMPLE = "noop:70,cpu:10,alloc:10,crash:5,timeout:5"


def parse_mix(text: str) -> dict[str, int]:
    """Weights by kind, in the order given; kinds with weight 0 are left out.

    Raises:
        InvalidParameterValueException: empty, a pair without ':', an unknown
            kind, a weight that is not a non-negative integer, a kind given
            twice, or all weights 0. The message names the offending part.
    """
    if not text or not text.strip():
        raise InvalidParameterValueException(f"mix is empty; expected kind:weight,... "
                                             f"e.g. {EXAMPLE}")
    weights: dict[str, int] = {}
    for item in text.split(","):
        kind, sep, weight_text = item.strip().partition(":")
        kind = kind.strip()
        if not sep:
            raise InvalidParameterValueException(
                f"mix item {item.strip()!r} is not kind:weight (e.g. {EXAMPLE})")
        if kind not in KINDS:
            raise InvalidParameterValueException(
                f"mix kind {kind!r} is unknown; known kinds: {', '.join(KINDS)}")
        if kind in weights:
            raise InvalidParameterValueException(f"mix kind {kind!r} is given twice")
        try:
            weight = int(weight_text.strip())
        except ValueError:
            raise InvalidParameterValueException(
                f"mix weight of {kind!r} must be a whole number, got {weight_text.strip()!r}"
            ) from None
        if weight < 0:
            raise InvalidParameterValueException(
                f"mix weight of {kind!r} must not be negative, got {weight}")
        weights[kind] = weight
    weights = {kind: weight for kind, weight in weights.items() if weight}
    if not weights:
        raise InvalidParameterValueException("mix weights are all 0: nothing would run")
    return weights
