"""Merchant-presented mode on the time-skipping server: every path of the MPM payment workflow.

The real activities run (``worker``), so the payer check reads a real token pair: each order
carries an access token our ``Authorizations`` issued for an authCode, as applyToken gives
Alipay+ one (seed 003, step 1.2). Orders quote SGD into the payers' IDR.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, update
from sqlmodel import col
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import Amount, ApplyTokenRequest, GrantType, Order, PayRequest, ResultCode, ResultStatus
from sandbox.alipayplus.driver import ALIPAYPLUS_ACQUIRER_ID, mpm_order
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import new_user, save_history, update_unless_closed
from wallet.deliveries import Delivery
from wallet.ledger import Ledger
from wallet.oauth import Authorizations, TokenLifetimes
from wallet.orders import USER_CANCELLED, Decision, MpmOrder, PaymentState
from wallet.records import OAuthToken, read_payment
from wallet.secrets import token_digest
from wallet.settings import Settings
from wallet.states import PaymentStatus
from workflows.mpm_payment import MpmPaymentWorkflow
from workflows.notify_payment import NotifyPaymentWorkflow
from workflows.payment_order import PaymentOrderWorkflow

PIN_USER = "2160220037535021"
FROZEN_USER = "2160220037535022"  # 852-33334444
KRW_USER = "2160220037535031"
PRICE = Amount(currency="SGD", value=250)  # SGD 2.50
RATE = Decimal("120")  # SGD/IDR, so IDR 300.00
PAY_TO = Amount(currency="IDR", value=30_000)
PAGE = "http://testserver/mpm/pay"
NOTIFY_URL = "http://alipayplus.test/aps/api/v1/payments/notifyPayment"
MpmHandle = WorkflowHandle[MpmPaymentWorkflow, PaymentState]


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authorizations(engine: Engine, settings: Settings) -> Authorizations:
    lifetimes = TokenLifetimes(
        auth_code=timedelta(minutes=5), access_token=timedelta(hours=1), refresh_token=timedelta(days=730)
    )
    return Authorizations(engine, settings.secret_key, lifetimes)


def access_token(authorizations: Authorizations, settings: Settings, customer_id: str) -> str:
    """What applyToken gave Alipay+ for ``customer_id``: an authCode exchanged for a token pair."""
    code = authorizations.issue_auth_code(customer_id, "BASE_USER_INFO")
    answer = authorizations.apply_token(
        ApplyTokenRequest(
            psp_id=settings.psp_id,
            acquirer_id=ALIPAYPLUS_ACQUIRER_ID,
            grant_type=GrantType.AUTHORIZATION_CODE,
            auth_code=code.auth_code,
        )
    )
    assert answer.result.result_code == ResultCode.SUCCESS and answer.access_token
    return answer.access_token


async def mpm_request(
    env: WorkflowEnvironment,
    customer_id: str,
    token: str,
    settings: Settings,
    *,
    expires_in: timedelta | None = timedelta(minutes=2),
) -> PayRequest:
    """The pay Alipay+ sends after decoding an order code; ``expires_in`` counts from the
    server's (skipped) clock, ``None`` for no paymentExpiryTime at all."""
    request_id = f"mpm-{uuid.uuid4().hex}"
    order = Order(reference_order_id=f"order-{request_id}", order_description="Kopi", order_amount=PRICE)
    request = mpm_order(
        request_id,
        order,
        access_token=token,
        customer_id=customer_id,
        psp_id=settings.psp_id,
        pay_to_currency=PAY_TO.currency,
        notify_url=NOTIFY_URL,
        rate=RATE,
        expires_in=expires_in or timedelta(0),
        now=await env.get_current_time(),
    )
    assert request.pay_to_amount == PAY_TO
    return request if expires_in else request.model_copy(update={"payment_expiry_time": None})


async def start(client: Client, settings: Settings, request: PayRequest) -> MpmHandle:
    return await client.start_workflow(
        MpmPaymentWorkflow.run,
        MpmOrder(request=request, confirmation_page_url=PAGE),
        id=f"pay/{request.payment_request_id}",
        task_queue=settings.temporal_task_queue,
    )


async def opened(client: Client, settings: Settings, request: PayRequest) -> MpmHandle:
    """Started and answered U/PAYMENT_IN_PROCESS with our confirmation page (seed 003, step 5)."""
    handle = await start(client, settings, request)
    answer = await handle.execute_update(MpmPaymentWorkflow.create_order, request)
    assert answer.result.result_status is ResultStatus.UNKNOWN
    assert answer.result.result_code == ResultCode.PAYMENT_IN_PROCESS
    assert answer.payment_id and answer.payment_url == f"{PAGE}/{request.payment_request_id}/{answer.payment_id}"
    return handle


