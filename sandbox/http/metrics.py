"""Prometheus metrics of a served Runtime (``GET /metrics``).

Counters and histograms are recorded by the invocation paths that go through
:meth:`Metrics.record_invocation` (the HTTP API's Invoke; the asynchronous
queue and event source pollers call the same method once they exist); gauges
are read from the Runtime at scrape time. Each :class:`Metrics` has its own
registry, so several servers in one process do not mix their figures.

Asynchronous invocation and event source mappings: the async queue's depth
and oldest event age by function and each mapping's lag (waiting messages or
records, and the age of the oldest) are gauges read from the Runtime
(``async_backlog()``, ``mapping_lag()``) by :func:`invocation_model_gauges`, a
source added with :meth:`Metrics.add_gauge_source`. The invocations that
asynchronous delivery and mappings make reach :meth:`Metrics.record_delivery`
through ``Runtime.add_invocation_listener``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a warm sub-millisecond invoke to Lambda's 900 s maximum.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

GaugeSource = Callable[[], Iterable[Metric]]


class _RuntimeGauges(Collector):
    """Concurrent executions and environments by state, read at scrape time."""

    def __init__(self, runtime: Any, sources: list[GaugeSource]) -> None:
        self._runtime = runtime
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        concurrent = GaugeMetricFamily(
            "sandbox_concurrent_executions",
            "Invocations running now, across all functions")
        concurrent.add_metric([], float(self._runtime.concurrent_executions))
        yield concurrent
        environments = GaugeMetricFamily(
            "sandbox_environments", "Live execution environments by function and state",
            labels=["function", "state"])
        for config in self._runtime.list_functions():
            name = config["FunctionName"]
            try:
                stats = self._runtime.stats(name)
            except Exception:  # noqa: BLE001 - deleted between list and stats
                continue
            environments.add_metric([name, "idle"], float(stats["idle"]))
            environments.add_metric([name, "busy"], float(stats["busy"]))
        yield environments
        for source in list(self._sources):
            yield from source()


class Metrics:
    """The metrics of one Runtime."""

    def __init__(self, runtime: Any) -> None:
        self.registry = CollectorRegistry()
        self._sources: list[GaugeSource] = []
        self._lock = threading.Lock()
        self.invocations = Counter(
            "sandbox_invocations", "Invocations accepted, by function and invocation type",
            ["function", "type"], registry=self.registry)
        self.errors = Counter(
            "sandbox_invocation_errors",
            "Failed invocations: function errors (error=Unhandled) and refused requests "
            "(error=<Lambda error code>)", ["function", "type", "error"], registry=self.registry)
        self.throttles = Counter(
            "sandbox_throttles", "Invocations refused by a concurrency limit",
            ["function", "type"], registry=self.registry)
        self.duration = Histogram(
            "sandbox_invocation_duration_seconds", "Handler duration by start kind",
            ["function", "start"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.init_duration = Histogram(
            "sandbox_init_duration_seconds",
            "INIT duration of new environments by start kind (cold, snapshot)",
            ["function", "start"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.deliveries = Counter(
            "sandbox_deliveries",
            "Invocations made by asynchronous delivery (source=async) and event source "
            "mappings (source=mapping), by outcome (Success, or the function error)",
            ["function", "source", "outcome"], registry=self.registry)
        self.registry.register(_RuntimeGauges(runtime, self._sources))
        self.add_gauge_source(invocation_model_gauges(runtime))

    def add_gauge_source(self, source: GaugeSource) -> None:
        """Adds metric families read at every scrape (see the module docstring)."""
        with self._lock:
            self._sources.append(source)

    def record_invocation(self, function: str, invocation_type: str,
                          report: dict[str, Any] | None = None,
                          function_error: str | None = None,
                          error_code: str | None = None) -> None:
        """Counts one invocation: its outcome and, when it ran, its durations.

        Args:
            report: the InvokeResult's report (None when nothing ran).
            function_error: "Unhandled" when the function failed.
            error_code: the Lambda error code when the request was refused
                (TooManyRequestsException counts as a throttle too).
        """
        self.invocations.labels(function, invocation_type).inc()
        if error_code is not None:
            self.errors.labels(function, invocation_type, error_code).inc()
            if error_code == "TooManyRequestsException":
                self.throttles.labels(function, invocation_type).inc()
        elif function_error is not None:
            self.errors.labels(function, invocation_type, function_error).inc()
        if report:
            self._observe_durations(function, report)

    def record_delivery(self, function: str, source: str, result: Any) -> None:
        """An invocation listener (``Runtime.add_invocation_listener``): counts
        one invocation made by asynchronous delivery or a mapping, and its durations."""
        self.deliveries.labels(function, source, result.function_error or "Success").inc()
        self._observe_durations(function, result.report or {})

    def _observe_durations(self, function: str, report: dict[str, Any]) -> None:
        """An invocation report's duration and INIT duration, by start kind."""
        start = str(report.get("start", "unknown"))
        if report.get("duration_ms") is not None:
            self.duration.labels(function, start).observe(report["duration_ms"] / 1000.0)
        if report.get("init_duration_ms") is not None:
            self.init_duration.labels(function, start).observe(
                report["init_duration_ms"] / 1000.0)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return bytes(generate_latest(self.registry))


def invocation_model_gauges(runtime: Any) -> GaugeSource:
    """A gauge source: the async queue and event source mapping lag of ``runtime``."""

    def collect() -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "sandbox_async_queue_depth",
            "Asynchronous events stored (pending, awaiting a retry or being delivered)",
            labels=["function"])
        age = GaugeMetricFamily(
            "sandbox_async_event_age_seconds",
            "Age of the oldest stored asynchronous event (since it was accepted)",
            labels=["function"])
        for function, backlog in sorted(runtime.async_backlog().items()):
            depth.add_metric([function], backlog["depth"])
            age.add_metric([function], backlog["oldest_age_s"])
        yield depth
        yield age
        waiting = GaugeMetricFamily(
            "sandbox_mapping_lag_items",
            "Messages (queue) or records (stream) an event source mapping has not processed",
            labels=["mapping", "function", "source"])
        lag = GaugeMetricFamily(
            "sandbox_mapping_lag_seconds",
            "Age of the oldest message or record an event source mapping has not processed",
            labels=["mapping", "function", "source"])
        for mapping in runtime.mapping_lag():
            labels = [mapping["UUID"], mapping["FunctionArn"].rsplit(":", 1)[-1],
                      mapping["EventSourceArn"]]
            waiting.add_metric(labels, float(mapping["waiting"]))
            lag.add_metric(labels, float(mapping["age_s"]))
        yield waiting
        yield lag

    return collect
