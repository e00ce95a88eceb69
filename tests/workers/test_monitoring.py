"""A worker process's monitoring listener (``MPP_WORKER_METRICS_PORT``): /healthz, /readyz and
/metrics with the Temporal SDK's own metrics; and the worker exits 1 once its Temporal has been
unreachable for ``MPP_WORKER_LOST_CONNECTION_EXIT``, rather than polling for ever and looking alive."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from wallet import search_attributes
from wallet.ledger import Ledger
from wallet.settings import Settings
from wallet.temporal import temporal_cli

from .test_processes import _environment

pytestmark = pytest.mark.timeout(150)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _get(url: str, until: float) -> httpx.Response:
    """GET ``url`` once it answers (the worker is still starting), until the monotonic deadline."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            try:
                return await http.get(url)
            except httpx.TransportError:
                if time.monotonic() > until:
                    raise
                await asyncio.sleep(0.2)


async def test_a_worker_shows_its_health_and_metrics_then_exits_1_when_temporal_is_gone(
    settings: Settings,
    database: Ledger,  # migrated
) -> None:
    server = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()), search_attributes=search_attributes.ALL, ui=False
    )
    port = _free_port()
    environment = _environment(settings, server.client, "monitoring")
    environment.update(MPP_WORKER_METRICS_PORT=str(port), MPP_WORKER_LOST_CONNECTION_EXIT="PT2S")
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    stopped_server = False
    try:
        deadline = time.monotonic() + 60
        health = await _get(f"{base}/healthz", deadline)
        ready = await _get(f"{base}/readyz", deadline)
        while ready.status_code != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            ready = await _get(f"{base}/readyz", deadline)
        metrics = await _get(f"{base}/metrics", deadline)
        while "temporal_" not in metrics.text and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # the SDK's first poll results arrive within a second or two
            metrics = await _get(f"{base}/metrics", deadline)

        await server.shutdown()
        stopped_server = True
        not_ready = await _get(f"{base}/readyz", time.monotonic() + 10)
        code = await asyncio.wait_for(asyncio.to_thread(worker.wait), 60)
    finally:
        if worker.poll() is None:
            worker.kill()
        if not stopped_server:
            await server.shutdown()
    logs = worker.stderr.read() if worker.stderr else ""

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"worker": "ok", "temporal": "ok", "database": "ok", "keys": "ok"}
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "temporal_num_pollers" in metrics.text or "temporal_request" in metrics.text, metrics.text[:2000]
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["temporal"] == "failing"
    assert code == 1, logs[-3000:]
    assert "Temporal unreachable" in logs, logs[-3000:]
