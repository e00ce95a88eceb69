"""What the sandbox Alipay+ sends the MPP: seed samples, Easy Pay and refund builders,
pay/inquiry/refund/cancel, and the inquiry schedule (which cancels after its last inquiry)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import (
    Amount,
    AuthorizationInfo,
    CancelPaymentRequest,
    CancelPaymentResponse,
    InquiryPaymentRequest,
    InquiryPaymentResponse,
    Message,
    PayRequest,
    PayResponse,
    RefundRequest,
    RefundResponse,
    Result,
    ResultCode,
    ResultStatus,
    Signer,
    TransportError,
    Verifier,
)
from sandbox.alipayplus.driver import (
    AlipayPlusDriver,
    easy_pay_evaluation,
    easy_pay_order,
    refund_request,
    sample_requests,
)
from sandbox.alipayplus.inquiry import (
    InquiryOutcome,
    InquirySchedule,
    InquiryScheduleWorkflow,
    SandboxActivities,
    inquiry_workflow_id,
)
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.alipayplus.transport import TimeoutASGITransport
from tests.conftest import save_history

from .conftest import Keys

SEED = Path("/work/shared/seeds/004_0cd8ce06f1fcdd23.txt")
MPP_URL = "http://mpp.test"
PSP_ID = "1022160000000000000"


class FakeMpp:
    """The MPP's pay/inquiryPayment/refund/cancelPayment endpoints, reduced to: check Alipay+'s
    signature, answer as scripted."""

    def __init__(self, signer: Signer, verifier: Verifier) -> None:
        self.inquiry_answers: list[Result] = []
        self.cancel_answers: list[Result] = []
        self.received: list[Message] = []
        self.app = FastAPI()

        def signed(path: str, message: Message) -> Response:
            body = message.to_wire()
            return Response(content=body, headers=signer.headers(path, body, response=True))

        @self.app.post(PayRequest.PATH)
        async def pay(request: Request) -> Response:
            body = await request.body()
            verifier.check(request.url.path, request.headers, body)
            pay_request = PayRequest.from_wire(body)
            self.received.append(pay_request)
            return signed(
                PayRequest.PATH,
                PayResponse(
                    result=Result.of(ResultCode.PAYMENT_IN_PROCESS),
                    payment_id="P1",
                    payment_url=f"http://mpp.test/verify/{pay_request.payment_request_id}",
                ),
            )

        @self.app.post(InquiryPaymentRequest.PATH)
        async def inquire(request: Request) -> Response:
            body = await request.body()
            verifier.check(request.url.path, request.headers, body)
            inquiry = InquiryPaymentRequest.from_wire(body)
            self.received.append(inquiry)
            payment_result = (
                self.inquiry_answers.pop(0) if self.inquiry_answers else Result.of(ResultCode.PAYMENT_IN_PROCESS)
            )
            return signed(
                InquiryPaymentRequest.PATH,
                InquiryPaymentResponse(
                    result=Result.success(),
                    payment_result=payment_result,
                    payment_request_id=inquiry.payment_request_id,
                ),
            )

        @self.app.post(RefundRequest.PATH)
        async def refund(request: Request) -> Response:
            body = await request.body()
            verifier.check(request.url.path, request.headers, body)
            self.received.append(RefundRequest.from_wire(body))
            return signed(RefundRequest.PATH, RefundResponse(result=Result.success(), refund_id="R1"))

        @self.app.post(CancelPaymentRequest.PATH)
        async def cancel(request: Request) -> Response:
            body = await request.body()
            verifier.check(request.url.path, request.headers, body)
            self.received.append(CancelPaymentRequest.from_wire(body))
            result = self.cancel_answers.pop(0) if self.cancel_answers else Result.success()
            return signed(CancelPaymentRequest.PATH, CancelPaymentResponse(result=result))


@pytest.fixture
def fake_mpp(mpp_signer: Signer, alipayplus_verifier: Verifier) -> FakeMpp:
    return FakeMpp(mpp_signer, alipayplus_verifier)


@pytest.fixture
async def driver(peer: SandboxAlipayPlus, fake_mpp: FakeMpp) -> AsyncIterator[AlipayPlusDriver]:
    async with AlipayPlusDriver.for_peer(peer, MPP_URL, transport=TimeoutASGITransport(app=fake_mpp.app)) as driver:
        yield driver


def test_seed_samples_parse_as_pay_requests() -> None:
    evaluation, order = (PayRequest.from_wire(body) for body in sample_requests())

    assert evaluation.payment_factor.is_payment_evaluation and evaluation.payment_factor.is_easy_pay_scenario
    assert evaluation.payment_method.payment_method_id is None  # "" in the sample means absent
    assert evaluation.pay_to_amount == Amount(currency="IDR", value=50)
    assert order.payment_factor.is_authorization_and_pay and not order.payment_factor.is_payment_evaluation
    assert order.authorization_info is not None
    assert order.authorization_info.reference_agreement_id == "2023091819074101000380025683717"
    assert order.payment_expiry_time == datetime(2023, 9, 18, 9, 47, 51, tzinfo=timezone(timedelta(hours=8)))


@pytest.mark.skipif(not SEED.exists(), reason="seed text not on this machine")
def test_seed_samples_are_verbatim() -> None:
    seed = SEED.read_bytes()
    assert all(body in seed for body in sample_requests())


def test_easy_pay_builders_follow_the_seed() -> None:
    amount = Amount(currency="HKD", value=5000)
    evaluation = easy_pay_evaluation("PR1", "852-95303585", amount, PSP_ID)
    authorization = AuthorizationInfo(auth_client_id="2188120040699147", auth_state="s1", reference_agreement_id="AG1")
    order = easy_pay_order("PR1", "852-95303585", amount, PSP_ID, authorization=authorization)
    plain = easy_pay_order("PR2", "852-95303585", amount, PSP_ID, expires_in=timedelta(minutes=1))

    factor = evaluation.payment_factor
    assert factor.is_agreement_payment and factor.is_easy_pay_scenario and factor.is_payment_evaluation
    assert order.payment_factor.is_authorization_and_pay and not order.payment_factor.is_payment_evaluation
    assert not plain.payment_factor.is_authorization_and_pay and plain.authorization_info is None
    assert order.payment_redirect_url == "http://127.0.0.1:8001/sandbox/result?paymentRequestId=PR1"
    assert order.payment_expiry_time is not None
    remaining = order.payment_expiry_time - datetime.now(UTC)
    assert timedelta(minutes=9) < remaining <= timedelta(minutes=10)
    # the wire form round-trips and says "true" as strings, like the samples
    wire = order.to_wire()
    assert b'"isAuthorizationAndPay":"true"' in wire and b'"paymentMethodMetaData"' in wire
    assert PayRequest.from_wire(wire) == order


async def test_driver_pay_and_inquire_are_signed_both_ways(driver: AlipayPlusDriver, fake_mpp: FakeMpp) -> None:
    paid = await driver.pay(easy_pay_evaluation("PR1", "852-95303585", Amount(currency="HKD", value=50), PSP_ID))
    inquired = await driver.inquire("PR1")

    assert paid.result.result_status is ResultStatus.UNKNOWN and paid.payment_url == "http://mpp.test/verify/PR1"
    assert inquired.payment_result is not None and inquired.payment_result.result_code == "PAYMENT_IN_PROCESS"
    assert [type(m).__name__ for m in fake_mpp.received] == ["PayRequest", "InquiryPaymentRequest"]


def test_refund_builder_refers_to_the_payment() -> None:
    order = easy_pay_order("PR1", "852-95303585", Amount(currency="IDR", value=5000), PSP_ID)
    half = Amount(currency="IDR", value=2500)

    refund = refund_request(order, "P1", "RF1", half)
    converted = refund_request(order, "P1", "RF2", half, refund_from_amount=Amount(currency="IDR", value=2400))

    assert (refund.acquirer_id, refund.psp_id, refund.payment_request_id) == (order.acquirer_id, PSP_ID, "PR1")
    assert (refund.payment_id, refund.refund_request_id, refund.refund_amount) == ("P1", "RF1", half)
    assert refund.refund_from_amount is None and b"refundFromAmount" not in refund.to_wire()
    assert converted.refund_from_amount == Amount(currency="IDR", value=2400)
    assert refund.key_fields_digest() != converted.key_fields_digest()


async def test_driver_refund_and_cancel_are_signed_both_ways(driver: AlipayPlusDriver, fake_mpp: FakeMpp) -> None:
    order = easy_pay_order("PR1", "852-95303585", Amount(currency="IDR", value=5000), PSP_ID)
    refunded = await driver.refund(refund_request(order, "P1", "RF1", Amount(currency="IDR", value=100)))
    cancelled = await driver.cancel("PR1")

    assert refunded.result.is_success and refunded.refund_id == "R1"
    assert cancelled.result.is_success
    assert [type(m).__name__ for m in fake_mpp.received] == ["RefundRequest", "CancelPaymentRequest"]
    cancel = fake_mpp.received[1]
    assert isinstance(cancel, CancelPaymentRequest)
    assert (cancel.payment_request_id, cancel.psp_id, cancel.acquirer_id) == ("PR1", PSP_ID, "1022188000000000001")


async def test_driver_rejects_answers_not_signed_by_the_mpp(
    peer: SandboxAlipayPlus, keys: Keys, alipayplus_verifier: Verifier
) -> None:
    impostor = Signer.from_pem(peer.signer.client_id, keys.alipayplus.private_pem)  # not the MPP's key
    fake = FakeMpp(impostor, alipayplus_verifier)
    async with AlipayPlusDriver.for_peer(peer, MPP_URL, transport=TimeoutASGITransport(app=fake.app)) as driver:
        with pytest.raises(TransportError, match="INVALID_SIGNATURE"):
            await driver.inquire("PR1")


async def _run_schedule(
    env: WorkflowEnvironment, driver: AlipayPlusDriver, schedule: InquirySchedule
) -> tuple[InquiryOutcome, int]:
    task_queue = f"sandbox-test-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[InquiryScheduleWorkflow],
        activities=SandboxActivities(driver).all(),
    ):
        handle = await env.client.start_workflow(
            InquiryScheduleWorkflow.run,
            schedule,
            id=inquiry_workflow_id(schedule.payment_request_id),
            task_queue=task_queue,
        )
        outcome = await handle.result()
        if outcome.final:
            await save_history(handle, "inquiry_schedule")
        return outcome, await handle.query(InquiryScheduleWorkflow.inquiries)


async def test_inquiry_schedule_stops_at_the_first_final_result(
    env: WorkflowEnvironment, driver: AlipayPlusDriver, fake_mpp: FakeMpp
) -> None:
    fake_mpp.inquiry_answers = [
        Result.of(ResultCode.PAYMENT_IN_PROCESS),
        Result.of(ResultCode.PAYMENT_IN_PROCESS),
        Result.success(),
    ]
    request_id = f"PR-{uuid.uuid4().hex[:12]}"
    schedule = InquirySchedule(payment_request_id=request_id, acquirer_id="1022188000000000001", psp_id=PSP_ID)

    outcome, inquiries = await _run_schedule(env, driver, schedule)

    assert outcome.final and outcome.inquiries == 3 == inquiries
    assert outcome.payment_result is not None and outcome.payment_result.is_success


async def test_inquiry_schedule_cancels_after_max_inquiries(
    env: WorkflowEnvironment, driver: AlipayPlusDriver, fake_mpp: FakeMpp
) -> None:
    request_id = f"PR-{uuid.uuid4().hex[:12]}"
    schedule = InquirySchedule(payment_request_id=request_id, acquirer_id="1022188000000000001", psp_id=PSP_ID)

    outcome, _ = await _run_schedule(env, driver, schedule)

    assert outcome == InquiryOutcome(final=False, payment_result=None, inquiries=12, cancelled=True)
    assert [type(m).__name__ for m in fake_mpp.received] == ["InquiryPaymentRequest"] * 12 + ["CancelPaymentRequest"]
    cancel = fake_mpp.received[-1]
    assert isinstance(cancel, CancelPaymentRequest) and cancel.payment_request_id == request_id


async def test_inquiry_schedule_retries_a_cancel_answered_u(
    env: WorkflowEnvironment, driver: AlipayPlusDriver, fake_mpp: FakeMpp
) -> None:
    fake_mpp.cancel_answers = [Result.of(ResultCode.UNKNOWN_EXCEPTION), Result.success()]
    request_id = f"PR-{uuid.uuid4().hex[:12]}"
    schedule = InquirySchedule(
        payment_request_id=request_id, acquirer_id="1022188000000000001", psp_id=PSP_ID, max_inquiries=1
    )

    outcome, _ = await _run_schedule(env, driver, schedule)

    assert outcome == InquiryOutcome(final=False, payment_result=None, inquiries=1, cancelled=True)
    assert [type(m).__name__ for m in fake_mpp.received] == ["InquiryPaymentRequest"] + ["CancelPaymentRequest"] * 2


async def test_inquiry_schedule_counts_unanswered_inquiries_and_carries_on(
    env: WorkflowEnvironment, peer: SandboxAlipayPlus, keys: Keys, alipayplus_verifier: Verifier
) -> None:
    impostor = FakeMpp(Signer.from_pem(peer.signer.client_id, keys.alipayplus.private_pem), alipayplus_verifier)
    request_id = f"PR-{uuid.uuid4().hex[:12]}"
    schedule = InquirySchedule(
        payment_request_id=request_id,
        acquirer_id="1022188000000000001",
        psp_id=PSP_ID,
        max_inquiries=2,
        cancel_retries_for=timedelta(minutes=2),
    )
    async with AlipayPlusDriver.for_peer(peer, MPP_URL, transport=TimeoutASGITransport(app=impostor.app)) as driver:
        outcome, _ = await _run_schedule(env, driver, schedule)

    assert outcome == InquiryOutcome(final=False, payment_result=None, inquiries=2, cancelled=False)
    kinds = [type(m).__name__ for m in impostor.received]
    # each inquiry tried 3 times; the cancel resent until its 2-minute deadline, at 0, 1, 3, 7, 15, 31
    # and 63 s (a bad answer signature is no answer)
    assert kinds == ["InquiryPaymentRequest"] * 6 + ["CancelPaymentRequest"] * 7
