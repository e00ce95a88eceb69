"""The demo's last words: where the stack's metrics and traces are, and what its /metrics says
about the run (payments by status, deliveries, the pay call's p50/p99), read as a scraper would."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from rich.table import Table

from wallet.telemetry.tracing import EXPORTER_VARIABLE

PAY_ROUTE = "/aps/api/v1/payments/pay"


def _samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _totals(samples: Iterable[Sample], name: str, label: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for sample in samples:
        if sample.name == name:
            totals[sample.labels.get(label, "")] += int(sample.value)
    return totals


def _quantile(samples: Iterable[Sample], name: str, route: str, q: float) -> float | None:
    """The upper bound of the bucket holding the q-th request (what histogram_quantile rounds to)."""
    buckets: dict[float, float] = {}
    for sample in samples:
        if sample.name == f"{name}_bucket" and sample.labels.get("route") == route:
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0) + sample.value
    if not buckets or buckets.get(math.inf, 0) == 0:
        return None
    wanted = q * buckets[math.inf]
    return next(bound for bound in sorted(buckets) if buckets[bound] >= wanted)


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return "> 10 s" if math.isinf(value) else f"≤ {value * 1000:.0f} ms"


def _counts(totals: Counter[str]) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(totals.items())) or "none"


def metrics_summary(metrics_text: str) -> Table:
    samples = _samples(metrics_text)
    table = Table(title="What /metrics says about this run", show_header=False)
    table.add_row("payments finished", _counts(_totals(samples, "mpp_payments_finished_total", "status")))
    table.add_row("deliveries finished", _counts(_totals(samples, "mpp_deliveries_finished_total", "outcome")))
    table.add_row("delivery attempts", _counts(_totals(samples, "mpp_delivery_attempts_total", "answer")))
    name = "mpp_http_request_duration_seconds"
    p50, p99 = (_quantile(samples, name, PAY_ROUTE, q) for q in (0.5, 0.99))
    table.add_row("pay (#1 and #2) p50 / p99", f"{_seconds(p50)} / {_seconds(p99)}")
    return table


async def where_and_what(metrics_url: str) -> list[object]:
    """Lines for the console: the endpoints, then the summary (or why there is none)."""
    exporter = os.environ.get(EXPORTER_VARIABLE, "none")
    lines: list[object] = [
        f"Metrics: {metrics_url}/metrics (health {metrics_url}/healthz, readiness {metrics_url}/readyz)",
        f"Traces: {EXPORTER_VARIABLE}={exporter}"
        + ("" if exporter != "none" else " (set it to otlp or console to export spans)"),
    ]
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"{metrics_url}/metrics")
            response.raise_for_status()
    except httpx.HTTPError as exc:
        lines.append(f"[yellow]could not read the metrics: {exc!r}[/]")
        return lines
    lines.append(metrics_summary(response.text))
    return lines
