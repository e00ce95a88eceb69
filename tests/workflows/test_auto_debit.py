"""Auto Debit on the time-skipping server: a pay with an agreement's access token, answered final
(S or F) at once, debited once; each refusal of the token and of the payer; and a revocation racing
the payment, which either loses (S, one debit) or wins (F INVALID_TOKEN, no money moves).

Agreements are bound as in production (prepare, the user's consent, applyToken with the authCode);
every payer is a fresh user of our own, so balances and limits are the test's alone.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import (
    Amount,
    PaymentFactor,
    PaymentMethod,
    PayRequest,
    PayResponse,
    PrepareRequest,
    ResultCode,
    ResultStatus,
    Scope,
)
from sandbox.alipayplus.driver import ACQUIRER_ID, PAYMENT_METHOD_TYPE, apply_token_request, easy_pay_order
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import new_user, save_history
from wallet import search_attributes
from wallet.agreements import Agreements, CancelledBy, Consented, Revoked
from wallet.deliveries import Delivery
from wallet.ledger import Ledger
from wallet.oauth import Authorizations, TokenLifetimes
from wallet.orders import AutoDebitOrder, PaymentState
from wallet.records import read_payment
from wallet.settings import Settings
from wallet.states import PaymentStatus, UserStatus
from workflows.auto_debit import PRODUCT, AutoDebitWorkflow
from workflows.notify_payment import NotifyPaymentWorkflow
from workflows.payment_order import PaymentOrderWorkflow

PRICE = Amount(currency="IDR", value=15_000)
AUTH_CLIENT_ID = "2188120040699147"  # the merchant's client, as in seed 004
AutoDebitHandle = WorkflowHandle[AutoDebitWorkflow, PaymentState]


# --- binding an agreement, as Alipay+ and the user do -------------------------------------


@dataclass(frozen=True)
class Bound:
    agreement_id: str
    reference_agreement_id: str
    access_token: str
    customer_id: str


def bind(
    engine: Engine,
    settings: Settings,
    customer_id: str,
    *,
    scopes: tuple[Scope, ...] = (Scope.AGREEMENT_PAY,),
    issued_at: datetime | None = None,
) -> Bound:
    """An ACTIVE Auto Debit agreement of ``customer_id``'s: prepare, consent, applyToken (the pair
    issued at ``issued_at``, default now)."""
    agreements = Agreements(engine, settings.secret_key, consent_page_url="http://testserver/agreements")
    reference = f"agr-{uuid.uuid4().hex}"
    prepare = PrepareRequest(
        psp_id=settings.psp_id,
        acquirer_id=ACQUIRER_ID,
        auth_client_id=AUTH_CLIENT_ID,
        auth_client_name="Sandbox Subscriptions",
        reference_merchant_id=AUTH_CLIENT_ID,
        reference_agreement_id=reference,
        auth_redirect_url="https://merchant.example.com/bound",
        scopes=list(scopes),
        auth_state="st",
    )
    prepared = agreements.prepare(prepare)
    assert prepared.result.result_status is ResultStatus.SUCCESS and prepared.auth_url
    agreement_id = prepared.auth_url.rsplit("/", 1)[-1]
    consented = agreements.consent(agreement_id, customer_id)
    assert isinstance(consented, Consented)
    lifetimes = TokenLifetimes(
        auth_code=timedelta(minutes=5),
        access_token=settings.access_token_ttl,
        refresh_token=settings.refresh_token_ttl,
    )
    clock = {"clock": lambda: issued_at} if issued_at is not None else {}
    authorizations = Authorizations(engine, settings.secret_key, lifetimes, **clock)  # type: ignore[arg-type]
    applied = authorizations.apply_token(apply_token_request(auth_code=consented.auth_code, psp_id=settings.psp_id))
    assert applied.result.result_status is ResultStatus.SUCCESS and applied.access_token
    assert applied.customer_id == customer_id
    return Bound(agreement_id, reference, applied.access_token, customer_id)


# --- paying with it, as the API does -----------------------------------------------------


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


def start_operation(
    settings: Settings, request: PayRequest
) -> WithStartWorkflowOperation[AutoDebitWorkflow, PaymentState]:
    return WithStartWorkflowOperation(
        AutoDebitWorkflow.run,
        AutoDebitOrder(request=request),
        id=f"pay/{request.payment_request_id}",
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=search_attributes.at_start(PRODUCT, request.payment_request_id, PaymentStatus.PROCESSING),
    )


async def pay(client: Client, settings: Settings, request: PayRequest) -> PayResponse:
    """pay as the API sends it: update-with-start of ``pay/{paymentRequestId}``."""
    return await client.execute_update_with_start_workflow(
        PaymentOrderWorkflow.create_order, request, start_workflow_operation=start_operation(settings, request)
    )


def handle_of(client: Client, request: PayRequest) -> AutoDebitHandle:
    return client.get_workflow_handle_for(AutoDebitWorkflow.run, f"pay/{request.payment_request_id}")


async def notified(client: Client, alipayplus: SandboxAlipayPlus, payment_request_id: str) -> list[str]:
    """The payment's notifyPayment, once acknowledged (none left retrying to hold the clock)."""
    notify = client.get_workflow_handle_for(NotifyPaymentWorkflow.run, f"notify/{payment_request_id}")
    assert (await notify.result()).delivery is Delivery.ACKNOWLEDGED
    return [n.body["paymentResult"]["resultCode"] for n in alipayplus.notifications(payment_request_id)]


