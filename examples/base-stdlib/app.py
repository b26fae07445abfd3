"""A handler whose INIT imports only modules the base zygote already holds
(sandbox.environments.tree.DEFAULT_PRELOAD): its zygote forks from the base,
no tree node is needed."""

import datetime
import decimal
import json
import uuid


def handler(event, context):
    document = {"id": str(uuid.uuid4()), "total": str(decimal.Decimal("1.10") * 3),
                "at": datetime.datetime.now(datetime.UTC).isoformat()}
    return json.loads(json.dumps(document))
