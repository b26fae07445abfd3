"""Reading CloudFormation/SAM templates: YAML (or JSON) with the short-form
intrinsic tags (``!Ref``, ``!GetAtt``, ``!Sub``, ...) turned into their
long forms (``{"Ref": ...}``, ``{"Fn::GetAtt": [...]}``), as CloudFormation
reads them."""

from __future__ import annotations

import os
from typing import Any

import yaml

from ..errors import InvalidParameterValueException

# Short-form tags and the long-form key each stands for.
_FUNCTIONS = {
    "Ref": "Ref", "Condition": "Condition", "GetAtt": "Fn::GetAtt", "Sub": "Fn::Sub",
    "Join": "Fn::Join", "Select": "Fn::Select", "Split": "Fn::Split", "If": "Fn::If",
    "Equals": "Fn::Equals", "Not": "Fn::Not", "And": "Fn::And", "Or": "Fn::Or",
    "FindInMap": "Fn::FindInMap", "Base64": "Fn::Base64", "GetAZs": "Fn::GetAZs",
    "ImportValue": "Fn::ImportValue", "Cidr": "Fn::Cidr",
}
TEMPLATE_MAX_BYTES = 1024 * 1024  # CloudFormation's limit for a template body from S3


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation's short-form tags (never arbitrary objects)."""


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = _FUNCTIONS.get(suffix)
    if key is None:
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown CloudFormation tag !{suffix}", node.start_mark)
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if key == "Fn::GetAtt":  # !GetAtt Resource.Attribute
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {key: value}


_TemplateLoader.add_multi_constructor("!", _construct)


def read_template(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The template at ``path`` as plain data.

    Raises:
        InvalidParameterValueException: unreadable, too large, not YAML/JSON,
            or not a mapping with ``Resources``.
    """
    try:
        with open(path, "rb") as file:
            text = file.read(TEMPLATE_MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidParameterValueException(
            f"cannot read template {os.fspath(path)!r}: {exc.strerror}") from None
    if len(text) > TEMPLATE_MAX_BYTES:
        raise InvalidParameterValueException(
            f"template {os.fspath(path)!r} is over {TEMPLATE_MAX_BYTES} bytes")
    try:
        document = yaml.load(text, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise InvalidParameterValueException(
            f"template {os.fspath(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise InvalidParameterValueException(
            f"template {os.fspath(path)!r} must be a mapping with a Resources section")
    return document
