"""A handler whose INIT imports third-party packages of this environment:
PyYAML and rich's console (together about as costly to import as the
popular libraries of the SOCK paper's measurements). Declare them in
``preload`` and a zygote-tree node holds them."""

import rich.console  # noqa: F401
import yaml


def handler(event, context):
    document = event.get("yaml", "a: 1") if isinstance(event, dict) else "a: 1"
    return yaml.safe_load(document)
