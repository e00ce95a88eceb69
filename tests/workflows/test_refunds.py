"""Refunds and cancellation on the time-skipping server: every path, the 366-day refund
window and the 00:30 UTC+8 T+1 cancel window, and a cancel racing the user's verification."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import Amount, CancelPaymentRequest, CancelPaymentResponse, PayRequest, RefundRequest, ResultCode
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import real_activities, save_history, time_skipping_server
from wallet import workflow_ids
from wallet.ledger import Ledger
from wallet.orders import CancelOrder, EasyPayOrder, PaymentState, RefundOrder
from wallet.settings import Settings
from wallet.states import PaymentStatus
from workers.worker import build_worker
from workflows.cancel_payment import CancelPaymentWorkflow
from workflows.easy_pay import EasyPayWorkflow
from workflows.refund import RefundWorkflow

from .test_easy_pay import PIN_USER, PRICE, order, pin, start

ACCOUNT = Ledger.user_account_id(PIN_USER[1])


async def paid(env: WorkflowEnvironment, client: Client, settings: Settings) -> tuple[PayRequest, PaymentState]:
    request = await order(env, settings, PIN_USER[0])
    handle = await start(client, settings, request)
    await handle.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1]))
    state = await finished(client, handle.id, PaymentState)
    assert state.status is PaymentStatus.SUCCESS
    # its notifyPayment delivered before a test sleeps: an activity in flight holds the time-skipping
    # clock, and the order now ends before its delivery's first attempt does
    await finished(client, workflow_ids.payment_notification(request.payment_request_id))
    return request, state


@pytest.fixture
async def own_server(
    settings: Settings, database: Ledger, alipayplus: SandboxAlipayPlus
) -> AsyncIterator[tuple[WorkflowEnvironment, Client]]:
    """A time-skipping server and worker of the test's own, for the tests that skip days: on the
    package's server, every delivery other tests left retrying runs its hourly attempts during the
    skip, and an activity in flight holds the clock ('Timeout expired')."""
    async with (
        time_skipping_server(settings) as environment,
        real_activities(environment.client, settings, alipayplus) as activities,
        build_worker(environment.client, settings, activities),
    ):
        yield environment, environment.client


async def finished(client: Client, workflow_id: str, result_type: type | None = None) -> Any:
    """A short workflow's result, waited for in real time.

    Results awaited through ``start_workflow``'s handle let the time-skipping server jump
    ahead (years, once the workflow has finished); the refund window must not see that."""
    return await client.get_workflow_handle(workflow_id, result_type=result_type).result()


def refund_of(payment: PayRequest, state: PaymentState, value: int, *, refund_from: int | None = None) -> RefundRequest:
    return RefundRequest(
        acquirer_id=payment.acquirer_id,
        psp_id=payment.psp_id,
        payment_request_id=payment.payment_request_id,
        payment_id=state.payment_id or "",
        refund_request_id=f"rf-{uuid.uuid4().hex}",
        refund_amount=Amount(currency="IDR", value=value),
        refund_from_amount=Amount(currency="IDR", value=refund_from) if refund_from is not None else None,
    )


async def refund(client: Client, settings: Settings, request: RefundRequest, save_as: str | None = None) -> str:
    handle = await client.start_workflow(
        RefundWorkflow.run,
        RefundOrder(request=request),
        id=f"refund/{request.refund_request_id}",
        task_queue=settings.temporal_task_queue,
    )
    answer = await handle.execute_update(RefundWorkflow.request_refund, request)
    await finished(client, handle.id)
    if save_as:
        await save_history(handle, save_as)
    return answer.result.result_code


async def cancel(client: Client, settings: Settings, payment_request_id: str, save_as: str | None = None) -> str:
    handle = await client.start_workflow(
        CancelPaymentWorkflow.run,
        CancelOrder(
            request=CancelPaymentRequest(
                acquirer_id="1022188000000000001", psp_id=settings.psp_id, payment_request_id=payment_request_id
            )
        ),
        id=f"cancel/{payment_request_id}",
        task_queue=settings.temporal_task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    answer = await finished(client, handle.id, CancelPaymentResponse)
    if save_as:
        await save_history(handle, save_as)
    return str(answer.result.result_code)


async def test_full_refund_credits_the_user_once(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    payment, state = await paid(env, client, settings)
    before = database.balance(ACCOUNT)
    request = refund_of(payment, state, PRICE.value)

    handle = await client.start_workflow(
        RefundWorkflow.run,
        RefundOrder(request=request),
        id=f"refund/{request.refund_request_id}",
        task_queue=settings.temporal_task_queue,
    )
    changed = request.model_copy(update={"refund_amount": Amount(currency="IDR", value=1)})
    # the retry and the changed repeat arrive while the refund runs (after it, the API answers from records)
    first, again, inconsistent = await asyncio.gather(
        handle.execute_update(RefundWorkflow.request_refund, request),
        handle.execute_update(RefundWorkflow.request_refund, request),
        handle.execute_update(RefundWorkflow.request_refund, changed),
    )

    assert first.result.result_code == ResultCode.SUCCESS and first.refund_id and first.refund_time
    assert again == first
    assert inconsistent.result.result_code == ResultCode.REPEAT_REQ_INCONSISTENT
    assert database.balance(ACCOUNT) == before + PRICE.value
    assert database.check().ok
    await save_history(handle, "refund_full")


async def test_partial_refunds_never_exceed_the_payment(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    payment, state = await paid(env, client, settings)
    before = database.balance(ACCOUNT)

    codes = [await refund(client, settings, refund_of(payment, state, 2000)) for _ in range(3)]

    assert codes == [ResultCode.SUCCESS, ResultCode.SUCCESS, ResultCode.REFUND_AMOUNT_EXCEED]
    assert database.balance(ACCOUNT) == before + 4000
    assert await refund(client, settings, refund_of(payment, state, 1000)) == ResultCode.SUCCESS  # the rest
    assert database.balance(ACCOUNT) == before + PRICE.value
    assert database.check().ok


async def test_refund_credits_refund_from_amount(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    payment, state = await paid(env, client, settings)
    before = database.balance(ACCOUNT)

    code = await refund(client, settings, refund_of(payment, state, 2500, refund_from=2400))

    assert code == ResultCode.SUCCESS
    assert database.balance(ACCOUNT) == before + 2400


async def test_refunds_need_a_successful_payment(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    payment, state = await paid(env, client, settings)
    unknown = refund_of(payment, state, 100).model_copy(update={"payment_request_id": "no-such-payment"})
    wrong_id = refund_of(payment, state, 100).model_copy(update={"payment_id": "not-ours"})
    unpaid_request = await order(env, settings, PIN_USER[0])
    unpaid = await start(client, settings, unpaid_request)
    unpaid_state = await unpaid.query(EasyPayWorkflow.state)

    assert await refund(client, settings, unknown) == ResultCode.ORDER_NOT_EXIST
    assert await refund(client, settings, wrong_id) == ResultCode.ORDER_NOT_EXIST
    assert (
        await refund(client, settings, refund_of(unpaid_request, unpaid_state, 100)) == ResultCode.ORDER_STATUS_INVALID
    )


async def test_cancel_of_an_unpaid_order_closes_it_for_good(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    alipayplus: SandboxAlipayPlus,
) -> None:
    request = await order(env, settings, PIN_USER[0])
    payment = await start(client, settings, request)
    before = database.balance(ACCOUNT)

    assert await cancel(client, settings, request.payment_request_id, save_as="cancel_unpaid") == ResultCode.SUCCESS
    late_code = await payment.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1]))
    state = await finished(client, payment.id, PaymentState)

    assert not late_code.accepted
    assert state.status is PaymentStatus.CLOSED and state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert database.balance(ACCOUNT) == before
    await client.get_workflow_handle(f"notify/{request.payment_request_id}").result()
    notified = alipayplus.notifications(request.payment_request_id)[-1].body["paymentResult"]
    assert notified["resultCode"] == "ORDER_IS_CLOSED"  # notifyPayment agrees with inquiry
    await save_history(payment, "easy_pay_cancelled")


async def test_cancel_after_success_returns_the_money(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    payment, state = await paid(env, client, settings)
    before = database.balance(ACCOUNT)

    first = await cancel(client, settings, payment.payment_request_id, save_as="cancel_paid")
    again = await cancel(client, settings, payment.payment_request_id)

    assert first == again == ResultCode.SUCCESS
    assert database.balance(ACCOUNT) == before + PRICE.value  # reversed once
    assert await refund(client, settings, refund_of(payment, state, 100)) == ResultCode.ORDER_STATUS_INVALID
    assert database.check().ok


async def test_cancel_after_a_partial_refund_returns_the_rest(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    payment, state = await paid(env, client, settings)
    before = database.balance(ACCOUNT)

    assert await refund(client, settings, refund_of(payment, state, 1500)) == ResultCode.SUCCESS
    assert await cancel(client, settings, payment.payment_request_id) == ResultCode.SUCCESS

    assert database.balance(ACCOUNT) == before + PRICE.value
    assert database.check().ok


async def test_cancel_of_an_unknown_payment_closes_a_late_pay(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    request = await order(env, settings, PIN_USER[0])
    before = database.balance(ACCOUNT)

    assert await cancel(client, settings, request.payment_request_id, save_as="cancel_unknown") == ResultCode.SUCCESS
    handle = await client.start_workflow(
        EasyPayWorkflow.run,
        EasyPayOrder(request=request, verification_page_url="http://testserver/easypay/verify"),
        id=f"pay/{request.payment_request_id}",
        task_queue=settings.temporal_task_queue,
    )
    late = await handle.execute_update(EasyPayWorkflow.create_order, request)

    assert late.result.result_code == ResultCode.ORDER_IS_CLOSED
    assert (await finished(client, handle.id, PaymentState)).status is PaymentStatus.CLOSED
    assert database.balance(ACCOUNT) == before


async def test_cancel_outside_its_window_is_refused(
    own_server: tuple[WorkflowEnvironment, Client], settings: Settings, database: Ledger
) -> None:
    env, client = own_server
    payment, _ = await paid(env, client, settings)
    before = database.balance(ACCOUNT)

    await env.sleep(timedelta(days=2))  # past 00:30 UTC+8 on T+1, whenever T was

    assert await cancel(client, settings, payment.payment_request_id) == ResultCode.CANCEL_WINDOW_EXCEED
    assert database.balance(ACCOUNT) == before


async def test_a_cancel_racing_the_verification_ends_one_way(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    for _ in range(5):
        request = await order(env, settings, PIN_USER[0])
        payment = await start(client, settings, request)
        before = database.balance(ACCOUNT)

        verified, cancelled = await asyncio.gather(
            payment.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1])),
            cancel(client, settings, request.payment_request_id),
        )
        await finished(client, payment.id)

        assert cancelled == ResultCode.SUCCESS
        assert database.balance(ACCOUNT) == before  # unpaid, or paid and reversed: never both, never neither
        assert database.check().ok


async def test_refund_window_is_366_days(own_server: tuple[WorkflowEnvironment, Client], settings: Settings) -> None:
    env, client = own_server
    payment, state = await paid(env, client, settings)

    await env.sleep(timedelta(days=365))
    on_day_365 = await refund(client, settings, refund_of(payment, state, 100))
    await env.sleep(timedelta(days=2))
    on_day_367 = await refund(client, settings, refund_of(payment, state, 100))

    assert on_day_365 == ResultCode.SUCCESS
    assert on_day_367 == ResultCode.REFUND_WINDOW_EXCEED


async def test_a_cancel_racing_the_order_creation_ends_one_way(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    for _ in range(5):
        request = await order(env, settings, PIN_USER[0])
        before = database.balance(ACCOUNT)
        handle = await client.start_workflow(
            EasyPayWorkflow.run,
            EasyPayOrder(request=request, verification_page_url="http://testserver/easypay/verify"),
            id=f"pay/{request.payment_request_id}",
            task_queue=settings.temporal_task_queue,
        )

        created, cancelled = await asyncio.gather(
            handle.execute_update(EasyPayWorkflow.create_order, request),
            cancel(client, settings, request.payment_request_id),
        )
        state = await finished(client, handle.id, PaymentState)

        assert cancelled == ResultCode.SUCCESS
        assert created.result.result_code in (ResultCode.PAYMENT_IN_PROCESS, ResultCode.ORDER_IS_CLOSED)
        assert state.status is PaymentStatus.CLOSED and state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
        assert database.balance(ACCOUNT) == before
