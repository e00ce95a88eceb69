"""Easy Pay: one payment order, from pay #2 to the result (seed 004, steps 2–5).

Id ``pay/{paymentRequestId}``, started by update-with-start from the inbound pay #2:
  Step 2  create the payment order: check the account, answer U/PAYMENT_IN_PROCESS with
          the paymentId and the URL of our verification page;
  Step 3  the user verifies (PIN or SMS OTP, resend, bounded attempts) or cancels before
          paymentExpiryTime; then debit payToAmount exactly once;
  Step 4  record the result for inquiryPayment and notify Alipay+ (workflow notify/{id});
  Step 5  on one-click consent, issue the token and call authNotify (workflow auth/{id}).
The steps every payment order shares live in ``payment_order.PaymentOrderWorkflow``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

from ._options import DB_RETRY, DB_TIMEOUT, is_permanent, reason
from .payment_order import PaymentOrderWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from alipayplus import ResultCode
    from wallet.credentials import Attempt, Verdict
    from wallet.orders import USER_CANCELLED, EasyPayOrder, PageOutcome, PaymentState, Refusal, with_status
    from wallet.payments import CodeAttempt, CodeCheck, OtpRequest, OtpSent, PayerCheck
    from wallet.states import PaymentStatus, VerificationMethod

PRODUCT = "EASY_PAY"
MAX_OTP_RESENDS = 5
MIN_OTP_WINDOW = timedelta(seconds=1)  # an SMS asked for at the last moment still gets one try
GUESSES_COUNTED = "guesses-counted"  # patch: codes checked under the account's guessing limits (verify_code)
LOCKED_MESSAGE = "Too many wrong codes: the account is locked for now."
# Short reads and record upserts run as local activities: same retries and idempotency, no
# round trip through the server's task queue (most of pay #2's latency). The debit and the
# SMS stay ordinary activities, each visible on its own in the Web UI.


@workflow.defn
class EasyPayWorkflow(PaymentOrderWorkflow):
    product = PRODUCT

    @workflow.init
    def __init__(self, order: EasyPayOrder) -> None:
        super().__init__(order.request, order.default_expiry)
        self._method: VerificationMethod | None = None
        self._otp: OtpSent | None = None
        self._otp_resends = 0
        self._attempts_left = order.verification_attempts
        self._verified = False
        self._locked = False  # too many wrong codes on the account, across payments and logins
        self._declined = False  # the user pressed Cancel on our page
        self._code_attempts = 0
        self._checking = asyncio.Lock()

    @workflow.run
    async def run(self, order: EasyPayOrder) -> PaymentState:
        return await self._settle(self._pay(order))

    async def _pay(self, order: EasyPayOrder) -> None:
        # Step 2: create the payment order.
        check = await self._open(PayerCheck.LOGIN, order.verification_page_url)
        if check is None:
            return
        self._method = check.verification_method

        # Step 3: the user verifies on our page before the order expires; then debit once.
        if self._method is VerificationMethod.OTP:
            await self._send_otp()
        if not await self._await_user(
            lambda: self._verified or self._attempts_left <= 0 or self._locked or self._declined
        ):
            return
        if self._declined:
            return await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED, USER_CANCELLED)
        if not self._verified:
            message = LOCKED_MESSAGE if self._locked else None
            return await self._finish(PaymentStatus.FAIL, ResultCode.USER_PAYMENT_VERIFICATION_FAILED, message)

        # Steps 4 and 5: the result is recorded, notified and, on one-click consent, authorised.
        await self._debit_and_finish()

    # --- the user talks to the workflow ---------------------------------------------------

    @workflow.update
    async def submit_code(self, code_digest: str) -> PageOutcome:
        """The user typed a PIN or OTP on the page; the API sends only its keyed digest."""
        async with self._checking:
            if not self._awaiting_verification():
                return self._refused(Refusal.NOT_WAITING, "This payment is no longer waiting for verification.")
            attempt = await self._verify(code_digest)
            if attempt.verdict is Verdict.RIGHT:
                self._verified = True
            elif attempt.verdict is not Verdict.WAIT:  # a code not even checked costs no attempt
                self._attempts_left -= 1
                self._locked = attempt.verdict is Verdict.LOCKED
        if self._verified or self._locked or self._attempts_left <= 0:
            await workflow.wait_condition(lambda: self._status is not PaymentStatus.PROCESSING)
            paid = self._status is PaymentStatus.SUCCESS  # a right code can still meet expiry or a low balance
            message = "Paid." if paid else self._result.result_message or "The payment failed."
            return self._outcome(paid, message, attempt.verdict)
        outcome = self._outcome(False, "", attempt.verdict)
        if attempt.verdict is Verdict.WAIT or attempt.wait:
            outcome.retry_after_seconds = attempt.retry_after_seconds
        if attempt.verdict is Verdict.WAIT:
            message = f"Too many wrong codes. Try again in {attempt.retry_after_seconds} seconds."
        else:
            message = f"Wrong code. {self._attempts_left} attempt(s) left."
            if attempt.wait:
                message += f" Wait {attempt.retry_after_seconds} seconds before the next one."
        outcome.message = message
        return outcome

    async def _verify(self, code_digest: str) -> Attempt:
        """Check the code: under the account's guessing limits, or as payments begun before them did."""
        check = CodeCheck(
            customer_id=self._customer_id or "",
            method=self._method or VerificationMethod.PIN,
            challenge_id=self._otp.challenge_id if self._otp else None,
            code_digest=code_digest,
        )
        if not workflow.patched(GUESSES_COUNTED):
            right = await workflow.execute_local_activity_method(
                PaymentActivities.check_code, check, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
            )
            return Attempt(verdict=Verdict.RIGHT if right else Verdict.WRONG)
        self._code_attempts += 1
        info = workflow.info()
        return await workflow.execute_local_activity_method(
            PaymentActivities.verify_code,
            CodeAttempt(
                **check.model_dump(), attempt_key=f"{info.workflow_id}/{info.run_id}/code/{self._code_attempts}"
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )

    @workflow.update
    async def resend_otp(self) -> PageOutcome:
        if self._method is not VerificationMethod.OTP or not self._awaiting_verification():
            return self._refused(Refusal.NOT_WAITING, "No code can be sent for this payment.")
        if self._otp_resends >= MAX_OTP_RESENDS:
            return self._refused(Refusal.RESEND_LIMIT, "Too many codes requested.")
        self._otp_resends += 1
        if not await self._send_otp():
            return self._refused(Refusal.NOT_SENT, "The code could not be sent. Try again in a moment.")
        return self._outcome(True, f"A new code was sent to {self._otp.sent_to if self._otp else 'your phone'}.")

    @workflow.update
    async def decline(self) -> PageOutcome:
        """The user pressed Cancel on our page: the order closes (ORDER_IS_CLOSED), nothing is debited."""
        if self._checking.locked():  # a code is being checked: it decides first
            return self._refused(Refusal.BUSY, "A code is being checked. Try again in a moment.")
        if not self._awaiting_verification():
            return self._refused(Refusal.NOT_WAITING, "This payment is no longer waiting for you.")
        self._declined = True
        await workflow.wait_condition(lambda: self._status is not PaymentStatus.PROCESSING)
        return self._outcome(False, self._result.result_message or USER_CANCELLED)

    def _refused(self, refusal: Refusal, message: str) -> PageOutcome:
        outcome = self._outcome(False, message)
        outcome.refusal = refusal
        return outcome

    # --- what Easy Pay adds to the shared state -------------------------------------------

    def _state_details(self) -> dict[str, Any]:
        return {
            "verification_method": self._method,
            "otp_sent_to": self._otp.sent_to if self._otp else None,
            "otp_challenge_id": self._otp.challenge_id if self._otp else None,
            "attempts_left": self._attempts_left,
            "otp_resends_left": MAX_OTP_RESENDS - self._otp_resends if self._method is VerificationMethod.OTP else None,
        }

    def _redirect_url(self) -> str | None:
        paid = self._status is PaymentStatus.SUCCESS
        return with_status(self._request.payment_redirect_url, "success" if paid else "fail")

    # --- steps ----------------------------------------------------------------------------

    def _awaiting_verification(self) -> bool:
        return (
            self._answer is not None
            and self._status is PaymentStatus.PROCESSING
            and not self._verified
            and not self._declined
            and not self._cancelled
            and self._attempts_left > 0
            and workflow.now() < self._expires_at
        )

    async def _send_otp(self) -> bool:
        """Text a new code, retrying until the order expires; False if none could be sent by then
        (the user can ask again, and the order still closes at its expiry)."""
        request = self._request
        merchant = request.order.merchant
        try:
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
                schedule_to_close_timeout=max(self._expires_at - workflow.now(), MIN_OTP_WINDOW),
                retry_policy=DB_RETRY,
            )
        except ActivityError as error:
            if is_permanent(error):
                raise
            workflow.logger.warning("no code sent before the order expires: %s", reason(error))
            return False
        return True
