"""What a process shows its operators beside its real work: ``/metrics`` (Prometheus), ``/healthz``
(alive) and ``/readyz`` (its dependencies answer), on a monitoring listener of its own, and the
HTTP metrics of its other listeners (``HttpMetrics``).

The monitoring listener binds to ``MPP_METRICS_HOST`` (loopback by default) and needs no token:
a scraper and a probe carry none, and nothing on it reads or changes a payment. ``/readyz`` names
its checks and whether each passed, never why (an error text can quote a URL or a path).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wallet.telemetry.metrics import HTTP_LATENCY, HTTP_REQUESTS

from .request_clock import mark_arrival

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT = 2.0  # seconds: a probe must not hang on a dependency that hangs


async def _passes(name: str, check: Check) -> bool:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except Exception as exc:  # any failure of a dependency is "not ready", with the reason in the log
        log.warning("readiness check %s failed: %s", name, type(exc).__name__)
        return False


def create_monitoring_app(checks: Mapping[str, Check]) -> FastAPI:
    """``/metrics``, ``/healthz`` and ``/readyz`` (200 when every check passes, else 503)."""
    app = FastAPI(title="MPP monitoring", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def ready() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(_passes(name, checks[name]) for name in names))
        passed = dict(zip(names, results, strict=True))
        ready = all(passed.values())
        states = {name: "ok" if ok else "failing" for name, ok in passed.items()}
        body = {"status": "ready" if ready else "not ready", "checks": states}
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


class HttpMetrics:
    """Counts every request of ``listener`` by route template, method and status, and times it. The
    template, not the path: a path holds ids, and each would be a new series."""

    def __init__(self, app: ASGIApp, listener: str) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        mark_arrival()
        status = 500  # what the server answers if the app raises before it starts a response

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(self.listener, template, method, str(status)).inc()
            HTTP_LATENCY.labels(self.listener, template, method).observe(time.perf_counter() - started)
