"""Failures no retry can fix end the process with a final answer, never a retry loop while Alipay+ is
answered U forever: the worker's interceptor marks them non-retryable, the workflows answer F."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import Result, ResultCode, ResultStatus
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.workflows.test_easy_pay import PIN_USER, PRICE, order, ordered
from tests.workflows.test_refunds import paid, refund, refund_of
from wallet.deliveries import Delivery
from wallet.orders import PaymentState
from wallet.payments import OrderOpened, OrderOpening, PaymentRecordUpdate
from wallet.records import PaymentRecord
from wallet.refunds import RefundApplication, RefundOutcome
from wallet.settings import Settings
from wallet.states import PaymentStatus
from workers.interceptors import cannot_succeed
from workers.worker import build_worker
from workflows.notify_payment import NotifyPaymentWorkflow

from .conftest import replacing

pytestmark = pytest.mark.timeout(60)
TOO_LONG = DataError("INSERT INTO payment_record …", {}, Exception("value too long for type character varying(2048)"))


@activity.defn(name="record_payment")
def refusing_record(change: PaymentRecordUpdate) -> PaymentStatus:
    raise TOO_LONG  # as PostgreSQL refuses a value longer than its column, on every try


@activity.defn(name="open_order")
def refusing_opening(opening: OrderOpening) -> OrderOpened:
    raise TOO_LONG  # the first record, written with the payer check


@activity.defn(name="apply_refund")
def refusing_refund(application: RefundApplication) -> RefundOutcome:
    raise TOO_LONG


@pytest.fixture
def queue(settings: Settings) -> Settings:
    return settings.model_copy(update={"temporal_task_queue": f"permanent-{uuid.uuid4().hex[:8]}"})


async def test_a_payment_whose_record_is_refused_is_answered_f_and_notified(
    env: WorkflowEnvironment,
    client: Client,
    queue: Settings,
    activities: list[Any],
    worker: Worker,  # runs the delivery it starts
    alipayplus: SandboxAlipayPlus,
) -> None:
    request = await order(env, queue, PIN_USER[0])
    async with build_worker(client, queue, replacing(replacing(activities, refusing_record), refusing_opening)):
        handle, answer = await ordered(client, queue, request)
        state: PaymentState = await handle.result()
        notify = client.get_workflow_handle_for(NotifyPaymentWorkflow.run, f"notify/{request.payment_request_id}")
        report = await notify.result()

    assert (answer.result.result_status, answer.result.result_code) == (ResultStatus.FAIL, ResultCode.PROCESS_FAIL)
    assert state.status is PaymentStatus.FAIL
    assert report.delivery is Delivery.ACKNOWLEDGED
    [notice] = alipayplus.notifications(request.payment_request_id)
    assert notice.body["paymentResult"]["resultCode"] == "PROCESS_FAIL"


async def test_a_refund_the_database_refuses_is_answered_f(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    queue: Settings,
    activities: list[Any],
    worker: Worker,  # runs the payment refunded
) -> None:
    payment, state = await paid(env, client, settings)
    request = refund_of(payment, state, PRICE.value)
    async with build_worker(client, queue, replacing(activities, refusing_refund)):
        code = await refund(client, queue, request)

    assert Result.of(ResultCode(code)).result_status is ResultStatus.FAIL and code == ResultCode.PROCESS_FAIL


def test_what_no_retry_can_fix_is_told_from_what_a_retry_fixes(engine: Engine) -> None:
    overflow: Exception | None = None
    try:  # a real one: a time at the edge of the calendar cannot be converted to UTC for its column
        with engine.begin() as connection:
            edge = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
            connection.execute(
                insert(PaymentRecord).values(
                    payment_request_id=uuid.uuid4().hex, status=PaymentStatus.PROCESSING, payment_expiry_time=edge
                )
            )
    except Exception as error:
        overflow = error
    assert overflow is not None and cannot_succeed(overflow)
    assert cannot_succeed(TOO_LONG)
    assert not cannot_succeed(OperationalError("SELECT 1", {}, Exception("database is locked")))
    assert not cannot_succeed(IntegrityError("INSERT …", {}, Exception("UNIQUE constraint failed")))  # a lost race
    assert not cannot_succeed(ConnectionError("reset by peer"))
    assert datetime.now(UTC)  # the engine is still usable afterwards
