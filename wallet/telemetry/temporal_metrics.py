"""The Temporal SDK's metrics, and the workflows' own, in the process's Prometheus registry.

Temporal's runtime can serve Prometheus itself (``PrometheusConfig``), but on a port of its own
beside ours. Instead its metrics go to a ``MetricBuffer`` that this collector drains (on every
scrape and once a second, in a thread, so the buffer never fills), and one ``/metrics`` per process shows
both: the SDK's (``temporal_…``: schedule-to-start latency, sticky cache, slots, polls) and what
the workflows count through ``workflow.metric_meter()``, which Temporal does not repeat on replay.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

# Durations arrive in seconds; Temporal's other histograms (payload sizes, counts) fit the same
# buckets poorly but rarely matter to an operator.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BUFFER_SIZE = 100_000
DRAIN_INTERVAL = 1.0  # seconds

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.count += 1


@dataclass
class _Family:
    kind: int
    help: str
    values: dict[Labels, float] = field(default_factory=dict)  # counters and gauges
    histograms: dict[Labels, _Histogram] = field(default_factory=dict)


def _labels(attributes: Mapping[str, str | int | float | bool]) -> Labels:
    return tuple(sorted((key, str(value)) for key, value in attributes.items()))


class TemporalMetrics(Collector):
    """Drains a ``MetricBuffer`` into counters, gauges and histograms, and shows them on collect."""

    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def drain(self) -> None:
        with self._lock:
            for update in self._buffer.retrieve_updates():
                metric = update.metric
                family = self._families.get(metric.name)
                if family is None:
                    family = self._families[metric.name] = _Family(metric.kind, metric.description or metric.name)
                labels = _labels(update.attributes)
                if metric.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
                    family.histograms.setdefault(labels, _Histogram()).observe(float(update.value))
                elif metric.kind == BUFFERED_METRIC_KIND_COUNTER:
                    family.values[labels] = family.values.get(labels, 0) + update.value
                else:
                    family.values[labels] = update.value

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            for name, family in sorted(self._families.items()):
                yield _exported(name, family)


def _exported(name: str, family: _Family) -> Metric:
    if family.kind == BUFFERED_METRIC_KIND_COUNTER:
        metric = Metric(name.removesuffix("_total"), family.help, "counter")
        for labels, value in family.values.items():
            metric.add_sample(f"{metric.name}_total", dict(labels), value)
    elif family.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
        metric = Metric(name, family.help, "histogram")
        for labels, histogram in family.histograms.items():
            cumulative = 0
            for bound, count in zip([*BUCKETS, float("inf")], histogram.buckets, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                metric.add_sample(f"{name}_bucket", {**dict(labels), "le": le}, cumulative)
            metric.add_sample(f"{name}_count", dict(labels), histogram.count)
            metric.add_sample(f"{name}_sum", dict(labels), histogram.total)
    else:
        metric = Metric(name, family.help, "gauge")
        for labels, value in family.values.items():
            metric.add_sample(name, dict(labels), value)
    return metric


_runtime: Runtime | None = None


def temporal_runtime() -> Runtime:
    """This process's Temporal runtime, its metrics in the default registry (made once: a
    Temporal runtime is per process, and so is a Prometheus registry). A daemon thread drains the
    buffer every second, whether or not anything scrapes: a full buffer drops updates."""
    global _runtime
    if _runtime is None:
        buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
        _runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
        collector = TemporalMetrics(buffer)
        REGISTRY.register(collector)
        threading.Thread(target=_drain_forever, args=(collector,), name="temporal-metrics", daemon=True).start()
    return _runtime


def _drain_forever(collector: TemporalMetrics) -> None:
    while True:
        time.sleep(DRAIN_INTERVAL)
        collector.drain()
