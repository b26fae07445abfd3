"""Lambda's REST API over a Runtime (boto3 and the AWS CLI work unmodified),
with SigV4 authentication and Prometheus metrics.

- :mod:`.server`: the aiohttp server, its thread pool and graceful shutdown;
- :mod:`.routes`: Lambda's paths → operations (and those not built yet);
- :mod:`.operations`: the operations over a Runtime, in Lambda's shapes;
- :mod:`.lambda_requests`: the invocation model's request parameters → Runtime
  calls (shared with SAM templates), and its records → response shapes;
- :mod:`.sigv4`, :mod:`.credentials`, :mod:`.access`: who is calling, and may they;
- :mod:`.deployment`: zip packages and local code directories;
- :mod:`.metrics`: ``/metrics`` (with the async backlog and mapping lag gauges).
"""

from .credentials import CredentialStore, default_credentials, read_credentials_file
from .server import LambdaServer, ServerThread, serve_forever

__all__ = ["CredentialStore", "LambdaServer", "ServerThread", "default_credentials",
           "read_credentials_file", "serve_forever"]
