"""Auto Debit on the time-skipping server: a pay with an agreement's access token, answered final
(S or F) at once, debited once; each refusal of the token and of the payer; and a revocation racing
the payment, which either loses (S, one debit) or wins (F INVALID_TOKEN, no money moves).

Agreements are bound as in production (prepare, the user's consent, applyToken with the authCode);
every payer is a fresh user of our own, so balances and limits are the test's alone.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from alipayplus import (
    Amount,
    PaymentFactor,
    PaymentMethod,
    PayRequest,
    PayResponse,
    ResultCode,
    ResultStatus,
    Scope,
)
from sandbox.alipayplus.driver import PAYMENT_METHOD_TYPE, easy_pay_order
from tests.conftest import save_history
from wallet import search_attributes
from wallet.agreements import Agreements, CancelledBy, Revoked
from wallet.ledger import Ledger
from wallet.orders import AutoDebitOrder, PaymentState
from wallet.records import read_payment
from wallet.settings import Settings
from wallet.states import PaymentStatus, UserStatus
from workflows.auto_debit import PRODUCT, AutoDebitWorkflow
from workflows.payment_order import PaymentOrderWorkflow

from .conftest import Harness, result_of, start_payment

PRICE = Amount(currency="IDR", value=15_000)
AutoDebitHandle = WorkflowHandle[AutoDebitWorkflow, PaymentState]


# --- paying with an agreement's token, as the API does --------------------------------------


def debit_request(
    settings: Settings, access_token: str, amount: Amount = PRICE, *, customer_id: str | None = None
) -> PayRequest:
    """The pay Alipay+ sends for an Auto Debit: the agreement's token in ``paymentMethodId``."""
    base = easy_pay_order(f"ad-{uuid.uuid4().hex}", "852-00000000", amount, settings.psp_id)
    return base.model_copy(
        update={
            "payment_method": PaymentMethod(
                payment_method_type=PAYMENT_METHOD_TYPE, payment_method_id=access_token, customer_id=customer_id
            ),
            "payment_factor": PaymentFactor(is_agreement_payment=True),
            "payment_expiry_time": None,  # at most a minute (AutoDebitOrder.default_expiry)
            "payment_redirect_url": None,
        }
    )


async def pay(client: Client, settings: Settings, request: PayRequest) -> PayResponse:
    """pay as the API sends it: update-with-start of ``pay/{paymentRequestId}``."""
    start = start_payment(AutoDebitWorkflow.run, AutoDebitOrder(request=request), PRODUCT, settings, request)
    return await client.execute_update_with_start_workflow(
        PaymentOrderWorkflow.create_order, request, start_workflow_operation=start
    )


def handle_of(client: Client, request: PayRequest) -> AutoDebitHandle:
    return client.get_workflow_handle_for(AutoDebitWorkflow.run, f"pay/{request.payment_request_id}")


# --- paid ---------------------------------------------------------------------------------


async def test_a_live_token_pays_at_once_debits_once_and_notifies(harness: Harness) -> None:
    client, settings, database, engine = harness.client, harness.settings, harness.database, harness.engine
    bound = harness.bound_user(balance=50_000)
    payer = bound.customer_id
    request = debit_request(settings, bound.access_token, customer_id=payer)

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)  # final, never U: nobody waits on a page
    assert answer.payment_id and answer.payment_time and answer.customer_id == payer
    assert answer.payment_url is None
    assert database.balance(Ledger.user_account_id(payer)) == 50_000 - PRICE.value
    handle = handle_of(client, request)
    state = await handle.result()
    assert state.status is PaymentStatus.SUCCESS and state.product == PRODUCT
    assert state.redirect_url is None and state.payment_id == answer.payment_id
    record = read_payment(engine, request.payment_request_id)
    assert record is not None and record.product == PRODUCT
    assert (record.status, record.result_code, record.payment_id, record.customer_id) == (
        PaymentStatus.SUCCESS,
        "SUCCESS",
        answer.payment_id,
        payer,
    )
    assert await harness.notified(request.payment_request_id) == ["SUCCESS"]
    notice = harness.alipayplus.notifications(request.payment_request_id)[0].body
    assert (notice["paymentResult"]["resultStatus"], notice["paymentId"], notice["customerId"]) == (
        "S",
        answer.payment_id,
        payer,
    )
    description = await handle.describe()
    assert description.typed_search_attributes.get(search_attributes.PAYMENT_STATUS) == "SUCCESS"
    assert description.typed_search_attributes.get(search_attributes.CUSTOMER_ID) == payer
    assert database.check().ok
    await save_history(handle, "auto_debit_paid")