async def notified(client: Client, alipayplus: SandboxAlipayPlus, payment_request_id: str) -> list[str]:
    """The result codes Alipay+ was notified of, once the notification has been delivered."""
    notify = client.get_workflow_handle_for(NotifyPaymentWorkflow.run, f"notify/{payment_request_id}")
    assert (await notify.result()).delivery is Delivery.ACKNOWLEDGED
    return [n.body["paymentResult"]["resultCode"] for n in alipayplus.notifications(payment_request_id)]


# --- the user confirms or cancels --------------------------------------------------------


async def test_confirmed_payment_debits_pay_to_amount_once_and_notifies(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    authorizations: Authorizations,
    alipayplus: SandboxAlipayPlus,
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    account = Ledger.user_account_id(PIN_USER)
    before = database.balance(account)
    handle = await opened(client, settings, request)

    outcome = await handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CONFIRM])
    again = await update_unless_closed(handle, MpmPaymentWorkflow.create_order, request)

    assert outcome.accepted and outcome.state.status is PaymentStatus.SUCCESS
    assert outcome.state.product == "MPM" and outcome.state.in_store_payment
    if again is not None:  # pay again while the order still runs: the same final answer
        assert again.result.result_code == ResultCode.SUCCESS and again.payment_id == outcome.state.payment_id
    state = await handle.result()
    assert state.payment_result.result_code == ResultCode.SUCCESS and state.payment_time is not None
    assert database.balance(account) == before - PAY_TO.value  # payToAmount as sent, once
    assert await notified(client, alipayplus, request.payment_request_id) == ["SUCCESS"]
    assert alipayplus.notifications(request.payment_request_id)[0].body["payToAmount"] == {
        "currency": "IDR",
        "value": "30000",
    }
    assert database.check().ok
    await save_history(handle, "mpm_confirmed")


async def test_the_record_inquiry_reads_agrees_with_the_workflow_state(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    engine: Engine,
    authorizations: Authorizations,
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    handle = await opened(client, settings, request)
    waiting = read_payment(engine, request.payment_request_id)
    assert waiting is not None and waiting.status is PaymentStatus.PROCESSING and waiting.product == "MPM"

    await handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CONFIRM])
    state = await handle.result()

    record = read_payment(engine, request.payment_request_id)
    assert record is not None
    assert (record.status, record.result_code) == (state.status, state.payment_result.result_code)
    assert (record.payment_id, record.customer_id, record.payment_time) == (
        state.payment_id,
        state.customer_id,
        state.payment_time,
    )
    assert (record.pay_to_amount_currency, record.pay_to_amount_value) == (PAY_TO.currency, PAY_TO.value)
    assert (record.payment_amount_currency, record.payment_amount_value) == (PRICE.currency, PRICE.value)
    assert record.payment_expiry_time == state.expires_at == request.payment_expiry_time


async def test_user_cancel_closes_the_order_without_a_debit(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    authorizations: Authorizations,
    alipayplus: SandboxAlipayPlus,
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    before = database.balance(Ledger.user_account_id(PIN_USER))
    handle = await opened(client, settings, request)

    outcome = await handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CANCEL])

    assert not outcome.accepted and outcome.message == USER_CANCELLED
    assert outcome.state.status is PaymentStatus.CLOSED
    assert outcome.state.payment_result.result_status is ResultStatus.FAIL
    assert outcome.state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert outcome.state.payment_result.result_message == USER_CANCELLED
    await handle.result()
    assert database.balance(Ledger.user_account_id(PIN_USER)) == before
    assert await notified(client, alipayplus, request.payment_request_id) == ["ORDER_IS_CLOSED"]
    await save_history(handle, "mpm_user_cancelled")


