"""``mpp worker --processes N``: N worker processes on one task queue, stopped together."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from alipayplus import Amount
from sandbox.alipayplus.driver import easy_pay_evaluation
from wallet.ledger import Ledger
from wallet.settings import Settings
from workflows.account_evaluation import AccountEvaluationWorkflow

pytestmark = pytest.mark.timeout(120)
PIN_LOGIN = "852-11112222"


def _environment(settings: Settings, client: Client, queue: str) -> dict[str, str]:
    """The worker's settings as ``MPP_*`` variables: the test server, a queue of its own, the test keys."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MPP_")}
    environment.update(
        MPP_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        MPP_TEMPORAL_NAMESPACE=client.namespace,
        MPP_TEMPORAL_TASK_QUEUE=queue,
        MPP_DATABASE_URL=settings.database_url,
        MPP_MPP_PRIVATE_KEY_FILE=str(settings.mpp_private_key_file),
        MPP_MPP_PUBLIC_KEY_FILE=str(settings.mpp_public_key_file),
        MPP_ALIPAYPLUS_PUBLIC_KEY_FILE=str(settings.alipayplus_public_key_file),
        MPP_SECRET_KEY_FILE=str(settings.secret_key_file),
        MPP_PAYLOAD_KEY_FILE=str(settings.payload_key_file),
        MPP_KEY_FILE_MODE_CHECK="false",
    )
    return environment


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


async def test_several_worker_processes_serve_one_queue_and_stop_together(
    client: Client,
    settings: Settings,
    database: Ledger,  # migrated, with the demo users
) -> None:
    queue = f"processes-{uuid.uuid4().hex[:8]}"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--processes", "2"],
        env=_environment(settings, client, queue),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the workers' logs: nobody reads them here, and a full pipe would block them
        text=True,
        start_new_session=True,  # our SIGTERM alone reaches it, as from a process supervisor
    )
    try:
        assert supervisor.stdout is not None
        first_line = await asyncio.wait_for(asyncio.to_thread(supervisor.stdout.readline), 30)
        pids = [int(pid) for pid in re.findall(r"\d+", first_line.partition(":")[2])]
        request = easy_pay_evaluation(f"ev-{uuid.uuid4().hex}", PIN_LOGIN, Amount(currency="IDR", value=100), "x")
        answer = await asyncio.wait_for(
            client.execute_workflow(
                AccountEvaluationWorkflow.run, request, id=f"evaluation/{request.payment_request_id}", task_queue=queue
            ),
            30,
        )
        running = [_alive(pid) for pid in pids]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(supervisor.wait, 60)

    assert first_line.startswith("2 worker processes") and len(pids) == 2 and all(running)
    assert answer.result.result_code == "SUCCESS"  # served by one of them
    assert code == 0  # each finished its work in flight and exited 0
    assert not any(_alive(pid) for pid in pids)
