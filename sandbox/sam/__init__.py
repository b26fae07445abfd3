"""SAM templates: :func:`apply_template` defines a template's functions and
roles in a Runtime (``Runtime.from_template``, ``sandbox serve --template``)."""

from .loader import read_template
from .template import TemplateResult, TemplateWarning, apply_template

__all__ = ["TemplateResult", "TemplateWarning", "apply_template", "read_template"]