def result_of(answer: PayResponse) -> tuple[ResultStatus, str]:
    return answer.result.result_status, answer.result.result_code


# --- paid ---------------------------------------------------------------------------------


async def test_a_live_token_pays_at_once_debits_once_and_notifies(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
) -> None:
    payer = new_user(engine, database, balance=50_000)
    bound = bind(engine, settings, payer)
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
    assert await notified(client, alipayplus, request.payment_request_id) == ["SUCCESS"]
    notice = alipayplus.notifications(request.payment_request_id)[0].body
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


async def test_the_same_payment_request_again_gets_the_same_answer_and_no_second_debit(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
) -> None:
    payer = new_user(engine, database, balance=50_000)
    request = debit_request(settings, bind(engine, settings, payer).access_token)

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
    assert await notified(client, alipayplus, request.payment_request_id) == ["SUCCESS"]
    assert database.check().postings == postings
    assert database.check().ok


async def test_a_repeat_racing_the_first_pay_leaves_the_record_final(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
) -> None:
    for _ in range(5):  # the race is lost about one time in two
        payer = new_user(engine, database, balance=50_000)
        request = debit_request(settings, bind(engine, settings, payer).access_token)

        first, again = await asyncio.gather(pay(client, settings, request), pay(client, settings, request))
        await handle_of(client, request).result()
        assert await notified(client, alipayplus, request.payment_request_id) == ["SUCCESS"]

        assert again == first and result_of(first) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)
        record = read_payment(engine, request.payment_request_id)  # what inquiryPayment and a late pay read
        assert record is not None and (record.status, record.payment_id) == (PaymentStatus.SUCCESS, first.payment_id)


# --- refused, with no money moved ------------------------------------------------------------


async def test_a_revoked_token_is_refused_invalid_token_without_a_debit(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
) -> None:
    payer = new_user(engine, database, balance=50_000)
    bound = bind(engine, settings, payer)
    assert Agreements(engine, settings.secret_key).revoke(bound.agreement_id, CancelledBy.MERCHANT).changed
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
    assert await notified(client, alipayplus, request.payment_request_id) == ["INVALID_TOKEN"]
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
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
    case: str,
    code: ResultCode,
) -> None:
    balance = PRICE.value - 1 if case == "balance too low" else 50_000
    status = UserStatus.FROZEN if case == "frozen user" else UserStatus.ACTIVE
    payer = new_user(engine, database, balance=balance, status=status)
    if case == "expired token":  # issued longer ago than an access token lives
        issued = datetime.now(UTC).replace(microsecond=0) - settings.access_token_ttl - timedelta(minutes=1)
        token = bind(engine, settings, payer, issued_at=issued).access_token
    elif case == "no AGREEMENT_PAY scope":
        token = bind(engine, settings, payer, scopes=(Scope.BASE_USER_INFO,)).access_token
    elif case == "unknown token":
        token = f"AT{uuid.uuid4().hex}"
    else:
        token = bind(engine, settings, payer).access_token
    named = new_user(engine, database, balance=0) if case == "customerId of another user" else None
    request = debit_request(settings, token, customer_id=named)
    postings = database.check().postings

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.FAIL, code)
    assert answer.payment_id is None and answer.payment_url is None
    assert (await handle_of(client, request).result()).status is PaymentStatus.FAIL
    record = read_payment(engine, request.payment_request_id)
    assert record is not None and (record.status, record.result_code) == (PaymentStatus.FAIL, code.value)
    assert database.check().postings == postings
    assert database.balance(Ledger.user_account_id(payer)) == balance
    assert await notified(client, alipayplus, request.payment_request_id) == [code.value]


async def test_a_payment_past_its_expiry_on_arrival_is_closed_without_a_debit(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
) -> None:
    payer = new_user(engine, database, balance=50_000)
    request = debit_request(settings, bind(engine, settings, payer).access_token).model_copy(
        update={"payment_expiry_time": await env.get_current_time() - timedelta(seconds=1)}
    )

    answer = await pay(client, settings, request)

    assert result_of(answer) == (ResultStatus.FAIL, ResultCode.ORDER_IS_CLOSED)
    assert answer.payment_id is None
    assert (await handle_of(client, request).result()).status is PaymentStatus.CLOSED
    assert database.balance(Ledger.user_account_id(payer)) == 50_000
    assert await notified(client, alipayplus, request.payment_request_id) == ["ORDER_IS_CLOSED"]


# --- a revocation racing the payment -----------------------------------------------------------


async def test_a_revocation_racing_the_payment_either_loses_or_wins_never_both(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    engine: Engine,
    alipayplus: SandboxAlipayPlus,
) -> None:
    agreements = Agreements(engine, settings.secret_key)
    outcomes: list[str] = []

    async def revoke_after(delay: float, agreement_id: str) -> Revoked:
        await asyncio.sleep(delay)
        return await asyncio.to_thread(agreements.revoke, agreement_id, CancelledBy.USER)

    for round_ in range(10):
        payer = new_user(engine, database, balance=50_000)
        bound = bind(engine, settings, payer)
        request = debit_request(settings, bound.access_token)
        account = Ledger.user_account_id(payer)

        answer, revoked = await asyncio.gather(
            pay(client, settings, request),
            revoke_after(round_ * 0.002, bound.agreement_id),  # from at once to after the payer check
        )

        assert revoked.changed
        state = await handle_of(client, request).result()
        record = read_payment(engine, request.payment_request_id)
        codes = await notified(client, alipayplus, request.payment_request_id)
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
