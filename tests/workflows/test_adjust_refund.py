"""adjustRefund on the time-skipping server: excess and unlinked refunds credited once, never a
business failure (frozen users, refunded-out payments), only technical ones; repeats; an activity
retried after its commit posts nothing more."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.worker import Worker

from activities.adjust_refunds import AdjustRefundActivities
from alipayplus import Amount, PayRequest, ResultCode, ResultStatus
from alipayplus.nfc import AdjustRefundRequest, AdjustRefundResponse, AdjustRefundScenario
from sandbox.alipayplus.driver import adjust_refund_request, nfc_pay_request, refund_request
from tests.conftest import new_user, save_history
from wallet import search_attributes
from wallet.adjust_refunds import AdjustRefundApplication, AdjustRefundOutcome, adjust_refund_key
from wallet.ledger import Ledger
from wallet.orders import AdjustRefundOrder
from wallet.records import AdjustRefundRecord, Posting, read_payment
from wallet.settings import Settings
from wallet.states import UserStatus
from workflows.adjust_refund import PRODUCT, AdjustRefundWorkflow

from .test_nfc_payment import pay
from .test_refunds import cancel, finished, refund

EXCEED, UNLINKED = AdjustRefundScenario.EXCEED_REFUND, AdjustRefundScenario.UNLINKED_REFUND
PRICE = Amount(currency="SGD", value=250)  # SGD 2.50 ...
PAY_TO = Amount(currency="IDR", value=30_000)  # ... paid as IDR 300.00: 120 IDR minor units per SGD cent


def sgd(value: int) -> Amount:
    return Amount(currency="SGD", value=value)


def idr(value: int) -> Amount:
    return Amount(currency="IDR", value=value)


async def paid_tap(client: Client, settings: Settings, payer: str) -> tuple[PayRequest, str]:
    """An NFC payment of SGD 2.50 paid as IDR 300.00; its request and paymentId."""
    request = nfc_pay_request(f"nfc-{uuid.uuid4().hex}", payer, f"tok-{payer}", PRICE, pay_to_amount=PAY_TO)
    answer = await pay(client, settings, request)
    assert answer.result.result_code == ResultCode.SUCCESS and answer.payment_id
    await finished(client, f"pay/{request.payment_request_id}")
    return request, answer.payment_id


def adjustment(scenario: AdjustRefundScenario, amount: Amount, **ids: str) -> AdjustRefundRequest:
    return adjust_refund_request(f"adj-{uuid.uuid4().hex}", scenario, amount, **ids)  # type: ignore[arg-type]


def start_operation(
    settings: Settings, request: AdjustRefundRequest, task_queue: str | None = None
) -> WithStartWorkflowOperation[AdjustRefundWorkflow, AdjustRefundResponse]:
    return WithStartWorkflowOperation(
        AdjustRefundWorkflow.run,
        AdjustRefundOrder(request=request),
        id=f"adjust-refund/{request.refund_request_id}",
        task_queue=task_queue or settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=search_attributes.at_start(PRODUCT, request.payment_request_id or "", "PROCESSING"),
    )


async def adjust(
    client: Client, settings: Settings, request: AdjustRefundRequest, sent: AdjustRefundRequest | None = None
) -> AdjustRefundResponse:
    """adjustRefund as the API sends it: update-with-start of ``adjust-refund/{refundRequestId}``."""
    return await client.execute_update_with_start_workflow(
        AdjustRefundWorkflow.request_adjust_refund,
        sent or request,
        start_workflow_operation=start_operation(settings, request),
    )


def postings_under(engine: Engine, key: str) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Posting).where(col(Posting.idempotency_key) == key)).one()


def stored(engine: Engine, refund_request_id: str) -> AdjustRefundRecord | None:
    with Session(engine) as session:
        return session.get(AdjustRefundRecord, refund_request_id)


# --- excess refunds -------------------------------------------------------------------------


async def test_an_excess_refund_credits_the_payer_at_the_payments_rate_beside_the_normal_refund(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 100_000)
    payment, payment_id = await paid_tap(client, settings, payer)
    account = Ledger.user_account_id(payer)
    # the merchant refunds SGD 3.50 of a SGD 2.50 payment: a refund of 2.50 and an adjustRefund of 1.00
    excess = adjustment(EXCEED, sgd(100), payment_request_id=payment.payment_request_id)

    answer = await adjust(client, settings, excess)

    assert (answer.result.result_status, answer.result.result_code) == (ResultStatus.SUCCESS, ResultCode.SUCCESS)
    assert answer.refund_id and answer.refund_time
    assert database.balance(account) == 100_000 - PAY_TO.value + 12_000  # SGD 1.00 at 120 IDR per SGD cent
    record = read_payment(engine, payment.payment_request_id)
    assert record is not None and (record.refunded_payment_value, record.refunded_pay_to_value) == (0, 0)
    full = await refund(
        client, settings, refund_request(payment, payment_id, f"rf-{uuid.uuid4().hex}", PRICE)
    )  # the payment's part is still the normal refund's to give
    assert full == ResultCode.SUCCESS
    assert database.balance(account) == 100_000 + 12_000
    kept = stored(engine, excess.refund_request_id)
    assert kept is not None and (kept.customer_id, kept.credited_currency, kept.credited_value) == (
        payer,
        "IDR",
        12_000,
    )
    handle = client.get_workflow_handle_for(AdjustRefundWorkflow.run, f"adjust-refund/{excess.refund_request_id}")
    assert await handle.result() == answer
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(search_attributes.PRODUCT) == PRODUCT
    assert attributes.get(search_attributes.PAYMENT_STATUS) == "SUCCESS"
    assert attributes.get(search_attributes.CUSTOMER_ID) == payer
    assert attributes.get(search_attributes.PAYMENT_REQUEST_ID) == payment.payment_request_id
    assert database.check().ok
    await save_history(handle, "adjust_refund_exceed")


async def test_an_excess_refund_in_the_users_currency_is_credited_as_it_is(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 100_000)
    payment, _ = await paid_tap(client, settings, payer)

    answer = await adjust(client, settings, adjustment(EXCEED, idr(777), payment_request_id=payment.payment_request_id))

    assert answer.result.result_code == ResultCode.SUCCESS
    assert database.balance(Ledger.user_account_id(payer)) == 100_000 - PAY_TO.value + 777


async def test_an_excess_refund_of_a_payment_already_cancelled_is_still_credited(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 100_000)
    payment, _ = await paid_tap(client, settings, payer)
    assert await cancel(client, settings, payment.payment_request_id) == ResultCode.SUCCESS

    answer = await adjust(client, settings, adjustment(EXCEED, sgd(10), payment_request_id=payment.payment_request_id))

    assert answer.result.result_code == ResultCode.SUCCESS  # no business failure
    assert database.balance(Ledger.user_account_id(payer)) == 100_000 + 1_200
    assert database.check().ok


# --- unlinked refunds ----------------------------------------------------------------------


async def test_an_unlinked_refund_credits_the_named_user_once(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    user = new_user(engine, database, 0)
    request = adjustment(UNLINKED, idr(7_000), customer_id=user)

    answer = await adjust(client, settings, request)

    assert answer.result.result_code == ResultCode.SUCCESS and answer.refund_id
    assert database.balance(Ledger.user_account_id(user)) == 7_000
    handle = client.get_workflow_handle_for(AdjustRefundWorkflow.run, f"adjust-refund/{request.refund_request_id}")
    assert await handle.result() == answer
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(search_attributes.CUSTOMER_ID) == user
    assert attributes.get(search_attributes.PAYMENT_STATUS) == "SUCCESS"
    assert postings_under(engine, adjust_refund_key(request.refund_request_id)) == 1
    assert database.check().ok
    await save_history(handle, "adjust_refund_unlinked")


async def test_a_frozen_user_is_credited_all_the_same(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    frozen = new_user(engine, database, 500, status=UserStatus.FROZEN)

    answer = await adjust(client, settings, adjustment(UNLINKED, idr(1_500), customer_id=frozen))

    assert answer.result.result_code == ResultCode.SUCCESS
    assert database.balance(Ledger.user_account_id(frozen)) == 2_000


async def test_credits_in_a_currency_with_no_settlement_money_yet_never_fail(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    """Alipay+ owes us what we credit: no settlement balance has to be there first."""
    user = new_user(engine, database, 0, currency="THB")

    answer = await adjust(client, settings, adjustment(UNLINKED, Amount(currency="THB", value=4_200), customer_id=user))

    assert answer.result.result_code == ResultCode.SUCCESS
    assert database.balance(Ledger.user_account_id(user)) == 4_200
    assert database.check().ok


# --- repeats and technical failures --------------------------------------------------------


async def test_repeats_get_the_same_answer_and_a_changed_one_is_inconsistent(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    user = new_user(engine, database, 0)
    request = adjustment(UNLINKED, idr(3_000), customer_id=user)
    changed = request.model_copy(update={"refund_amount": idr(3_001)})

    first, again, inconsistent = await asyncio.gather(
        adjust(client, settings, request), adjust(client, settings, request), adjust(client, settings, request, changed)
    )

    assert first.result.result_code == ResultCode.SUCCESS
    assert again == first
    assert inconsistent.result.result_code == ResultCode.REPEAT_REQ_INCONSISTENT and inconsistent.refund_id is None
    assert database.balance(Ledger.user_account_id(user)) == 3_000


@pytest.mark.parametrize(
    ("scenario", "amount", "ids", "named"),
    [
        (EXCEED, sgd(100), {}, "paymentRequestId"),
        (EXCEED, sgd(100), {"payment_request_id": "no-such-payment"}, "paymentRequestId"),
        (UNLINKED, idr(100), {}, "customerId"),
        (UNLINKED, idr(100), {"customer_id": "2169999999999999"}, "customerId"),
        (UNLINKED, idr(0), {"customer_id": "2160220037535021"}, "refundAmount.value"),
        (UNLINKED, Amount(currency="USD", value=100), {"customer_id": "2160220037535021"}, "refundAmount.currency"),
    ],
    ids=["exceed, no payment", "exceed, unknown payment", "unlinked, no customer", "unknown customer", "zero", "USD"],
)
async def test_technical_failures_are_param_illegal_naming_the_field_and_credit_nothing(
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    scenario: AdjustRefundScenario,
    amount: Amount,
    ids: dict[str, str],
    named: str,
) -> None:
    postings = database.check().postings

    answer = await adjust(client, settings, adjustment(scenario, amount, **ids))

    assert (answer.result.result_status, answer.result.result_code) == (ResultStatus.FAIL, ResultCode.PARAM_ILLEGAL)
    assert answer.result.result_message and answer.result.result_message.startswith(named)
    assert answer.refund_id is None
    assert database.check().postings == postings


async def test_an_excess_refund_in_a_currency_of_neither_side_is_param_illegal(
    client: Client, settings: Settings, worker: Worker, database: Ledger, engine: Engine
) -> None:
    payer = new_user(engine, database, 100_000)
    payment, _ = await paid_tap(client, settings, payer)

    answer = await adjust(
        client,
        settings,
        adjustment(EXCEED, Amount(currency="USD", value=100), payment_request_id=payment.payment_request_id),
    )

    assert answer.result.result_code == ResultCode.PARAM_ILLEGAL
    assert answer.result.result_message == "refundAmount.currency: must be the payment's SGD or IDR"
    assert database.balance(Ledger.user_account_id(payer)) == 100_000 - PAY_TO.value


# --- exactly once ----------------------------------------------------------------------------


class LostAfterCommit:
    """The real activity, whose first run commits and then loses its worker before answering."""

    def __init__(self, real: AdjustRefundActivities) -> None:
        self.real = real
        self.runs = 0

    @activity.defn(name="apply_adjust_refund")
    def apply_adjust_refund(self, application: AdjustRefundApplication) -> AdjustRefundOutcome:
        self.runs += 1
        outcome = self.real.apply_adjust_refund(application)
        if self.runs == 1:
            raise RuntimeError("worker lost after the commit")
        return outcome


async def test_an_activity_retried_after_its_commit_posts_nothing_more(
    client: Client, settings: Settings, database: Ledger, engine: Engine
) -> None:
    user = new_user(engine, database, 0)
    request = adjustment(UNLINKED, idr(2_500), customer_id=user)
    flaky = LostAfterCommit(AdjustRefundActivities(engine=engine, ledger=database))
    queue = f"adjust-retry-{uuid.uuid4().hex[:8]}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[AdjustRefundWorkflow],
            activities=[flaky.apply_adjust_refund],
            activity_executor=executor,
        ):
            handle = await client.start_workflow(
                AdjustRefundWorkflow.run,
                AdjustRefundOrder(request=request),
                id=f"adjust-refund/{request.refund_request_id}",
                task_queue=queue,
            )
            answer = await handle.result()

    assert flaky.runs == 2
    assert answer.result.result_code == ResultCode.SUCCESS and answer.refund_id
    assert database.balance(Ledger.user_account_id(user)) == 2_500  # credited once
    assert postings_under(engine, adjust_refund_key(request.refund_request_id)) == 1
    assert database.check().ok


def test_the_activity_called_again_returns_the_kept_answer(engine: Engine, database: Ledger) -> None:
    user = new_user(engine, database, 0)
    activities = AdjustRefundActivities(engine=engine, ledger=database)
    application = AdjustRefundApplication(
        request=adjustment(UNLINKED, idr(900), customer_id=user), refund_id=uuid.uuid4().hex, now=datetime.now(UTC)
    )

    first = activities.apply_adjust_refund(application)
    again = activities.apply_adjust_refund(application)

    assert first == again and first.result_code is ResultCode.SUCCESS
    assert first.credited == idr(900) and first.customer_id == user
    assert database.balance(Ledger.user_account_id(user)) == 900
    assert postings_under(engine, adjust_refund_key(application.request.refund_request_id)) == 1
