"""Easy Pay on the time-skipping server: every path of the payment workflow."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import (
    Amount,
    AuthorizationInfo,
    NotifyPaymentRequest,
    PayRequest,
    PayResponse,
    Result,
    ResultCode,
    ResultStatus,
)
from sandbox.alipayplus.driver import easy_pay_order
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import save_history, update_unless_closed
from wallet.deliveries import Delivery, NotifyPaymentInput
from wallet.ledger import Ledger
from wallet.orders import USER_CANCELLED, EasyPayOrder, PaymentState, Refusal
from wallet.payments import otp_code
from wallet.secrets import keyed_digest
from wallet.settings import Settings
from wallet.states import PaymentStatus
from workers.worker import build_worker
from workflows.auth_notify import AuthNotifyWorkflow
from workflows.easy_pay import MAX_OTP_RESENDS, EasyPayWorkflow
from workflows.notify_payment import NotifyPaymentWorkflow

PIN_USER = ("852-11112222", "2160220037535021")
OTP_USER = ("852-95303585", "2160220037535020")
POOR_USER = ("852-55556666", "2160220037535023")
PIN = "246810"
PRICE = Amount(currency="IDR", value=5000)


async def order(
    env: WorkflowEnvironment,
    settings: Settings,
    login_id: str,
    *,
    expires_in: timedelta = timedelta(minutes=3),
    **extra: object,
) -> PayRequest:
    """An Easy Pay order expiring ``expires_in`` after the server's (skipped) clock."""
    request = easy_pay_order(f"wf-{uuid.uuid4().hex}", login_id, PRICE, settings.psp_id, **extra)  # type: ignore[arg-type]
    return request.model_copy(update={"payment_expiry_time": await env.get_current_time() + expires_in})


async def ordered(
    client: Client, settings: Settings, request: PayRequest
) -> tuple[WorkflowHandle[EasyPayWorkflow, PaymentState], PayResponse]:
    """The payment's workflow, started on ``settings``' task queue, and its answer to pay #2."""
    handle = await client.start_workflow(
        EasyPayWorkflow.run,
        EasyPayOrder(request=request, verification_page_url="http://testserver/easypay/verify"),
        id=f"pay/{request.payment_request_id}",
        task_queue=settings.temporal_task_queue,
    )
    return handle, await handle.execute_update(EasyPayWorkflow.create_order, request)


async def start(
    client: Client, settings: Settings, request: PayRequest
) -> WorkflowHandle[EasyPayWorkflow, PaymentState]:
    handle, answer = await ordered(client, settings, request)
    assert answer.result.result_status is ResultStatus.UNKNOWN
    assert answer.result.result_code == ResultCode.PAYMENT_IN_PROCESS
    assert answer.payment_url and answer.payment_id and answer.payment_url.endswith(answer.payment_id)
    return handle


def pin(settings: Settings, customer_id: str, code: str = PIN) -> str:
    return keyed_digest(settings.secret_key, "pin", customer_id, code)


def otp(settings: Settings, state: PaymentState) -> str:
    challenge = state.otp_challenge_id or ""
    return keyed_digest(settings.secret_key, "otp", challenge, otp_code(settings.secret_key, challenge))


async def test_pin_payment_debits_once_and_notifies(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    database: Ledger,
    alipayplus: SandboxAlipayPlus,
) -> None:
    request = await order(env, settings, PIN_USER[0])
    account = Ledger.user_account_id(PIN_USER[1])
    before = database.balance(account)
    handle = await start(client, settings, request)

    outcome = await handle.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1]))

    assert outcome.accepted
    assert outcome.state.status is PaymentStatus.SUCCESS
    assert outcome.state.redirect_url and outcome.state.redirect_url.endswith("status=success")
    state = await handle.result()
    assert state.payment_result.result_code == ResultCode.SUCCESS and state.payment_time is not None
    assert database.balance(account) == before - PRICE.value
    notify = client.get_workflow_handle_for(NotifyPaymentWorkflow.run, f"notify/{request.payment_request_id}")
    assert (await notify.result()).delivery is Delivery.ACKNOWLEDGED
    notices = alipayplus.notifications(request.payment_request_id)
    assert [n.body["paymentResult"]["resultStatus"] for n in notices] == ["S"]
    assert database.check().ok
    await save_history(handle, "easy_pay_success")
    await save_history(notify, "notify_payment")


