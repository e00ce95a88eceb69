"""NFC payments on the time-skipping server: a tap's pay answered final (S or F) at once, each
refusal of the payer check, repeats, and the refund, cancel and inquiry of an NFC payment.

Orders reach the workflow by update-with-start, as the API sends them; every payer is a fresh
user of our own, so balances and daily limits are the test's alone.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import Amount, PayRequest, PayResponse, ResultCode, ResultStatus
from sandbox.alipayplus.driver import nfc_pay_request, refund_request
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import new_user, save_history
from wallet import search_attributes
from wallet.ledger import Ledger
from wallet.orders import NfcOrder, PaymentState
from wallet.records import payment_by_custom_data, read_payment
from wallet.settings import Settings
from wallet.states import PaymentStatus, UserStatus
from workflows.nfc_payment import PRODUCT, NfcPaymentWorkflow
from workflows.payment_order import PaymentOrderWorkflow

from .conftest import notified, result_of, start_payment
from .test_refunds import cancel, finished, refund

ATCS = itertools.count(1)  # each tap uses its token's next ATC: a repeated one is a replayed tap

PRICE = Amount(currency="IDR", value=12_000)
TAP_DATA = bytes.fromhex("A1B2C3D4E5F60718")  # the phone's own reference for this tap
NfcHandle = WorkflowHandle[NfcPaymentWorkflow, PaymentState]


# --- helpers -----------------------------------------------------------------------------


def tap(customer_id: str, amount: Amount = PRICE) -> PayRequest:
    """The pay Alipay+ sends for a tap of ``customer_id``'s token."""
    return nfc_pay_request(
        f"nfc-{uuid.uuid4().hex}", customer_id, f"tok-{customer_id}", amount, custom_data=TAP_DATA, atc=next(ATCS)
    )


async def pay(client: Client, settings: Settings, request: PayRequest, sent: PayRequest | None = None) -> PayResponse:
    """pay as the API sends it: update-with-start of ``pay/{paymentRequestId}`` (``sent`` may differ)."""
    start = start_payment(NfcPaymentWorkflow.run, NfcOrder(request=request), PRODUCT, settings, request)
    return await client.execute_update_with_start_workflow(
        PaymentOrderWorkflow.create_order, sent or request, start_workflow_operation=start
    )


# --- a tap is paid, or refused, at once ---------------------------------------------------


async def test_a_tap_is_answered_success_at_once_debited_once_and_notified(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
) -> None:
    payer = new_user(engine, database, balance=50_000)
    request = tap(payer)

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)  # final, not U: the POS is waiting
    assert answer.payment_id and answer.payment_time and answer.customer_id == payer
    assert answer.payment_url is None
    assert database.balance(Ledger.user_account_id(payer)) == 50_000 - PRICE.value
    handle: NfcHandle = client.get_workflow_handle_for(NfcPaymentWorkflow.run, f"pay/{request.payment_request_id}")
    state = await handle.result()
    assert state.status is PaymentStatus.SUCCESS and state.product == PRODUCT and state.in_store_payment
    assert (state.nfc_token_reference_id, state.nfc_custom_data) == (f"tok-{payer}", TAP_DATA.hex().upper())
    assert state.redirect_url is None
    record = read_payment(engine, request.payment_request_id)
    assert record is not None and record.product == PRODUCT
    assert (record.status, record.result_code, record.payment_id) == (
        PaymentStatus.SUCCESS,
        "SUCCESS",
        answer.payment_id,
    )
    assert (record.nfc_token_reference_id, record.nfc_custom_data) == (f"tok-{payer}", TAP_DATA.hex().upper())
    found = payment_by_custom_data(engine, payer, TAP_DATA.hex().lower())  # the app finds its tap's payment
    assert found is not None and found.payment_request_id == request.payment_request_id
    assert payment_by_custom_data(engine, new_user(engine, database, 0), TAP_DATA.hex()) is None  # only one's own
    assert await notified(client, alipayplus, request.payment_request_id) == ["SUCCESS"]
    notice = alipayplus.notifications(request.payment_request_id)[0].body
    assert (notice["paymentId"], notice["customerId"]) == (answer.payment_id, payer)
    description = await handle.describe()
    assert description.typed_search_attributes.get(search_attributes.PAYMENT_STATUS) == "SUCCESS"
    assert description.typed_search_attributes.get(search_attributes.CUSTOMER_ID) == payer
    assert database.check().ok
    await save_history(handle, "nfc_payment_success")


async def test_a_tap_beyond_the_balance_is_declined_at_once_without_a_debit(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
) -> None:
    payer = new_user(engine, database, balance=PRICE.value - 1)
    request = tap(payer)
    postings = database.check().postings

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.FAIL, ResultCode.USER_BALANCE_NOT_ENOUGH)
    assert answer.payment_id is None and answer.payment_url is None and answer.customer_id == payer
    handle: NfcHandle = client.get_workflow_handle_for(NfcPaymentWorkflow.run, f"pay/{request.payment_request_id}")
    state = await handle.result()
    assert state.status is PaymentStatus.FAIL and state.payment_result.result_code == ResultCode.USER_BALANCE_NOT_ENOUGH
    assert database.check().postings == postings  # no debit at all
    assert database.balance(Ledger.user_account_id(payer)) == PRICE.value - 1
    record = read_payment(engine, request.payment_request_id)
    assert record is not None and (record.status, record.result_code) == (PaymentStatus.FAIL, "USER_BALANCE_NOT_ENOUGH")
    assert await notified(client, alipayplus, request.payment_request_id) == ["USER_BALANCE_NOT_ENOUGH"]
    await save_history(handle, "nfc_payment_declined")


