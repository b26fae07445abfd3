"""Invocation models over the per-function pools.

- ``sync``: RequestResponse; the other models deliver through it.
- ``asynchronous``: Event invokes: durable queue, retries, event age,
  destinations (``destinations``), dead-letter queue.
- ``mappings`` and ``pollers``: event source mappings over queues and streams.
- ``concurrency``: the Runtime-wide limit and reserved concurrency.
"""
