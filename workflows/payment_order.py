"""What every payment order shares, whatever the product: one workflow per paymentRequestId.

Id ``pay/{paymentRequestId}``, started by update-with-start from the inbound pay. The
product's workflow (Easy Pay, MPM, NFC) is a ``@workflow.defn`` subclass with its own
``@workflow.init``/``@workflow.run``; it inherits the handlers Alipay+ and operators use:
the ``create_order`` update (pay and its retries), the ``cancel`` signal (cancelPayment)
and the ``state`` query (inquiryPayment, our pages), and the steps every order takes:
open (check the payer, record, answer in process unless there is no page to send the user
to), wait for the user before expiry, debit ``payToAmount`` once, and finish (record,
notify, authorise on one-click consent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel
from temporalio import workflow

from ._options import ACTIVITY_FAILURES, DB_RETRY, DB_TIMEOUT, is_permanent, processed, reason

with workflow.unsafe.imports_passed_through():
    from activities.deliveries import DeliveryActivities
    from activities.payments import PaymentActivities
    from alipayplus import Amount, NotifyPaymentRequest, PayRequest, PayResponse, Quote, Result, ResultCode
    from wallet import search_attributes
    from wallet.credentials import Verdict
    from wallet.deliveries import AuthNotifyInput, AuthorizationGrant, NotifyPaymentInput
    from wallet.payments import AccountCheck, DebitRequest, PaymentRecordUpdate
    from wallet.states import PaymentStatus, VerificationMethod

AccountCheckActivity = Callable[[PaymentActivities, PayRequest], AccountCheck]
USER_CANCELLED = "The user cancelled the payment."  # the result message of an order its user cancelled on our page


class PaymentState(BaseModel):
    """What inquiryPayment, our pages and operators see."""

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
    verification_method: VerificationMethod | None = None
    otp_sent_to: str | None = None
    otp_challenge_id: str | None = None
    attempts_left: int = 0
    redirect_url: str | None  # where the user goes once the payment is final
    product: str = ""
    in_store_payment: bool = False  # scan-to-pay: never back to a merchant app (seed 003, step 7)
    nfc_token_reference_id: str | None = None  # NFC: the token tapped
    nfc_custom_data: str | None = None  # NFC: the phone's reference on the tap (hex)
    paying_account: str | None = None  # the payer's login, masked: what our page shows them
    otp_resends_left: int | None = None  # Easy Pay OTP: new codes the user may still ask for
    exchange_rate: str | None = None  # the quote Alipay+ sent, as "1 USD = 7.8 HKD" (MPM across currencies)


class Refusal(StrEnum):
    """Why a page action was not carried out (the page words it; the workflow only names it)."""

    NOT_WAITING = "not-waiting"  # the payment no longer waits for its user
    RESEND_LIMIT = "resend-limit"  # no more new codes for this payment
    NOT_SENT = "not-sent"  # the SMS could not be sent in time: the user may ask again
    BUSY = "busy"  # a code is being checked: the action waits for a second press


class PageOutcome(BaseModel):
    """The answer to what the user did on our payment page."""

    accepted: bool
    message: str
    state: PaymentState
    verdict: Verdict | None = None  # a typed code's, so the page can count it against the client address
    retry_after_seconds: int | None = None  # a typed code's wait before the next one may be checked
    refusal: Refusal | None = None  # why the page action was not carried out, for the page's own wording


def masked_login(request: PayRequest) -> str | None:
    """The login the payer gave at checkout, all but its last 4 characters hidden (``•••-••••2222``)."""
    metadata = request.payment_method.payment_method_meta_data
    login = metadata.user_login_id if metadata else None
    if not login:
        return None
    shown = login[-4:]
    return "".join("•" if char.isalnum() else char for char in login[:-4]) + shown


def rate_text(quote: Quote | None) -> str | None:
    """Alipay+'s quote as a person reads it: ``1 USD = 7.8 HKD`` (``None`` without a usable quote)."""
    if quote is None or not quote.quote_price or not quote.quote_currency_pair:
        return None
    base, _, counter = quote.quote_currency_pair.partition("/")
    return f"1 {base} = {quote.quote_price} {counter}" if base and counter else None


def with_status(url: str | None, status: str) -> str | None:
    """``paymentRedirectUrl`` plus ``status=success|fail`` (seed 004, step 3)."""
    if not url:
        return None
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("status", status)])
    return urlunsplit(parts._replace(query=query))