@pytest.mark.parametrize(
    ("payer_of", "amount", "code"),
    [
        (lambda engine, ledger: "2169999999999999", PRICE, ResultCode.USER_NOT_EXIST),
        (
            lambda engine, ledger: new_user(engine, ledger, 50_000, status=UserStatus.FROZEN),
            PRICE,
            ResultCode.USER_STATUS_ABNORMAL,
        ),
        (
            lambda engine, ledger: new_user(engine, ledger, 50_000, single_payment_limit=PRICE.value - 1),
            PRICE,
            ResultCode.PAYMENT_AMOUNT_EXCEED_LIMIT,
        ),
        (lambda engine, ledger: new_user(engine, ledger, 50_000), Amount(currency="SGD", value=250), None),
    ],
    ids=["unknown user", "frozen", "over the single-payment limit", "payTo not in the user's currency"],
)
async def test_each_refusal_of_the_payer_check_is_final_at_once(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    payer_of: Callable[[Engine, Ledger], str],
    amount: Amount,
    code: ResultCode | None,
) -> None:
    payer = payer_of(engine, database)
    postings = database.check().postings

    answer = await pay(client, settings, tap(payer, amount))

    assert result_of(answer) == (ResultStatus.FAIL, code or ResultCode.CURRENCY_NOT_SUPPORT)
    assert answer.payment_id is None
    assert database.check().postings == postings


async def test_the_daily_limit_counts_earlier_taps(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 100_000, daily_limit=PRICE.value + PRICE.value // 2)

    first = await pay(client, settings, tap(payer))
    second = await pay(client, settings, tap(payer))

    assert result_of(first) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)
    assert result_of(second) == (ResultStatus.FAIL, ResultCode.USER_AMOUNT_EXCEED_LIMIT)
    assert database.balance(Ledger.user_account_id(payer)) == 100_000 - PRICE.value


async def test_a_tap_past_its_expiry_on_arrival_is_closed(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 50_000)
    request = tap(payer).model_copy(update={"payment_expiry_time": await env.get_current_time() - timedelta(seconds=1)})

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.FAIL, ResultCode.ORDER_IS_CLOSED)
    assert database.balance(Ledger.user_account_id(payer)) == 50_000


async def test_a_tap_alipayplus_cancelled_before_it_arrived_is_closed_without_a_debit(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 50_000)
    request = tap(payer)
    assert await cancel(client, settings, request.payment_request_id) == ResultCode.SUCCESS  # a tombstone

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.FAIL, ResultCode.ORDER_IS_CLOSED)
    assert database.balance(Ledger.user_account_id(payer)) == 50_000


# --- repeats ----------------------------------------------------------------------------------


async def test_repeats_get_the_same_answer_and_a_changed_one_is_inconsistent(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 50_000)
    request = tap(payer)
    changed = request.model_copy(update={"pay_to_amount": Amount(currency="IDR", value=1)})

    # the retry and the changed repeat arrive while the tap is processed (after it, the API answers from records)
    first, again, inconsistent = await asyncio.gather(
        pay(client, settings, request), pay(client, settings, request), pay(client, settings, request, sent=changed)
    )

    assert result_of(first) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)
    assert again == first
    assert result_of(inconsistent) == (ResultStatus.FAIL, ResultCode.REPEAT_REQ_INCONSISTENT)
    assert inconsistent.payment_id is None
    assert database.balance(Ledger.user_account_id(payer)) == 50_000 - PRICE.value  # debited once
    assert database.check().ok


# --- after the tap: refund, cancel -----------------------------------------------------------


async def test_an_nfc_payment_is_refunded_in_part_within_what_was_paid(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 50_000)
    request = tap(payer)
    answer = await pay(client, settings, request)
    assert answer.payment_id
    account = Ledger.user_account_id(payer)

    part = await refund(
        client, settings, refund_request(request, answer.payment_id, f"rf-{uuid.uuid4().hex}", _idr(5_000))
    )
    too_much = await refund(
        client, settings, refund_request(request, answer.payment_id, f"rf-{uuid.uuid4().hex}", _idr(7_001))
    )
    rest = await refund(
        client, settings, refund_request(request, answer.payment_id, f"rf-{uuid.uuid4().hex}", _idr(7_000))
    )

    assert (part, too_much, rest) == (ResultCode.SUCCESS, ResultCode.REFUND_AMOUNT_EXCEED, ResultCode.SUCCESS)
    assert database.balance(account) == 50_000
    record = read_payment(engine, request.payment_request_id)
    assert record is not None and record.refunded_pay_to_value == PRICE.value
    assert database.check().ok


async def test_a_same_day_cancel_reverses_the_debit_and_inquiry_says_closed(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 50_000)
    request = tap(payer)
    answer = await pay(client, settings, request)
    assert result_of(answer) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)
    await finished(client, f"pay/{request.payment_request_id}")

    first = await cancel(client, settings, request.payment_request_id)
    again = await cancel(client, settings, request.payment_request_id)

    assert first == again == ResultCode.SUCCESS
    assert database.balance(Ledger.user_account_id(payer)) == 50_000  # reversed, once
    record = read_payment(engine, request.payment_request_id)
    assert record is not None and record.cancelled_at is not None
    assert (record.status, record.result_code) == (PaymentStatus.CLOSED, "ORDER_IS_CLOSED")
    assert database.check().ok


def _idr(value: int) -> Amount:
    return Amount(currency="IDR", value=value)
