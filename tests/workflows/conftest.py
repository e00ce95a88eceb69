"""The workflow tests wait on skipped time (3-minute expiries, a 366-day refund window), so they run
on a time-skipping server of their own: workflows that other tests leave running on the shared one
(an API test's activation, say) cannot hold its clock while these wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import real_activities, time_skipping_server
from wallet.ledger import Ledger
from wallet.settings import Settings
from workers.worker import build_worker

DELIVERY_HORIZON = timedelta(hours=1)


@pytest.fixture(scope="package")
async def env(settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server(settings) as environment:
        yield environment


@pytest.fixture(scope="package")
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture(scope="package")
async def activities(
    client: Client, settings: Settings, database: Ledger, alipayplus: SandboxAlipayPlus
) -> AsyncIterator[list[Any]]:
    # A delivery a test leaves unanswered gives up within the hour of skipped time, rather than retrying
    # hourly for three days: every attempt of it would run inside a later test's skip of days (the
    # refund window) and hold the time-skipping clock ('Timeout expired').
    quick = settings.model_copy(update={"delivery_horizon": DELIVERY_HORIZON})
    async with real_activities(client, quick, alipayplus) as found:
        yield found


@pytest.fixture(scope="package")
async def worker(client: Client, settings: Settings, activities: list[Any]) -> AsyncIterator[Worker]:
    async with build_worker(client, settings, activities) as running:
        yield running
