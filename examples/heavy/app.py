"""A handler whose INIT imports a heavier stdlib set, as real functions do."""

import asyncio  # noqa: F401
import decimal
import email.message  # noqa: F401
import http.client  # noqa: F401
import json
import ssl  # noqa: F401


def handler(event, context):
    return json.loads(json.dumps({"total": str(decimal.Decimal("1.10") * 3)}))