async def test_the_same_payment_request_again_gets_the_same_answer_and_no_second_debit(harness: Harness) -> None:
    client, settings, database = harness.client, harness.settings, harness.database
    bound = harness.bound_user(balance=50_000)
    payer = bound.customer_id
    request = debit_request(settings, bound.access_token)

    # one retry while the payment is processed, one after its workflow ended (update-with-start
    # then finds the closed workflow: the API answers from the records, the ledger is not touched again)
    first, during = await asyncio.gather(pay(client, settings, request), pay(client, settings, request))
    await handle_of(client, request).result()
    postings = database.check().postings
    try:
        after: PayResponse | None = await pay(client, settings, request)
    except (RPCError, WorkflowAlreadyStartedError, WorkflowUpdateFailedError):
        after = None  # the workflow has closed: the API answers this one from the records

    assert result_of(first) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)
    assert during == first
    assert after is None or after == first
    assert database.balance(Ledger.user_account_id(payer)) == 50_000 - PRICE.value  # debited once
    assert await harness.notified(request.payment_request_id) == ["SUCCESS"]
    assert database.check().postings == postings
    assert database.check().ok


async def test_a_repeat_racing_the_first_pay_leaves_the_record_final(harness: Harness) -> None:
    client, settings = harness.client, harness.settings
    for _ in range(5):  # the race is lost about one time in two
        request = debit_request(settings, harness.bound_user(balance=50_000).access_token)

        first, again = await asyncio.gather(pay(client, settings, request), pay(client, settings, request))
        await handle_of(client, request).result()
        assert await harness.notified(request.payment_request_id) == ["SUCCESS"]

        assert again == first and result_of(first) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)
        record = read_payment(harness.engine, request.payment_request_id)  # what inquiryPayment and a late pay read
        assert record is not None and (record.status, record.payment_id) == (PaymentStatus.SUCCESS, first.payment_id)


# --- refused, with no money moved ------------------------------------------------------------


async def test_a_revoked_token_is_refused_invalid_token_without_a_debit(harness: Harness) -> None:
    client, settings, database = harness.client, harness.settings, harness.database
    bound = harness.bound_user(balance=50_000)
    payer = bound.customer_id
    assert Agreements(harness.engine, settings.secret_key).revoke(bound.agreement_id, CancelledBy.MERCHANT).changed
    request = debit_request(settings, bound.access_token)
    postings = database.check().postings

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.FAIL, ResultCode.INVALID_TOKEN)
    assert answer.payment_id is None
    handle = handle_of(client, request)
    state = await handle.result()
    assert state.status is PaymentStatus.FAIL and state.payment_result.result_code == ResultCode.INVALID_TOKEN
    assert database.check().postings == postings
    assert database.balance(Ledger.user_account_id(payer)) == 50_000
    assert await harness.notified(request.payment_request_id) == ["INVALID_TOKEN"]
    await save_history(handle, "auto_debit_invalid_token")


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("expired token", ResultCode.EXPIRED_ACCESS_TOKEN),
        ("no AGREEMENT_PAY scope", ResultCode.INVALID_TOKEN),
        ("unknown token", ResultCode.INVALID_TOKEN),
        ("customerId of another user", ResultCode.INVALID_TOKEN),
        ("balance too low", ResultCode.USER_BALANCE_NOT_ENOUGH),
        ("frozen user", ResultCode.USER_STATUS_ABNORMAL),
    ],
)
async def test_each_refusal_of_the_token_or_the_payer_is_final_at_once_without_a_debit(
    harness: Harness, case: str, code: ResultCode
) -> None:
    client, settings, database = harness.client, harness.settings, harness.database
    balance = PRICE.value - 1 if case == "balance too low" else 50_000
    status = UserStatus.FROZEN if case == "frozen user" else UserStatus.ACTIVE
    payer = harness.new_user(balance=balance, status=status)
    if case == "expired token":  # issued longer ago than an access token lives
        issued = datetime.now(UTC).replace(microsecond=0) - settings.access_token_ttl - timedelta(minutes=1)
        token = harness.bind(payer, issued_at=issued).access_token
    elif case == "no AGREEMENT_PAY scope":
        token = harness.bind(payer, scopes=(Scope.BASE_USER_INFO,)).access_token
    elif case == "unknown token":
        token = f"AT{uuid.uuid4().hex}"
    else:
        token = harness.bind(payer).access_token
    named = harness.new_user(balance=0) if case == "customerId of another user" else None
    request = debit_request(settings, token, customer_id=named)
    postings = database.check().postings

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.FAIL, code)
    assert answer.payment_id is None and answer.payment_url is None
    assert (await handle_of(client, request).result()).status is PaymentStatus.FAIL
    record = read_payment(harness.engine, request.payment_request_id)
    assert record is not None and (record.status, record.result_code) == (PaymentStatus.FAIL, code.value)
    assert database.check().postings == postings
    assert database.balance(Ledger.user_account_id(payer)) == balance
    assert await harness.notified(request.payment_request_id) == [code.value]


