"""Invocation models: synchronous (RequestResponse) here; asynchronous and
polling build on the same per-function pools."""
