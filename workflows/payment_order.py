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
from typing import Any

from temporalio import workflow

from ._options import (
    ACTIVITY_FAILURES,
    DB_RETRY,
    DB_TIMEOUT,
    LOCAL_STEPS,
    count,
    db_step,
    is_permanent,
    processed,
    reason,
)

with workflow.unsafe.imports_passed_through():
    from activities.deliveries import DeliveryActivities
    from activities.payments import PaymentActivities
    from alipayplus import NotifyPaymentRequest, PayRequest, PayResponse, Result, ResultCode
    from wallet import search_attributes
    from wallet.credentials import Verdict
    from wallet.deliveries import AuthNotifyInput, AuthorizationGrant, NotifyPaymentInput
    from wallet.orders import PageOutcome, PaymentState, masked_login, rate_text
    from wallet.payments import AccountCheck, DebitRequest, OrderOpening, PayerCheck, PaymentRecordUpdate
    from wallet.states import PaymentStatus
    from wallet.telemetry.metrics import HELP, PAYMENTS_FINISHED

# Under LOCAL_STEPS an order's steps run as local activities, the payer check and the first record
# are one step (open_order), and a debit that recorded SUCCESS is not followed by a second record
# write. An order begun before it checks its payer with these, as its history holds.
_PAYER_CHECKS: dict[PayerCheck, Callable[[PaymentActivities, PayRequest], AccountCheck]] = {
    PayerCheck.LOGIN: PaymentActivities.check_account,
    PayerCheck.ACCESS_TOKEN: PaymentActivities.check_token_account,
    PayerCheck.CUSTOMER: PaymentActivities.check_customer_account,
}


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
        self._local_steps = False  # set in _open: see LOCAL_STEPS
        self._recorded_final = False  # the final state is on the record already (the debit wrote it)

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

    async def _open(self, payer: PayerCheck, page_url: str | None) -> AccountCheck | None:
        """Check the payer, record the order and prepare the in-process answer pointing the user
        at ``page_url``; without a page (NFC: the POS waits) pay gets only the final answer.
        ``None`` when the order has already finished (expired, refused, cancelled)."""
        request = self._request
        self._local_steps = workflow.patched(LOCAL_STEPS)  # first thing: every order decides here
        if workflow.now() >= self._expires_at:
            await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED)
            return None
        if self._local_steps:
            opened = await workflow.execute_local_activity_method(
                PaymentActivities.open_order,
                OrderOpening(payer=payer, record=self._record_update()),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
            )
            check, recorded = opened.check, opened.status
        else:
            check = await workflow.execute_local_activity_method(
                _PAYER_CHECKS[payer], request, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
            )
            recorded = None
        self._customer_id = check.customer_id
        if check.customer_id:
            workflow.upsert_search_attributes([search_attributes.CUSTOMER_ID.value_set(check.customer_id)])
        if check.result_code is not ResultCode.SUCCESS:
            await self._finish(PaymentStatus.FAIL, check.result_code)
            return None
        if recorded is None:
            recorded = await self._record()
        if recorded is PaymentStatus.CLOSED:  # Alipay+ cancelled it before it arrived
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

    async def _debit_and_finish(self, agreement_id: str | None = None) -> None:
        """Debit payToAmount exactly once, then finish with the ledger's answer; with ``agreement_id``
        (Auto Debit) only while that agreement is still active (else INVALID_TOKEN)."""
        request = self._request
        debit_request = DebitRequest(
            payment_request_id=request.payment_request_id,
            customer_id=self._customer_id or "",
            amount=request.pay_to_amount,
            paid_at=workflow.now(),
            agreement_id=agreement_id,
        )
        debit = await db_step(PaymentActivities.debit, debit_request)
        self._payment_time = debit.payment_time
        # the debit's own transaction recorded SUCCESS with the posting: no second write for it
        self._recorded_final = debit.result_code is ResultCode.SUCCESS and self._local_steps
        outcome = {ResultCode.SUCCESS: PaymentStatus.SUCCESS, ResultCode.ORDER_IS_CLOSED: PaymentStatus.CLOSED}
        await self._finish(outcome.get(debit.result_code, PaymentStatus.FAIL), debit.result_code)

    def _record_update(self) -> PaymentRecordUpdate:
        return PaymentRecordUpdate(
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
        )

    async def _record(self) -> PaymentStatus:
        return await workflow.execute_local_activity_method(
            PaymentActivities.record_payment,
            self._record_update(),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )

    async def _finish(self, status: PaymentStatus, code: ResultCode, message: str | None = None) -> None:
        """Record the final state, notify it and, on one-click consent, authorise."""
        self._status = status
        self._result = Result.of(code, message)
        count(PAYMENTS_FINISHED, HELP[PAYMENTS_FINISHED], product=self.product, status=status.value)
        if self._answer is None:
            self._answer = self.current_answer()
        workflow.upsert_search_attributes([search_attributes.PAYMENT_STATUS.value_set(status.value)])
        if not self._recorded_final:
            await processed(self._record(), "the final record")  # a refusal must not stop the answer or notice
        request = self._request
        await db_step(
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
        )
        authorization = request.authorization_info
        if status is PaymentStatus.SUCCESS and request.payment_factor.is_authorization_and_pay and authorization:
            metadata = request.payment_method.payment_method_meta_data
            await db_step(
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
            )