async def test_wrong_code_then_right_code(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    handle = await start(client, settings, await order(env, settings, PIN_USER[0]))

    wrong = await handle.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1], "000000"))
    right = await handle.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1]))

    assert not wrong.accepted and wrong.state.attempts_left == 2 and wrong.state.status is PaymentStatus.PROCESSING
    assert right.accepted and right.state.status is PaymentStatus.SUCCESS
    await save_history(handle, "easy_pay_wrong_then_right")


async def test_attempts_are_bounded(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    handle = await start(client, settings, await order(env, settings, PIN_USER[0]))

    outcomes = [
        await handle.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1], "111111")) for _ in range(3)
    ]
    late_right = await update_unless_closed(handle, EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1]))

    assert [o.state.attempts_left for o in outcomes] == [2, 1, 0]
    final = outcomes[-1].state
    assert late_right is None or (not late_right.accepted and late_right.state.status is PaymentStatus.FAIL)
    assert final.status is PaymentStatus.FAIL
    assert final.payment_result.result_code == ResultCode.USER_PAYMENT_VERIFICATION_FAILED
    assert final.redirect_url and final.redirect_url.endswith("status=fail")


async def test_otp_resend_replaces_the_code(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, alipayplus: SandboxAlipayPlus
) -> None:
    handle = await start(client, settings, await order(env, settings, OTP_USER[0]))
    first = await handle.query(EasyPayWorkflow.state)
    while first.otp_challenge_id is None:  # the code goes out just after pay #2 is answered
        await asyncio.sleep(0.05)
        first = await handle.query(EasyPayWorkflow.state)
    assert first.otp_sent_to and first.otp_challenge_id

    resent = await handle.execute_update(EasyPayWorkflow.resend_otp)
    old_code = await handle.execute_update(EasyPayWorkflow.submit_code, otp(settings, first))
    new_code = await handle.execute_update(EasyPayWorkflow.submit_code, otp(settings, resent.state))

    assert resent.accepted and resent.state.otp_challenge_id != first.otp_challenge_id
    assert not old_code.accepted
    assert new_code.accepted and new_code.state.status is PaymentStatus.SUCCESS
    texts = alipayplus.sms("+85295303585")
    assert texts[-1].text.startswith(otp_code(settings.secret_key, resent.state.otp_challenge_id or ""))
    await save_history(handle, "easy_pay_otp_resend")


async def test_expiry_closes_the_order(
    env: WorkflowEnvironment,
    client: Client,
    settings: Settings,
    worker: Worker,
    alipayplus: SandboxAlipayPlus,
    database: Ledger,
) -> None:
    request = await order(env, settings, PIN_USER[0], expires_in=timedelta(minutes=3))
    account = Ledger.user_account_id(PIN_USER[1])
    before = database.balance(account)
    handle = await start(client, settings, request)

    state = await handle.result()  # three minutes pass in milliseconds

    assert state.status is PaymentStatus.CLOSED
    assert state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert database.balance(account) == before
    await client.get_workflow_handle(f"notify/{request.payment_request_id}").result()
    assert (
        alipayplus.notifications(request.payment_request_id)[-1].body["paymentResult"]["resultCode"]
        == "ORDER_IS_CLOSED"
    )
    await save_history(handle, "easy_pay_expired")


