"""NFC: one tap's payment order, from Alipay+'s pay to the final answer the POS waits for (spec §10.1).

Id ``pay/{paymentRequestId}``, started by update-with-start from the inbound pay that Alipay+
sends once the acquirer has turned the tapped token into our user:
  Step 15  Alipay+ calls pay with the user (``paymentMethod.customerId``) and the tap's custom
           data: check the payer (exists, active, limits, balance) and record the order;
  Step 16  process the payment: debit payToAmount once; the result goes back towards the POS as
           pay's answer, a final S or F (no page: ``create_order`` waits for the result), and,
           as every payment order, into the records for inquiryPayment and to Alipay+ by notifyPayment.
Refunds, cancels (same-day authorization reversals) and inquiries work as for every product.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from .payment_order import PaymentOrderWorkflow

with workflow.unsafe.imports_passed_through():
    from wallet.orders import NfcOrder, PaymentState
    from wallet.payments import PayerCheck

PRODUCT = "NFC"


@workflow.defn
class NfcPaymentWorkflow(PaymentOrderWorkflow):
    product = PRODUCT

    @workflow.init
    def __init__(self, order: NfcOrder) -> None:
        super().__init__(order.request, order.default_expiry)

    @workflow.run
    async def run(self, order: NfcOrder) -> PaymentState:
        return await self._settle(self._pay())

    async def _pay(self) -> None:
        # Step 15: the user the acquirer named can pay this; the order is recorded.
        if await self._open(PayerCheck.CUSTOMER, page_url=None) is None:
            return
        # Step 16: debit once; finishing answers pay with the final result, records and notifies it.
        await self._debit_and_finish()

    def _state_details(self) -> dict[str, Any]:
        tap = self._request.nfc_payment_info
        return {
            "in_store_payment": True,
            "nfc_token_reference_id": tap.token_reference_id if tap else None,
            "nfc_custom_data": tap.custom_data if tap else None,
        }

    def _redirect_url(self) -> str | None:
        return None  # the user is at a POS, not in a browser
