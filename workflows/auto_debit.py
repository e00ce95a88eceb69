"""Auto Debit: one payment with an agreement's access token, from Alipay+'s pay to its final answer
(spec §§2.1, 9.5).

Id ``pay/{paymentRequestId}``, started by update-with-start from the inbound pay that carries
``paymentFactor.isAgreementPayment`` and, in ``paymentMethod.paymentMethodId``, an access token we
issued (an Auto Debit binding's or Easy Pay's one-click consent):
  Step 1  the token names the payer: ours, live, not revoked, with the AGREEMENT_PAY scope
          (else INVALID_TOKEN / EXPIRED_ACCESS_TOKEN); then the checks of every payer (status,
          KYC, limits, balance); the order is recorded, to close at its paymentExpiryTime or
          after at most a minute;
  Step 2  debit payToAmount once, within the call, in one transaction with the check that the
          agreement still stands (a revocation that commits first: INVALID_TOKEN, nothing moved): no
          page, the user does not take part, so pay waits for the final S or F (past the answer
          deadline U, and inquiry/notify agree);
  then, as every payment order, record the result for inquiryPayment and notify Alipay+.
Refunds and cancelPayment work as for every product.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from .payment_order import PaymentOrderWorkflow

with workflow.unsafe.imports_passed_through():
    from wallet.orders import AutoDebitOrder, PaymentState
    from wallet.payments import PayerCheck

PRODUCT = "AUTO_DEBIT"


@workflow.defn
class AutoDebitWorkflow(PaymentOrderWorkflow):
    product = PRODUCT

    @workflow.init
    def __init__(self, order: AutoDebitOrder) -> None:
        super().__init__(order.request, order.default_expiry)

    @workflow.run
    async def run(self, order: AutoDebitOrder) -> PaymentState:
        return await self._settle(self._pay())

    async def _pay(self) -> None:
        # Step 1: the agreement's token names a payer who can pay this; the order is recorded.
        check = await self._open(PayerCheck.AGREEMENT, page_url=None)
        if check is None:
            return
        # Step 2: debit once, while the agreement still stands (a revocation that commits first wins);
        # finishing answers pay with the final result, records and notifies it.
        await self._debit_and_finish(agreement_id=check.agreement_id)

    def _state_details(self) -> dict[str, Any]:
        return {}

    def _redirect_url(self) -> str | None:
        return None  # no browser takes part