async def test_a_confirmation_that_meets_a_low_balance_fails_without_a_debit(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    authorizations: Authorizations,
) -> None:
    payer = new_user(engine, database, balance=PAY_TO.value + PAY_TO.value // 2)  # enough for one order
    first = await opened(
        client, settings, await mpm_request(env, payer, access_token(authorizations, settings, payer), settings)
    )
    second = await opened(
        client, settings, await mpm_request(env, payer, access_token(authorizations, settings, payer), settings)
    )

    paid = await first.execute_update(MpmPaymentWorkflow.decide, args=[payer, Decision.CONFIRM])
    refused = await second.execute_update(MpmPaymentWorkflow.decide, args=[payer, Decision.CONFIRM])

    assert paid.accepted and paid.state.status is PaymentStatus.SUCCESS
    assert not refused.accepted and refused.state.status is PaymentStatus.FAIL
    assert refused.state.payment_result.result_code == ResultCode.USER_BALANCE_NOT_ENOUGH
    assert (await second.result()).payment_result.result_code == ResultCode.USER_BALANCE_NOT_ENOUGH
    assert database.balance(Ledger.user_account_id(payer)) == PAY_TO.value // 2  # the first debit only
    assert database.check().ok


async def test_only_the_payer_can_decide(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    authorizations: Authorizations,
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    before = database.balance(Ledger.user_account_id(PIN_USER))
    handle = await opened(client, settings, request)

    stranger = await handle.execute_update(MpmPaymentWorkflow.decide, args=[KRW_USER, Decision.CONFIRM])
    payer = await handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CANCEL])

    assert not stranger.accepted and stranger.message == "This payment belongs to another account."
    assert stranger.state.status is PaymentStatus.PROCESSING
    assert payer.state.status is PaymentStatus.CLOSED and payer.state.payment_result.result_message == USER_CANCELLED
    assert database.balance(Ledger.user_account_id(PIN_USER)) == before


async def test_a_second_tap_gets_the_outcome_of_the_first_and_debits_nothing_more(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    authorizations: Authorizations,
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    before = database.balance(Ledger.user_account_id(PIN_USER))
    handle = await opened(client, settings, request)

    first, second = await asyncio.gather(
        handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CONFIRM]),
        handle.execute_update(MpmPaymentWorkflow.decide, args=[PIN_USER, Decision.CONFIRM]),
    )

    assert [first.accepted, second.accepted].count(True) == 1  # one of them carried the decision
    assert first.state.status is second.state.status is PaymentStatus.SUCCESS  # never "in process"
    assert database.balance(Ledger.user_account_id(PIN_USER)) == before - PAY_TO.value


# --- nobody answers, or Alipay+ cancels --------------------------------------------------


async def test_unanswered_order_closes_at_the_expiry_alipayplus_assigned(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    authorizations: Authorizations,
) -> None:
    token = access_token(authorizations, settings, PIN_USER)
    request = await mpm_request(env, PIN_USER, token, settings, expires_in=timedelta(seconds=90))
    before = database.balance(Ledger.user_account_id(PIN_USER))
    started = await env.get_current_time()
    handle = await opened(client, settings, request)

    state = await handle.result()

    assert state.status is PaymentStatus.CLOSED and state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert state.payment_result.result_message != USER_CANCELLED
    assert state.expires_at == request.payment_expiry_time
    assert timedelta(seconds=89) <= await env.get_current_time() - started < timedelta(seconds=120)
    assert database.balance(Ledger.user_account_id(PIN_USER)) == before
    await save_history(handle, "mpm_expired")


async def test_without_an_expiry_the_order_closes_after_three_minutes(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, authorizations: Authorizations
) -> None:
    token = access_token(authorizations, settings, PIN_USER)
    request = await mpm_request(env, PIN_USER, token, settings, expires_in=None)
    started = await env.get_current_time()
    handle = await opened(client, settings, request)

    state = await handle.result()

    assert state.status is PaymentStatus.CLOSED and state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert timedelta(minutes=3) <= state.expires_at - started <= timedelta(minutes=3, seconds=1)
    assert timedelta(minutes=3) <= await env.get_current_time() - started < timedelta(minutes=4)


def test_the_default_expiry_may_not_exceed_three_minutes(settings: Settings) -> None:
    request = mpm_order(
        "mpm-too-long",
        Order(reference_order_id="o", order_description="Kopi", order_amount=PRICE),
        access_token="AT",
        customer_id=PIN_USER,
        psp_id=settings.psp_id,
        pay_to_currency="IDR",
        notify_url=NOTIFY_URL,
        rate=RATE,
    )
    with pytest.raises(ValueError, match="less than or equal"):
        MpmOrder(request=request, confirmation_page_url=PAGE, default_expiry=timedelta(minutes=4))


