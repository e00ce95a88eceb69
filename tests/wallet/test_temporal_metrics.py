"""Temporal's buffered metric updates, as the process's Prometheus registry shows them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    MetricBuffer,
)

from wallet.telemetry.temporal_metrics import TemporalMetrics

pytestmark = pytest.mark.timeout(30)


@dataclass(frozen=True)
class _Metric:
    name: str
    kind: int
    description: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class _Update:
    metric: _Metric
    value: float
    attributes: dict[str, str] = field(default_factory=dict)


class _Buffer:
    """What ``MetricBuffer.retrieve_updates`` hands over: updates since the last call."""

    def __init__(self) -> None:
        self.pending: list[_Update] = []

    def retrieve_updates(self) -> list[_Update]:
        drained, self.pending = self.pending, []
        return drained


def _scrape(buffer: _Buffer) -> str:
    registry = CollectorRegistry()
    registry.register(TemporalMetrics(buffer))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_counters_add_deltas_gauges_keep_the_last_value_and_histograms_fill_buckets() -> None:
    buffer = _Buffer()
    payments = _Metric("mpp_payments_finished", BUFFERED_METRIC_KIND_COUNTER, "Payments")
    pollers = _Metric("temporal_num_pollers", BUFFERED_METRIC_KIND_GAUGE)
    latency = _Metric("temporal_workflow_task_schedule_to_start_latency", BUFFERED_METRIC_KIND_HISTOGRAM)
    success, fail = {"status": "SUCCESS"}, {"status": "FAIL"}
    buffer.pending = [
        _Update(payments, 1, success),
        _Update(payments, 2, success),
        _Update(payments, 1, fail),
        _Update(pollers, 5, {"poller_type": "workflow_task"}),
        _Update(pollers, 3, {"poller_type": "workflow_task"}),
        _Update(latency, 0.003),
        _Update(latency, 0.2),
        _Update(latency, 120.0),  # past the last bound: only +Inf holds it
    ]
    collector = TemporalMetrics(buffer)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(collector)
    first = generate_latest(registry).decode()
    buffer.pending = [_Update(payments, 1, success)]
    second = generate_latest(registry).decode()

    assert 'mpp_payments_finished_total{status="SUCCESS"} 3.0' in first
    assert 'mpp_payments_finished_total{status="FAIL"} 1.0' in first
    assert 'temporal_num_pollers{poller_type="workflow_task"} 3.0' in first
    assert 'temporal_workflow_task_schedule_to_start_latency_bucket{le="0.005"} 1.0' in first
    assert 'temporal_workflow_task_schedule_to_start_latency_bucket{le="0.25"} 2.0' in first
    assert 'temporal_workflow_task_schedule_to_start_latency_bucket{le="60.0"} 2.0' in first
    assert 'temporal_workflow_task_schedule_to_start_latency_bucket{le="+Inf"} 3.0' in first
    assert "temporal_workflow_task_schedule_to_start_latency_count 3.0" in first
    assert 'mpp_payments_finished_total{status="SUCCESS"} 4.0' in second  # counts accumulate across scrapes


def test_the_real_buffer_type_is_what_the_collector_drains() -> None:
    assert hasattr(MetricBuffer, "retrieve_updates")
    assert "mpp_" not in _scrape(_Buffer())  # nothing recorded, nothing shown
