"""The monitoring listener's routes, and the HTTP metrics every other listener keeps."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from api.monitoring import HttpMetrics, create_monitoring_app

pytestmark = pytest.mark.timeout(30)


async def _ok() -> bool:
    return True


async def _down() -> bool:
    raise ConnectionError("refused by 10.0.0.7:5432")  # the reason is logged, never answered


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://monitor")


async def test_readyz_is_200_when_every_check_passes_and_503_naming_the_one_that_fails() -> None:
    async with _client(create_monitoring_app({"temporal": _ok, "database": _ok})) as http:
        ready = await http.get("/readyz")
    async with _client(create_monitoring_app({"temporal": _ok, "database": _down})) as http:
        not_ready = await http.get("/readyz")
        health = await http.get("/healthz")

    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"temporal": "ok", "database": "ok"}}
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "not ready", "checks": {"temporal": "ok", "database": "failing"}}
    assert "10.0.0.7" not in not_ready.text
    assert health.status_code == 200  # alive, though not ready


async def test_metrics_are_served_at_metrics_without_a_redirect() -> None:
    async with _client(create_monitoring_app({})) as http:
        answer = await http.get("/metrics")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "# TYPE mpp_http_requests_total counter" in answer.text


def _count(route: str, status: str) -> float:
    labels = {"listener": "test", "route": route, "method": "GET", "status": status}
    return REGISTRY.get_sample_value("mpp_http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template_not_by_path() -> None:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, str]:
        return {"id": order_id}

    app.add_middleware(HttpMetrics, listener="test")
    before = _count("/orders/{order_id}", "200"), _count("unmatched", "404")
    async with _client(app) as http:
        for order_id in ("a1", "b2", "c3"):
            assert (await http.get(f"/orders/{order_id}")).status_code == 200
        assert (await http.get("/nowhere")).status_code == 404
    after = _count("/orders/{order_id}", "200"), _count("unmatched", "404")
    latency = REGISTRY.get_sample_value(
        "mpp_http_request_duration_seconds_count", {"listener": "test", "route": "/orders/{order_id}", "method": "GET"}
    )

    assert after[0] - before[0] == 3
    assert after[1] - before[1] == 1
    assert latency is not None and latency >= 3
    assert REGISTRY.get_sample_value("mpp_http_requests_total", {"route": "/orders/a1"}) is None
