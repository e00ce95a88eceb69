"""The workflow tests wait on skipped time (3-minute expiries, a 366-day refund window), so they run
on a time-skipping server of their own: workflows that other tests leave running on the shared one
(an API test's activation, say) cannot hold its clock while these wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.types import MethodAsyncSingleParam, ParamType, SelfType
from temporalio.worker import Worker

from alipayplus import PayRequest, PayResponse, ResultStatus, Scope
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import new_user, real_activities, time_skipping_server
from wallet import search_attributes
from wallet.deliveries import Delivery
from wallet.ledger import Ledger
from wallet.orders import PaymentState
from wallet.settings import Settings
from wallet.states import PaymentStatus
from workers.worker import build_worker
from workflows.notify_payment import NotifyPaymentWorkflow

from ._agreements import Bound, bind

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


# --- shared by the tests ------------------------------------------------------------------


def start_payment(
    run: MethodAsyncSingleParam[SelfType, ParamType, PaymentState],
    order: ParamType,
    product: str,
    settings: Settings,
    request: PayRequest,
) -> WithStartWorkflowOperation[SelfType, PaymentState]:
    """The start of ``pay/{paymentRequestId}`` (``run`` with ``order``) that the API's update-with-start carries."""
    return WithStartWorkflowOperation(
        run,
        order,
        id=f"pay/{request.payment_request_id}",
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=search_attributes.at_start(product, request.payment_request_id, PaymentStatus.PROCESSING),
    )


async def notified(client: Client, alipayplus: SandboxAlipayPlus, payment_request_id: str) -> list[str]:
    """The payment's notifyPayment, once acknowledged (none left retrying to hold the clock)."""
    notify = client.get_workflow_handle_for(NotifyPaymentWorkflow.run, f"notify/{payment_request_id}")
    assert (await notify.result()).delivery is Delivery.ACKNOWLEDGED
    return [n.body["paymentResult"]["resultCode"] for n in alipayplus.notifications(payment_request_id)]


def result_of(answer: PayResponse) -> tuple[ResultStatus, str]:
    return answer.result.result_status, answer.result.result_code


@dataclass(frozen=True)
class Harness:
    """What a workflow test drives and checks, the package's worker running."""

    client: Client
    settings: Settings
    database: Ledger
    engine: Engine
    alipayplus: SandboxAlipayPlus

    def new_user(self, balance: int, **options: Any) -> str:
        """A fresh user of our own (``new_user``'s options)."""
        return new_user(self.engine, self.database, balance, **options)

    def bind(
        self, customer_id: str, *, scopes: tuple[Scope, ...] = (Scope.AGREEMENT_PAY,), issued_at: datetime | None = None
    ) -> Bound:
        return bind(self.engine, self.settings, customer_id, scopes=scopes, issued_at=issued_at)

    def bound_user(self, balance: int) -> Bound:
        """A fresh user with ``balance`` and an ACTIVE Auto Debit agreement."""
        return self.bind(self.new_user(balance))

    async def notified(self, payment_request_id: str) -> list[str]:
        return await notified(self.client, self.alipayplus, payment_request_id)


@pytest.fixture
def harness(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine, alipayplus: SandboxAlipayPlus
) -> Harness:
    return Harness(client, settings, database, engine, alipayplus)