class PaymentOrderWorkflow:
    """The shared part of a payment order's workflow (not a workflow type by itself)."""

    product: str  # the product's name in search attributes and records

    def __init__(self, request: PayRequest, default_expiry: timedelta) -> None:
        self._request = request
        self._payment_id = workflow.uuid4().hex
        self._expires_at = request.payment_expiry_time or workflow.now() + default_expiry
        self._status = PaymentStatus.PROCESSING
        self._result = Result.of(ResultCode.PAYMENT_IN_PROCESS)
        self._answer: PayResponse | None = None
        self._customer_id: str | None = None
        self._payment_time: datetime | None = None
        self._cancelled = False

    # --- Alipay+ and operators talk to every payment order ---------------------------------

    @workflow.update
    async def create_order(self, request: PayRequest) -> PayResponse:
        """pay, and every retry of it: the same answer for the same key fields."""
        if request.key_fields_digest() != self._request.key_fields_digest():
            return PayResponse(result=Result.of(ResultCode.REPEAT_REQ_INCONSISTENT))
        await workflow.wait_condition(lambda: self._answer is not None)
        return self.current_answer()

    @workflow.signal
    def cancel(self) -> None:
        """Alipay+ cancelled the payment; the cancel has already closed its record, so no debit
        can follow. A payment still waiting for its user closes now."""
        self._cancelled = True

    @workflow.query
    def state(self) -> PaymentState:
        request = self._request
        merchant = request.order.merchant
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
            redirect_url=self._redirect_url() if self._status is not PaymentStatus.PROCESSING else None,
            product=self.product,
            paying_account=masked_login(request),
            exchange_rate=rate_text(request.payment_quote),
            **self._state_details(),
        )

    def _outcome(self, accepted: bool, message: str, verdict: Verdict | None = None) -> PageOutcome:
        return PageOutcome(accepted=accepted, message=message, state=self.state(), verdict=verdict)

    def current_answer(self) -> PayResponse:
        """The answer to pay: in process until final, then the final result."""
        if self._status is PaymentStatus.PROCESSING and self._answer is not None:
            return self._answer
        return PayResponse(
            result=self._result,
            payment_id=self._payment_id if self._status is PaymentStatus.SUCCESS else None,
            payment_time=self._payment_time,
            customer_id=self._customer_id,
        )

    # --- what a product adds to the shared state ------------------------------------------

    def _state_details(self) -> dict[str, Any]:
        return {}

    def _redirect_url(self) -> str | None:
        return self._request.payment_redirect_url

    # --- steps ----------------------------------------------------------------------------

    async def _settle(self, steps: Awaitable[None]) -> PaymentState:
        """Run the product's steps to a final state and answer every caller. A step that failed in a
        way no retry can fix ends the order F/PROCESS_FAIL (answered, recorded where possible,
        notified) rather than leaving Alipay+ to retry a payment that can never finish."""
        try:
            await steps
        except ACTIVITY_FAILURES as error:
            if not is_permanent(error):
                raise
            workflow.logger.error("payment cannot be processed: %s", reason(error))
            if self._status is PaymentStatus.PROCESSING:
                await self._finish(PaymentStatus.FAIL, ResultCode.PROCESS_FAIL)
        await workflow.wait_condition(workflow.all_handlers_finished)  # every caller gets its answer
        return self.state()

    async def _open(self, check_account: AccountCheckActivity, page_url: str | None) -> AccountCheck | None:
        """Check the payer, record the order and prepare the in-process answer pointing the user
        at ``page_url``; without a page (NFC: the POS waits) pay gets only the final answer.
        ``None`` when the order has already finished (expired, refused, cancelled)."""
        request = self._request
        if workflow.now() >= self._expires_at:
            await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)
            return None
        check = await workflow.execute_local_activity_method(
            check_account, request, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
        )
        self._customer_id = check.customer_id
        if check.customer_id:
            workflow.upsert_search_attributes([search_attributes.CUSTOMER_ID.value_set(check.customer_id)])
        if check.result_code is not ResultCode.SUCCESS:
            await self._finish(PaymentStatus.FAIL, check.result_code)
            return None
        if await self._record() is PaymentStatus.CLOSED:  # Alipay+ cancelled it before it arrived
            await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)
            return None
        if page_url is None:
            return check
        self._answer = PayResponse(
            result=Result.of(ResultCode.PAYMENT_IN_PROCESS),
            payment_id=self._payment_id,
            payment_url=f"{page_url}/{request.payment_request_id}/{self._payment_id}",
            customer_id=self._customer_id,
        )
        return check

    async def _await_user(self, decided: Callable[[], bool]) -> bool:
        """Wait until the user has ``decided``; on expiry or an Alipay+ cancel close the order
        (``ORDER_IS_CLOSED``) and answer False."""
        try:
            await workflow.wait_condition(
                lambda: decided() or self._cancelled,
                timeout=max(self._expires_at - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)
            return False
        if self._cancelled:
            await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)
            return False
        return True

    async def _debit_and_finish(self) -> None:
        """Debit payToAmount exactly once, then finish with the ledger's answer."""
        request = self._request
        debit = await workflow.execute_activity_method(
            PaymentActivities.debit,
            DebitRequest(
                payment_request_id=request.payment_request_id,
                customer_id=self._customer_id or "",
                amount=request.pay_to_amount,
                paid_at=workflow.now(),
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        self._payment_time = debit.payment_time
        outcome = {ResultCode.SUCCESS: PaymentStatus.SUCCESS, ResultCode.ORDER_IS_CLOSED: PaymentStatus.CLOSED}
        await self._finish(outcome.get(debit.result_code, PaymentStatus.FAIL), debit.result_code)

    async def _record(self) -> PaymentStatus:
        return await workflow.execute_local_activity_method(
            PaymentActivities.record_payment,
            PaymentRecordUpdate(
                request=self._request,
                now=workflow.now(),
                payment_id=self._payment_id,
                product=self.product,
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

    async def _finish(self, status: PaymentStatus, code: ResultCode, message: str | None = None) -> None:
        """Record the final state, notify it and, on one-click consent, authorise."""
        self._status = status
        self._result = Result.of(code, message)
        if self._answer is None:
            self._answer = self.current_answer()
        workflow.upsert_search_attributes([search_attributes.PAYMENT_STATUS.value_set(status.value)])
        await processed(self._record(), "the final record")  # a refusal must not stop the answer or notice
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
