"""Merchant-presented mode: one payment order, from Alipay+'s pay to the user's answer (seed 003).

Id ``pay/{paymentRequestId}``, started by update-with-start from the inbound pay that
Alipay+ sends once it has decoded the merchant's code:
  Step 5  process the payment: the access token our applyToken gave Alipay+ names the payer
          (``paymentMethod.customerId`` must agree); answer U/PAYMENT_IN_PROCESS with the URL
          of our confirmation page; the order closes with ORDER_IS_CLOSED at the
          paymentExpiryTime Alipay+ assigns, else after at most 3 minutes;
  Step 6  the user confirms (debit payToAmount once) or cancels on our page;
  then, as every payment order, record the result for inquiryPayment and notify Alipay+.
Step 7 (where the user goes next) is the page's business: it reads the final state.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from .payment_order import PaymentOrderWorkflow

with workflow.unsafe.imports_passed_through():
    from alipayplus import ResultCode
    from wallet.orders import USER_CANCELLED, Decision, MpmOrder, PageOutcome, PaymentState
    from wallet.payments import PayerCheck
    from wallet.states import PaymentStatus

PRODUCT = "MPM"
__all__ = ["PRODUCT", "USER_CANCELLED", "Decision", "MpmOrder", "MpmPaymentWorkflow"]


@workflow.defn
class MpmPaymentWorkflow(PaymentOrderWorkflow):
    product = PRODUCT

    @workflow.init
    def __init__(self, order: MpmOrder) -> None:
        super().__init__(order.request, order.default_expiry)
        self._decision: Decision | None = None

    @workflow.run
    async def run(self, order: MpmOrder) -> PaymentState:
        return await self._settle(self._pay(order))

    async def _pay(self, order: MpmOrder) -> None:
        # Step 5: process the payment: check the payer, answer with our confirmation page.
        if await self._open(PayerCheck.ACCESS_TOKEN, order.confirmation_page_url) is None:
            return

        # Step 6: the user confirms or cancels before the order expires.
        if not await self._await_user(lambda: self._decision is not None):
            return
        if self._decision is Decision.CANCEL:
            return await self._finish(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED, USER_CANCELLED)
        await self._debit_and_finish()

    # --- the user talks to the workflow ---------------------------------------------------

    @workflow.update
    async def decide(self, customer_id: str, decision: Decision) -> PageOutcome:
        """The payer pressed Confirm or Cancel on our page (signed in as ``customer_id``)."""
        if customer_id != self._customer_id:
            return self._outcome(False, "This payment belongs to another account.")
        if self._decision is not None:  # a second tap while the first is carried out: answer with its outcome
            await workflow.wait_condition(lambda: self._status is not PaymentStatus.PROCESSING)
        if not self._awaiting_decision():
            return self._outcome(False, "This payment is no longer waiting for you.")
        self._decision = decision
        await workflow.wait_condition(lambda: self._status is not PaymentStatus.PROCESSING)
        paid = self._status is PaymentStatus.SUCCESS  # a confirmation can still meet a low balance
        return self._outcome(paid, "Paid." if paid else self._result.result_message or "The payment failed.")

    def _state_details(self) -> dict[str, Any]:
        return {"in_store_payment": self._request.payment_factor.is_in_store_payment}

    def _awaiting_decision(self) -> bool:
        return (
            self._answer is not None
            and self._status is PaymentStatus.PROCESSING
            and self._decision is None
            and not self._cancelled
            and workflow.now() < self._expires_at
        )