async def test_a_payment_past_its_expiry_on_arrival_is_closed_without_a_debit(
    env: WorkflowEnvironment, harness: Harness
) -> None:
    client, settings = harness.client, harness.settings
    bound = harness.bound_user(balance=50_000)
    payer = bound.customer_id
    request = debit_request(settings, bound.access_token).model_copy(
        update={"payment_expiry_time": await env.get_current_time() - timedelta(seconds=1)}
    )

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.FAIL, ResultCode.ORDER_IS_CLOSED)
    assert answer.payment_id is None
    assert (await handle_of(client, request).result()).status is PaymentStatus.CLOSED
    assert harness.database.balance(Ledger.user_account_id(payer)) == 50_000
    assert await harness.notified(request.payment_request_id) == ["ORDER_IS_CLOSED"]


# --- a revocation racing the payment -----------------------------------------------------------


async def test_a_revocation_racing_the_payment_either_loses_or_wins_never_both(harness: Harness) -> None:
    client, settings, database, engine = harness.client, harness.settings, harness.database, harness.engine
    agreements = Agreements(engine, settings.secret_key)
    outcomes: list[str] = []

    async def revoke_after(delay: float, agreement_id: str) -> Revoked:
        await asyncio.sleep(delay)
        return await asyncio.to_thread(agreements.revoke, agreement_id, CancelledBy.USER)

    for round_ in range(10):
        bound = harness.bound_user(balance=50_000)
        request = debit_request(settings, bound.access_token)
        account = Ledger.user_account_id(bound.customer_id)

        answer, revoked = await asyncio.gather(
            pay(client, settings, request),
            revoke_after(round_ * 0.002, bound.agreement_id),  # from at once to after the payer check
        )

        assert revoked.changed
        state = await handle_of(client, request).result()
        record = read_payment(engine, request.payment_request_id)
        codes = await harness.notified(request.payment_request_id)
        if result_of(answer) == (ResultStatus.SUCCESS, ResultCode.SUCCESS):  # the check came first
            assert database.balance(account) == 50_000 - PRICE.value
            assert state.status is PaymentStatus.SUCCESS
            assert record is not None and record.status == PaymentStatus.SUCCESS
            assert codes == ["SUCCESS"]
            outcomes.append("S")
        else:  # the revocation came first
            assert result_of(answer) == (ResultStatus.FAIL, ResultCode.INVALID_TOKEN)
            assert answer.payment_id is None
            assert database.balance(account) == 50_000  # no money moved on F
            assert state.status is PaymentStatus.FAIL
            assert record is not None and record.status == PaymentStatus.FAIL
            assert codes == ["INVALID_TOKEN"]
            outcomes.append("F")
        # whatever the order, the token is dead now
        assert agreements.token_owner(bound.access_token).result_code is ResultCode.INVALID_TOKEN
    assert database.check().ok
    assert len(outcomes) == 10
