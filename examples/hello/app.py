"""A greeting function: reads its event, an environment variable and the context."""

import os

GREETING = os.environ.get("GREETING", "hello")


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"{GREETING}, {name}")
    return {
        "message": f"{GREETING}, {name}!",
        "function": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
