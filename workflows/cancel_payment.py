"""cancelPayment: close or reverse a payment in whatever state it is (spec §6).

Id ``cancel/{paymentRequestId}``. Repeats are harmless: the cancellation itself is
idempotent (the payment record remembers it), so every run gives the same answer.
  1. Close the payment on its record: a tombstone if never seen, closed if unpaid, closed and
     returned to the user if paid; outside 00:30 UTC+8 on T+1, CANCEL_WINDOW_EXCEED.
  2. A payment still waiting for its user hears of it and closes at once.
"""

from __future__ import annotations

import contextlib

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from ._options import count, db_step, processed
from .payment_order import PaymentOrderWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.cancellation import CancelActivities
    from alipayplus import CancelPaymentResponse, Result, ResultCode
    from wallet import search_attributes, workflow_ids
    from wallet.cancellation import CancelApplication, Cancellation
    from wallet.orders import CancelOrder
    from wallet.telemetry.metrics import HELP, MONEY_PROCESSES_FINISHED

PRODUCT = "CANCEL"


@workflow.defn
class CancelPaymentWorkflow:
    @workflow.run
    async def run(self, order: CancelOrder) -> CancelPaymentResponse:
        payment_request_id = order.request.payment_request_id
        outcome = await processed(
            db_step(
                CancelActivities.cancel_payment,
                CancelApplication(payment_request_id=payment_request_id, now=workflow.now(), cutoff=order.cutoff),
            ),
            "cancelPayment",
        )
        if outcome is None:  # nothing changed: a final F rather than a cancel Alipay+ retries forever
            count(MONEY_PROCESSES_FINISHED, HELP[MONEY_PROCESSES_FINISHED], process="cancel", status="FAIL")
            return CancelPaymentResponse(result=Result.of(ResultCode.PROCESS_FAIL))
        if outcome.cancellation in (Cancellation.CLOSED_UNPAID, Cancellation.REVERSED):
            payment = workflow.get_external_workflow_handle(
                workflow_ids.payment(payment_request_id)
            )  # any product's order
            with contextlib.suppress(ApplicationError):  # it has finished already; its record says closed
                await payment.signal(PaymentOrderWorkflow.cancel)
        workflow.upsert_search_attributes([search_attributes.PAYMENT_STATUS.value_set(outcome.cancellation.value)])
        count(
            MONEY_PROCESSES_FINISHED,
            HELP[MONEY_PROCESSES_FINISHED],
            process="cancel",
            status=outcome.cancellation.value,
        )
        return CancelPaymentResponse(result=Result.of(outcome.result_code))