async def test_an_order_past_its_expiry_on_arrival_is_closed_at_once(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, authorizations: Authorizations
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    request = request.model_copy(update={"payment_expiry_time": await env.get_current_time() - timedelta(seconds=1)})
    handle = await start(client, settings, request)

    answer = await handle.execute_update(MpmPaymentWorkflow.create_order, request)

    assert (answer.result.result_status, answer.result.result_code) == (ResultStatus.FAIL, ResultCode.ORDER_IS_CLOSED)
    assert answer.payment_url is None and answer.payment_id is None


async def test_alipayplus_cancel_closes_a_waiting_order(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    authorizations: Authorizations,
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    before = database.balance(Ledger.user_account_id(PIN_USER))
    started = await env.get_current_time()
    handle = await opened(client, settings, request)

    await handle.signal(PaymentOrderWorkflow.cancel)

    state = await handle.result()
    assert state.status is PaymentStatus.CLOSED and state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert state.payment_result.result_message != USER_CANCELLED
    assert await env.get_current_time() - started < timedelta(seconds=60)  # closed at once, not at expiry
    assert database.balance(Ledger.user_account_id(PIN_USER)) == before


# --- the payer check: the token names the payer ------------------------------------------


async def assert_refused_at_once(
    client: Client, settings: Settings, database: Ledger, request: PayRequest, code: ResultCode
) -> PaymentState:
    """pay answers F with ``code`` straight away; the order ends without a debit or a page."""
    postings = database.check().postings
    handle = await start(client, settings, request)

    answer = await handle.execute_update(MpmPaymentWorkflow.create_order, request)

    assert (answer.result.result_status, answer.result.result_code) == (ResultStatus.FAIL, code)
    assert answer.payment_url is None and answer.payment_id is None
    state = await handle.result()
    assert state.status is PaymentStatus.FAIL and state.payment_result.result_code == code
    assert database.check().postings == postings
    return state


async def test_a_frozen_user_is_refused_as_abnormal(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    authorizations: Authorizations,
) -> None:
    token = access_token(authorizations, settings, FROZEN_USER)
    request = await mpm_request(env, FROZEN_USER, token, settings)

    state = await assert_refused_at_once(client, settings, database, request, ResultCode.USER_STATUS_ABNORMAL)

    assert state.customer_id == FROZEN_USER


async def test_a_token_we_never_issued_is_invalid(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    request = await mpm_request(env, PIN_USER, "AT-not-a-token-we-issued", settings)

    await assert_refused_at_once(client, settings, database, request, ResultCode.INVALID_TOKEN)


async def test_a_token_of_another_customer_is_invalid(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    authorizations: Authorizations,
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, KRW_USER), settings)

    state = await assert_refused_at_once(client, settings, database, request, ResultCode.INVALID_TOKEN)

    assert state.customer_id is None  # neither customer is named as the payer


async def test_an_expired_access_token_is_refused(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    authorizations: Authorizations,
) -> None:
    token = access_token(authorizations, settings, PIN_USER)
    with engine.begin() as connection:  # the token's hour has passed
        connection.execute(
            update(OAuthToken)
            .where(col(OAuthToken.access_token_digest) == token_digest(token))
            .values(access_token_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    request = await mpm_request(env, PIN_USER, token, settings)

    await assert_refused_at_once(client, settings, database, request, ResultCode.EXPIRED_ACCESS_TOKEN)


# --- pay again: idempotency ----------------------------------------------------------------


async def test_the_same_pay_again_gets_the_same_answer(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, authorizations: Authorizations
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    handle = await start(client, settings, request)

    first = await handle.execute_update(MpmPaymentWorkflow.create_order, request)
    again = await update_unless_closed(handle, MpmPaymentWorkflow.create_order, request)

    assert first.result.result_code == ResultCode.PAYMENT_IN_PROCESS
    assert again == first  # the same paymentId and paymentUrl
    await handle.signal(PaymentOrderWorkflow.cancel)


@pytest.mark.parametrize(
    "changed",
    [
        {"pay_to_amount": Amount(currency="IDR", value=1)},
        {"payment_amount": Amount(currency="SGD", value=1)},
    ],
    ids=["payToAmount", "paymentAmount"],
)
async def test_a_changed_repeat_is_inconsistent_and_leaves_the_order_as_it_was(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    authorizations: Authorizations,
    changed: dict[str, Amount],
) -> None:
    request = await mpm_request(env, PIN_USER, access_token(authorizations, settings, PIN_USER), settings)
    handle = await opened(client, settings, request)

    answer = await handle.execute_update(MpmPaymentWorkflow.create_order, request.model_copy(update=changed))

    assert (answer.result.result_status, answer.result.result_code) == (
        ResultStatus.FAIL,
        ResultCode.REPEAT_REQ_INCONSISTENT,
    )
    assert answer.payment_id is None and answer.payment_url is None
    state = await handle.query(MpmPaymentWorkflow.state)
    assert state.status is PaymentStatus.PROCESSING and state.pay_to_amount == PAY_TO
    await handle.signal(PaymentOrderWorkflow.cancel)
