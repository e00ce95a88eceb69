"""Easy Pay: one payment order, from pay #2 to the result (seed 004, steps 2–5).

Id ``pay/{paymentRequestId}``, started by update-with-start from the inbound pay #2:
  Step 2  create the payment order: check the account, answer U/PAYMENT_IN_PROCESS with
          the paymentId and the URL of our verification page;
  Step 3  the user verifies (PIN or SMS OTP, resend, bounded attempts) before
          paymentExpiryTime; then debit payToAmount exactly once;
  Step 4  record the result for inquiryPayment and notify Alipay+ (workflow notify/{id});
  Step 5  on one-click consent, issue the token and call authNotify (workflow auth/{id}).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel
from temporalio import workflow

from . import search_attributes
from ._options import DB_RETRY, DB_TIMEOUT
from .auth_notify import AuthNotifyInput
from .notify_payment import NotifyPaymentInput

with workflow.unsafe.imports_passed_through():
    from activities.deliveries import DeliveryActivities
    from activities.notifications import AuthorizationGrant
    from activities.payments import (
        CodeCheck,
        DebitRequest,
        OtpRequest,
        OtpSent,
        PaymentActivities,
        PaymentRecordUpdate,
    )
    from activities.records import PaymentStatus, VerificationMethod
    from alipayplus import Amount, NotifyPaymentRequest, PayRequest, PayResponse, Result, ResultCode

PRODUCT = "EASY_PAY"
MAX_OTP_RESENDS = 5
# Short reads and record upserts run as local activities: same retries and idempotency, no
# round trip through the server's task queue (most of pay #2's latency). The debit and the
# SMS stay ordinary activities, each visible on its own in the Web UI.


class EasyPayOrder(BaseModel):
    request: PayRequest
    verification_page_url: str  # e.g. http://127.0.0.1:8000/easypay/verify
    default_expiry: timedelta = timedelta(minutes=10)
    verification_attempts: int = 3


class PaymentState(BaseModel):
    """What inquiryPayment, the verification page and operators see."""

    payment_request_id: str
    payment_id: str | None
    status: PaymentStatus
    payment_result: Result
    customer_id: str | None
    payment_time: datetime | None
    payment_amount: Amount
    pay_to_amount: Amount
    merchant_name: str | None
    order_description: str
    expires_at: datetime
    verification_method: VerificationMethod | None
    otp_sent_to: str | None
    otp_challenge_id: str | None
    attempts_left: int
    redirect_url: str | None  # where the user goes once the payment is final


class VerificationOutcome(BaseModel):
    accepted: bool
    message: str
    state: PaymentState


def with_status(url: str | None, status: str) -> str | None:
    """``paymentRedirectUrl`` plus ``status=success|fail`` (seed 004, step 3)."""
    if not url:
        return None
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("status", status)])
    return urlunsplit(parts._replace(query=query))


@workflow.defn
class EasyPayWorkflow:
    @workflow.init
    def __init__(self, order: EasyPayOrder) -> None:
        self._request = order.request
        self._payment_id = workflow.uuid4().hex
        self._expires_at = self._request.payment_expiry_time or workflow.now() + order.default_expiry
        self._status = PaymentStatus.PROCESSING
        self._result = Result.of(ResultCode.PAYMENT_IN_PROCESS)
        self._answer: PayResponse | None = None
        self._customer_id: str | None = None
        self._payment_time: datetime | None = None
        self._method: VerificationMethod | None = None
        self._otp: OtpSent | None = None
        self._otp_resends = 0
        self._attempts_left = order.verification_attempts
        self._verified = False
        self._cancelled = False
        self._checking = asyncio.Lock()

    @workflow.run
    async def run(self, order: EasyPayOrder) -> PaymentState:
        await self._pay(order)
        await workflow.wait_condition(workflow.all_handlers_finished)  # every caller gets its answer
        return self.state()

    async def _pay(self, order: EasyPayOrder) -> None:
        request = order.request
        if workflow.now() >= self._expires_at:
            return await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)

        # Step 2: create the payment order.
        check = await workflow.execute_local_activity_method(
            PaymentActivities.check_account, request, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
        )
        self._customer_id = check.customer_id
        if check.customer_id:
            workflow.upsert_search_attributes([search_attributes.CUSTOMER_ID.value_set(check.customer_id)])
        if check.result_code is not ResultCode.SUCCESS:
            return await self._finish(PaymentStatus.FAIL, check.result_code)
        if await self._record() is PaymentStatus.CLOSED:  # Alipay+ cancelled it before it arrived
            return await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)
        self._method = check.verification_method
        self._answer = PayResponse(
            result=Result.of(ResultCode.PAYMENT_IN_PROCESS),
            payment_id=self._payment_id,
            payment_url=f"{order.verification_page_url}/{request.payment_request_id}/{self._payment_id}",
            customer_id=self._customer_id,
        )

        # Step 3: the user verifies on our page before the order expires; then debit once.
        if self._method is VerificationMethod.OTP:
            await self._send_otp()
        try:
            await workflow.wait_condition(
                lambda: self._verified or self._attempts_left <= 0 or self._cancelled,
                timeout=max(self._expires_at - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            return await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)
        if self._cancelled:
            return await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)
        if not self._verified:
            return await self._finish(PaymentStatus.FAIL, ResultCode.USER_PAYMENT_VERIFICATION_FAILED)
        debit = await workflow.execute_activity_method(
            PaymentActivities.debit,
            DebitRequest(
                payment_request_id=request.payment_request_id,
                customer_id=check.customer_id or "",
                amount=request.pay_to_amount,
                paid_at=workflow.now(),
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        self._payment_time = debit.payment_time

        # Steps 4 and 5: the result is recorded, notified and, on one-click consent, authorised.
        outcome = {ResultCode.SUCCESS: PaymentStatus.SUCCESS, ResultCode.ORDER_IS_CLOSED: PaymentStatus.CLOSED}
        await self._finish(outcome.get(debit.result_code, PaymentStatus.FAIL), debit.result_code)

    # --- Alipay+ and the user talk to the workflow ----------------------------------------

    @workflow.update
    async def create_order(self, request: PayRequest) -> PayResponse:
        """pay #2, and every retry of it: the same answer for the same key fields."""
        if request.key_fields_digest() != self._request.key_fields_digest():
            return PayResponse(result=Result.of(ResultCode.REPEAT_REQ_INCONSISTENT))
        await workflow.wait_condition(lambda: self._answer is not None)
        return self.current_answer()

    @workflow.update
    async def submit_code(self, code_digest: str) -> VerificationOutcome:
        """The user typed a PIN or OTP on the page; the API sends only its keyed digest."""
        async with self._checking:
            if not self._awaiting_verification():
                return self._outcome(False, "This payment is no longer waiting for verification.")
            right = await workflow.execute_local_activity_method(
                PaymentActivities.check_code,
                CodeCheck(
                    customer_id=self._customer_id or "",
                    method=self._method or VerificationMethod.PIN,
                    challenge_id=self._otp.challenge_id if self._otp else None,
                    code_digest=code_digest,
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
            )
            if right:
                self._verified = True
            else:
                self._attempts_left -= 1
        if right or self._attempts_left <= 0:
            await workflow.wait_condition(lambda: self._status is not PaymentStatus.PROCESSING)
            paid = self._status is PaymentStatus.SUCCESS  # a right code can still meet expiry or a low balance
            return self._outcome(paid, "Paid." if paid else self._result.result_message or "The payment failed.")
        return self._outcome(False, f"Wrong code. {self._attempts_left} attempt(s) left.")

    @workflow.update
    async def resend_otp(self) -> VerificationOutcome:
        if self._method is not VerificationMethod.OTP or not self._awaiting_verification():
            return self._outcome(False, "No code can be sent for this payment.")
        if self._otp_resends >= MAX_OTP_RESENDS:
            return self._outcome(False, "Too many codes requested.")
        self._otp_resends += 1
        await self._send_otp()
        return self._outcome(True, f"A new code was sent to {self._otp.sent_to if self._otp else 'your phone'}.")

    @workflow.signal
    def cancel(self) -> None:
        """Alipay+ cancelled the payment; the cancel has already closed its record, so no debit
        can follow. A payment still waiting for its user closes now."""
        self._cancelled = True

    @workflow.query
    def state(self) -> PaymentState:
        request = self._request
        merchant = request.order.merchant
        final = self._status is not PaymentStatus.PROCESSING
        return PaymentState(
            payment_request_id=request.payment_request_id,
            payment_id=self._payment_id,
            status=self._status,
            payment_result=self._result,
            customer_id=self._customer_id,
            payment_time=self._payment_time,
            payment_amount=request.payment_amount,
            pay_to_amount=request.pay_to_amount,
            merchant_name=(merchant.merchant_display_name or merchant.merchant_name) if merchant else None,
            order_description=request.order.order_description,
            expires_at=self._expires_at,
            verification_method=self._method,
            otp_sent_to=self._otp.sent_to if self._otp else None,
            otp_challenge_id=self._otp.challenge_id if self._otp else None,
            attempts_left=self._attempts_left,
            redirect_url=(
                with_status(
                    request.payment_redirect_url, "success" if self._status is PaymentStatus.SUCCESS else "fail"
                )
                if final
                else None
            ),
        )

    def current_answer(self) -> PayResponse:
        """The answer to pay #2: in process until final, then the final result."""
        if self._status is PaymentStatus.PROCESSING and self._answer is not None:
            return self._answer
        return PayResponse(
            result=self._result,
            payment_id=self._payment_id if self._status is PaymentStatus.SUCCESS else None,
            payment_time=self._payment_time,
            customer_id=self._customer_id,
        )

    # --- steps ----------------------------------------------------------------------------

    def _awaiting_verification(self) -> bool:
        return (
            self._answer is not None
            and self._status is PaymentStatus.PROCESSING
            and not self._verified
            and not self._cancelled
            and self._attempts_left > 0
            and workflow.now() < self._expires_at
        )

    def _outcome(self, accepted: bool, message: str) -> VerificationOutcome:
        return VerificationOutcome(accepted=accepted, message=message, state=self.state())

    async def _send_otp(self) -> None:
        request = self._request
        merchant = request.order.merchant
        self._otp = await workflow.execute_activity_method(
            PaymentActivities.send_otp,
            OtpRequest(
                challenge_id=workflow.uuid4().hex,
                payment_request_id=request.payment_request_id,
                customer_id=self._customer_id or "",
                amount=request.pay_to_amount,
                merchant_name=(merchant.merchant_display_name or merchant.merchant_name) if merchant else None,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )

    async def _record(self) -> PaymentStatus:
        return await workflow.execute_local_activity_method(
            PaymentActivities.record_payment,
            PaymentRecordUpdate(
                request=self._request,
                now=workflow.now(),
                payment_id=self._payment_id,
                product=PRODUCT,
                status=self._status,
                customer_id=self._customer_id,
                result_code=ResultCode(self._result.result_code),
                result_message=self._result.result_message,
                payment_time=self._payment_time,
                payment_expiry_time=self._expires_at,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )

    async def _finish(self, status: PaymentStatus, code: ResultCode) -> None:
        """Steps 4 and 5: record the final state, notify it and, on one-click consent, authorise."""
        self._status = status
        self._result = Result.of(code)
        if self._answer is None:
            self._answer = self.current_answer()
        workflow.upsert_search_attributes([search_attributes.PAYMENT_STATUS.value_set(status.value)])
        await self._record()
        request = self._request
        await workflow.execute_activity_method(
            DeliveryActivities.start_payment_notification,
            NotifyPaymentInput(
                request=NotifyPaymentRequest(
                    payment_result=self._result,
                    payment_request_id=request.payment_request_id,
                    payment_id=self._payment_id if status is PaymentStatus.SUCCESS else None,
                    payment_time=self._payment_time,
                    payment_amount=request.payment_amount,
                    pay_to_amount=request.pay_to_amount,
                    customer_id=self._customer_id,
                )
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        authorization = request.authorization_info
        if status is PaymentStatus.SUCCESS and request.payment_factor.is_authorization_and_pay and authorization:
            metadata = request.payment_method.payment_method_meta_data
            await workflow.execute_activity_method(
                DeliveryActivities.start_auth_notification,
                AuthNotifyInput(
                    grant=AuthorizationGrant(
                        reference_agreement_id=authorization.reference_agreement_id or "",
                        auth_client_id=authorization.auth_client_id or "",
                        customer_id=self._customer_id or "",
                        user_login_id=metadata.user_login_id if metadata else None,
                        acquirer_id=request.acquirer_id,
                        psp_id=request.psp_id,
                    )
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
            )