async def test_insufficient_balance_fails_at_order_creation(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    request = await order(env, settings, POOR_USER[0])
    handle = await client.start_workflow(
        EasyPayWorkflow.run,
        EasyPayOrder(request=request, verification_page_url="http://testserver/easypay/verify"),
        id=f"pay/{request.payment_request_id}",
        task_queue=settings.temporal_task_queue,
    )

    state = await handle.result()

    assert state.status is PaymentStatus.FAIL
    assert state.payment_result.result_code == ResultCode.USER_BALANCE_NOT_ENOUGH


async def test_repeat_with_changed_key_fields_is_inconsistent(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker
) -> None:
    request = await order(env, settings, PIN_USER[0])
    handle = await start(client, settings, request)

    same = await handle.execute_update(EasyPayWorkflow.create_order, request)
    changed = request.model_copy(update={"pay_to_amount": Amount(currency="IDR", value=PRICE.value + 1)})
    different = await handle.execute_update(EasyPayWorkflow.create_order, changed)

    first = await handle.query(EasyPayWorkflow.state)
    assert same.payment_id == first.payment_id and same.result.result_code == ResultCode.PAYMENT_IN_PROCESS
    assert different.result.result_code == ResultCode.REPEAT_REQ_INCONSISTENT


async def test_notify_is_retried_after_u_until_s(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, alipayplus: SandboxAlipayPlus
) -> None:
    alipayplus.script("notifyPayment", ["U", "SILENT", "S"])
    request = await order(env, settings, PIN_USER[0])
    handle = await start(client, settings, request)
    await handle.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1]))
    await handle.result()

    notify = client.get_workflow_handle_for(NotifyPaymentWorkflow.run, f"notify/{request.payment_request_id}")
    for _ in range(20):
        if (await notify.describe()).status.name != "RUNNING":
            break
        await env.sleep(timedelta(seconds=40))  # past the 5 s and 30 s retry delays
    report = await notify.result()

    assert report.delivery is Delivery.ACKNOWLEDGED
    bodies = alipayplus.notifications(request.payment_request_id)
    assert len(bodies) == 3
    assert all(received.body == bodies[0].body for received in bodies)  # retries resend the same body
    assert await notify.query(NotifyPaymentWorkflow.attempts) == 3


async def test_one_click_consent_issues_a_token_and_retries_auth_notify(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, alipayplus: SandboxAlipayPlus
) -> None:
    alipayplus.script("authNotify", ["U", "S"])
    agreement = f"agr-{uuid.uuid4().hex}"
    request = await order(
        env,
        settings,
        PIN_USER[0],
        authorization=AuthorizationInfo(
            auth_client_id="2188120040699147", auth_state="st", reference_agreement_id=agreement
        ),
    )
    handle = await start(client, settings, request)
    await handle.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1]))
    await handle.result()

    auth = client.get_workflow_handle_for(AuthNotifyWorkflow.run, f"auth/{agreement}")
    for _ in range(10):
        if (await auth.describe()).status.name != "RUNNING":
            break
        await env.sleep(timedelta(seconds=10))
    report = await auth.result()

    assert report.delivery is Delivery.ACKNOWLEDGED
    notices = alipayplus.auth_notifications(agreement)
    assert len(notices) == 2
    assert notices[0].body["authorizationNotifyType"] == "TOKEN_CREATED"
    assert notices[0].body["accessToken"] == notices[1].body["accessToken"]  # a retry sends the same token
    assert notices[0].body["customerId"] == PIN_USER[1]
    await save_history(auth, "auth_notify")
    await save_history(handle, "easy_pay_one_click")


@pytest.mark.parametrize(
    "login_id,code", [(PIN_USER[0], "SUCCESS"), ("852-33334444", "USER_STATUS_ABNORMAL"), ("000", "USER_NOT_EXIST")]
)
async def test_account_evaluation(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, login_id: str, code: str
) -> None:
    from sandbox.alipayplus.driver import easy_pay_evaluation
    from workflows.account_evaluation import AccountEvaluationWorkflow

    request = easy_pay_evaluation(f"ev-{uuid.uuid4().hex}", login_id, PRICE, settings.psp_id)
    handle = await client.start_workflow(
        AccountEvaluationWorkflow.run,
        request,
        id=f"evaluation/{request.payment_request_id}",
        task_queue=settings.temporal_task_queue,
    )

    answer = await handle.result()

    assert answer.result.result_code == code
    if code == "SUCCESS":
        await save_history(handle, "account_evaluation")


