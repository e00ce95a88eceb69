"""Merchant-presented mode on the time-skipping server: every path of the MPM payment workflow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.db import create_engine_for
from activities.ledger import Ledger
from activities.notifications import Delivery
from activities.oauth import Authorizations, TokenLifetimes
from activities.records import OAuthToken, PaymentStatus
from alipayplus import Amount, ApplyTokenRequest, GrantType, Order, PayRequest, ResultCode, ResultStatus
from sandbox.alipayplus.driver import mpm_order
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import save_history
from workers.settings import Settings
from workflows.mpm_payment import USER_CANCELLED, Decision, MpmOrder, MpmPaymentWorkflow
from workflows.notify_payment import NotifyPaymentWorkflow
from workflows.payment_order import PaymentOrderWorkflow, PaymentState

PIN_USER = "2160220037535021"
FROZEN_USER = "2160220037535022"
POOR_USER = "2160220037535023"
KRW_USER = "2160220037535031"
PRICE = Amount(currency="SGD", value=250)  # SGD 2.50
RATE = Decimal("120")  # SGD/IDR, so IDR 300.00
PAY_TO = Amount(currency="IDR", value=30_000)
PAGE = "http://testserver/mpm/pay"
MpmHandle = WorkflowHandle[MpmPaymentWorkflow, PaymentState]


def access_token(settings: Settings, customer_id: str) -> str:
    """What applyToken gave Alipay+ for ``customer_id`` (an authCode exchanged for a pair)."""
    engine = create_engine_for(settings.database_url)
    try:
        authorizations = Authorizations(
            engine, settings.secret_key, TokenLifetimes(timedelta(minutes=5), timedelta(hours=1), timedelta(days=730))
        )
        code = authorizations.issue_auth_code(customer_id, "BASE_USER_INFO")
        answer = authorizations.apply_token(
            ApplyTokenRequest(
                psp_id=settings.psp_id,
                acquirer_id="2052666000000000",
                grant_type=GrantType.AUTHORIZATION_CODE,
                auth_code=code.auth_code,
            )
        )
    finally:
        engine.dispose()
    assert answer.access_token
    return answer.access_token


async def mpm_request(
    env: WorkflowEnvironment,
    settings: Settings,
    customer_id: str,
    *,
    token: str | None = None,
    expires_in: timedelta | None = timedelta(minutes=2),
) -> PayRequest:
    request_id = f"mpm-{uuid.uuid4().hex}"
    order = Order(reference_order_id=f"order-{request_id}", order_description="Kopi", order_amount=PRICE)
    request = mpm_order(
        request_id,
        order,
        access_token=token if token is not None else access_token(settings, customer_id),
        customer_id=customer_id,
        psp_id=settings.psp_id,
        pay_to_currency=PAY_TO.currency,
        notify_url="http://alipayplus.test/aps/api/v1/payments/notifyPayment",
        rate=RATE,
        expires_in=expires_in or timedelta(0),
        now=await env.get_current_time(),
    )
    assert request.pay_to_amount == PAY_TO
    return request if expires_in else request.model_copy(update={"payment_expiry_time": None})


async def start(
    client: Client, settings: Settings, request: PayRequest
) -> WorkflowHandle[MpmPaymentWorkflow, PaymentState]:
    return await client.start_workflow(
        MpmPaymentWorkflow.run,
        MpmOrder(request=request, confirmation_page_url=PAGE),
        id=f"pay/{request.payment_request_id}",
        task_queue=settings.temporal_task_queue,
    )


async def opened(
    client: Client, settings: Settings, request: PayRequest
) -> WorkflowHandle[MpmPaymentWorkflow, PaymentState]:
    """Started and answered U/PAYMENT_IN_PROCESS with our confirmation page (seed 003, step 5)."""
    handle = await start(client, settings, request)
    answer = await handle.execute_update(MpmPaymentWorkflow.create_order, request)
    assert answer.result.result_status is ResultStatus.UNKNOWN
    assert answer.result.result_code == ResultCode.PAYMENT_IN_PROCESS
    assert answer.payment_id and answer.payment_url == f"{PAGE}/{request.payment_request_id}/{answer.payment_id}"
    return handle


async def test_confirmed_payment_debits_pay_to_amount_once_and_notifies(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    alipayplus: SandboxAlipayPlus,
) -> None:
    request = await mpm_request(env, settings, PIN_USER)
    account = Ledger.user_account_id(PIN_USER)
    before = database.balance(account)
    handle = await opened(client, settings, request)

    outcome = await handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CONFIRM])
    again = await handle.execute_update(MpmPaymentWorkflow.create_order, request)

    assert outcome.accepted and outcome.state.status is PaymentStatus.SUCCESS
    assert outcome.state.product == "MPM" and outcome.state.in_store_payment
    assert again.result.result_code == ResultCode.SUCCESS and again.payment_id == outcome.state.payment_id
    state = await handle.result()
    assert state.payment_result.result_code == ResultCode.SUCCESS and state.payment_time is not None
    assert database.balance(account) == before - PAY_TO.value  # payToAmount as sent, once
    notify = client.get_workflow_handle_for(NotifyPaymentWorkflow.run, f"notify/{request.payment_request_id}")
    assert (await notify.result()).delivery is Delivery.ACKNOWLEDGED
    notices = alipayplus.notifications(request.payment_request_id)
    assert [n.body["paymentResult"]["resultCode"] for n in notices] == ["SUCCESS"]
    assert notices[0].body["payToAmount"] == {"currency": "IDR", "value": "30000"}
    assert database.check().ok
    await save_history(handle, "mpm_confirmed")


async def test_user_cancel_closes_the_order_without_a_debit(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    request = await mpm_request(env, settings, PIN_USER)
    before = database.balance(Ledger.user_account_id(PIN_USER))
    handle = await opened(client, settings, request)

    outcome = await handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CANCEL])

    assert not outcome.accepted
    assert outcome.state.status is PaymentStatus.CLOSED
    assert outcome.state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert outcome.state.payment_result.result_message == USER_CANCELLED
    assert database.balance(Ledger.user_account_id(PIN_USER)) == before
    await handle.result()
    await save_history(handle, "mpm_user_cancelled")


async def test_unanswered_order_closes_at_the_expiry_alipayplus_assigned(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    request = await mpm_request(env, settings, PIN_USER, expires_in=timedelta(seconds=90))
    started = await env.get_current_time()
    handle = await opened(client, settings, request)

    state = await handle.result()

    assert state.status is PaymentStatus.CLOSED and state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert timedelta(seconds=89) <= await env.get_current_time() - started < timedelta(seconds=120)
    await save_history(handle, "mpm_expired")


async def test_without_an_expiry_the_order_closes_after_three_minutes(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    request = await mpm_request(env, settings, PIN_USER, expires_in=None)
    started = await env.get_current_time()
    handle = await opened(client, settings, request)

    state = await handle.result()

    assert state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert state.expires_at - started <= timedelta(minutes=3, seconds=1)
    assert timedelta(minutes=3) <= await env.get_current_time() - started < timedelta(minutes=4)


def test_the_default_expiry_may_not_exceed_three_minutes(settings: Settings) -> None:
    request = mpm_order(
        "mpm-too-long",
        Order(reference_order_id="o", order_description="Kopi", order_amount=PRICE),
        access_token="AT",
        customer_id=PIN_USER,
        psp_id=settings.psp_id,
        pay_to_currency="IDR",
        notify_url="http://alipayplus.test/notify",
        rate=RATE,
    )
    with pytest.raises(ValueError, match="3 minutes|less than or equal"):
        MpmOrder(request=request, confirmation_page_url=PAGE, default_expiry=timedelta(minutes=4))


async def test_alipayplus_cancel_closes_a_waiting_order(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    handle = await opened(client, settings, await mpm_request(env, settings, PIN_USER))

    await handle.signal(PaymentOrderWorkflow.cancel)

    state = await handle.result()
    assert state.status is PaymentStatus.CLOSED and state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED


@pytest.mark.parametrize(
    ("customer_id", "token", "code"),
    [
        (FROZEN_USER, None, ResultCode.USER_STATUS_ABNORMAL),
        (PIN_USER, "AT-not-a-token-we-issued", ResultCode.INVALID_TOKEN),
        (PIN_USER, "token of another customer", ResultCode.INVALID_TOKEN),
    ],
    ids=["frozen user", "unknown token", "token of another customer"],
)
async def test_payer_checks_fail_the_order_at_once(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    customer_id: str,
    token: str | None,
    code: ResultCode,
) -> None:
    if token == "token of another customer":
        token = access_token(settings, KRW_USER)
    request = await mpm_request(env, settings, customer_id, token=token)
    handle = await start(client, settings, request)

    answer = await handle.execute_update(MpmPaymentWorkflow.create_order, request)

    assert answer.result.result_status is ResultStatus.FAIL and answer.result.result_code == code
    assert (await handle.result()).status is PaymentStatus.FAIL


async def test_an_expired_access_token_is_refused(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    token = access_token(settings, PIN_USER)
    engine = create_engine_for(settings.database_url)
    with engine.begin() as connection:  # the token's hour has passed
        connection.execute(
            update(OAuthToken)
            .where(OAuthToken.customer_id == PIN_USER, OAuthToken.retired_at.is_(None))  # type: ignore[union-attr]
            .values(access_token_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    engine.dispose()
    request = await mpm_request(env, settings, PIN_USER, token=token)

    answer = await (await start(client, settings, request)).execute_update(MpmPaymentWorkflow.create_order, request)

    assert answer.result.result_code == ResultCode.EXPIRED_ACCESS_TOKEN


async def test_only_the_payer_can_decide(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    handle = await opened(client, settings, await mpm_request(env, settings, PIN_USER))

    stranger = await handle.execute_update(MpmPaymentWorkflow.decide, args=[KRW_USER, Decision.CONFIRM])
    payer = await handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CANCEL])

    assert not stranger.accepted and stranger.state.status is PaymentStatus.PROCESSING
    assert payer.state.status is PaymentStatus.CLOSED


async def test_a_changed_repeat_is_inconsistent(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    request = await mpm_request(env, settings, PIN_USER)
    handle = await opened(client, settings, request)

    first = await handle.execute_update(MpmPaymentWorkflow.create_order, request)
    changed = await handle.execute_update(
        MpmPaymentWorkflow.create_order, request.model_copy(update={"pay_to_amount": Amount(currency="IDR", value=1)})
    )

    assert first.result.result_code == ResultCode.PAYMENT_IN_PROCESS
    assert changed.result.result_code == ResultCode.REPEAT_REQ_INCONSISTENT
    await handle.signal(PaymentOrderWorkflow.cancel)
