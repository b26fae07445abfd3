"""The smallest handler: measures the runtime's own overhead."""


def handler(event, context):
    return None