async def test_balance_spent_elsewhere_before_verification_fails_the_debit(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    request = await order(env, settings, PIN_USER[0])
    handle = await start(client, settings, request)
    account = Ledger.user_account_id(PIN_USER[1])
    elsewhere = database.balance(account) - PRICE.value + 1  # leaves one minor unit too few
    spend = f"test/{request.payment_request_id}/spend"
    database.post(
        spend, "PAYMENT_DEBIT", spend, [(account, -elsewhere), (database.settlement_account("IDR"), elsewhere)]
    )
    try:
        outcome = await handle.execute_update(EasyPayWorkflow.submit_code, pin(settings, PIN_USER[1]))
        assert not outcome.accepted
        assert outcome.state.status is PaymentStatus.FAIL
        assert outcome.state.payment_result.result_code == ResultCode.USER_BALANCE_NOT_ENOUGH
        assert outcome.state.redirect_url and outcome.state.redirect_url.endswith("status=fail")
        assert database.balance(account) == PRICE.value - 1
    finally:  # give the money back for the other tests
        back = f"test/{request.payment_request_id}/back"
        database.post(back, "TOP_UP", back, [(database.settlement_account("IDR"), -elsewhere), (account, elsewhere)])
    assert database.check().ok


async def test_notify_retries_survive_a_worker_restart(
    env: WorkflowEnvironment, client: Client, settings: Settings, activities: list[Any], alipayplus: SandboxAlipayPlus
) -> None:
    """The retry schedule is durable timers: a worker that dies between attempts loses nothing."""
    own_queue = settings.model_copy(update={"temporal_task_queue": f"restart-{uuid.uuid4().hex[:8]}"})
    request_id = f"wf-{uuid.uuid4().hex}"
    alipayplus.script("notifyPayment", ["U"], subject=request_id)
    notice = NotifyPaymentInput(
        request=NotifyPaymentRequest(
            payment_result=Result.success(),
            payment_request_id=request_id,
            payment_id=uuid.uuid4().hex,
            pay_to_amount=PRICE,
            payment_amount=PRICE,
        )
    )

    # no workflow cache, so no sticky queue: the next task goes to whichever worker polls
    async with build_worker(client, own_queue, activities, max_cached_workflows=0):  # attempt 1 (U) ...
        notify = await client.start_workflow(
            NotifyPaymentWorkflow.run, notice, id=f"notify/{request_id}", task_queue=own_queue.temporal_task_queue
        )
        while not alipayplus.notifications(request_id):
            await asyncio.sleep(0.05)
    await env.sleep(timedelta(seconds=6))  # ... then dies; the 5 s retry timer fires with no worker
    assert (await notify.describe()).status.name == "RUNNING"
    async with build_worker(client, own_queue, activities, max_cached_workflows=0):  # a new worker carries on
        report = await client.get_workflow_handle_for(NotifyPaymentWorkflow.run, notify.id).result()

    assert report.delivery is Delivery.ACKNOWLEDGED
    bodies = [received.body for received in alipayplus.notifications(request_id)]
    assert len(bodies) == 2 and bodies[0] == bodies[1]  # the same body, resent


async def test_the_user_cancels_on_the_page_and_nothing_is_debited(
    env: WorkflowEnvironment, client: Client, settings: Settings, worker: Worker, database: Ledger
) -> None:
    account = Ledger.user_account_id(OTP_USER[1])
    before = database.balance(account)
    handle = await start(client, settings, await order(env, settings, OTP_USER[0]))
    shown = await handle.query(EasyPayWorkflow.state)

    declined = await handle.execute_update(EasyPayWorkflow.decline)
    late_code = await update_unless_closed(handle, EasyPayWorkflow.submit_code, otp(settings, shown))
    declined_again = await update_unless_closed(handle, EasyPayWorkflow.decline)
    final = await handle.result()

    assert shown.otp_resends_left == MAX_OTP_RESENDS and shown.paying_account == "•••-••••3585"  # what the page shows
    assert not declined.accepted and declined.state.status is PaymentStatus.CLOSED
    assert declined.state.payment_result.result_code == ResultCode.ORDER_IS_CLOSED
    assert declined.state.payment_result.result_message == USER_CANCELLED
    assert declined.state.redirect_url and declined.state.redirect_url.endswith("status=fail")
    # a code or a second cancel too late: refused while the order still runs, else it has closed
    assert late_code is None or (late_code.refusal is Refusal.NOT_WAITING and not late_code.accepted)
    assert declined_again is None or declined_again.refusal is Refusal.NOT_WAITING
    assert final.status is PaymentStatus.CLOSED and final.payment_time is None
    assert database.balance(account) == before
    await save_history(handle, "easy_pay_declined")
