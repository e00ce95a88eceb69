"""adjustRefund: an excess or unlinked NFC refund credited to the user, once per refundRequestId (spec §13.3).

Id ``adjust-refund/{refundRequestId}``, started by update-with-start from the inbound adjustRefund.
  1. EXCEED_REFUND credits the payment's customer the part of a merchant refund above the payment
     (at the payment's own rate); UNLINKED_REFUND credits the named customer the whole refund.
  2. No business failure: a frozen user is credited too, and the payment's refunded sums are left
     alone (Alipay+'s normal refund covers the payment's part). Only technical failures answer F.
  3. The answer is kept: a repeat gets the same one, changed key fields REPEAT_REQ_INCONSISTENT.
"""

from __future__ import annotations

from temporalio import workflow

from ._options import count, db_step, processed

with workflow.unsafe.imports_passed_through():
    from activities.adjust_refunds import AdjustRefundActivities
    from alipayplus import Result, ResultCode
    from alipayplus.nfc import AdjustRefundRequest, AdjustRefundResponse
    from wallet import search_attributes
    from wallet.adjust_refunds import AdjustRefundApplication
    from wallet.orders import AdjustRefundOrder
    from wallet.telemetry.metrics import HELP, MONEY_PROCESSES_FINISHED

PRODUCT = "ADJUST_REFUND"


@workflow.defn
class AdjustRefundWorkflow:
    @workflow.init
    def __init__(self, order: AdjustRefundOrder) -> None:
        self._request = order.request
        self._answer: AdjustRefundResponse | None = None

    @workflow.run
    async def run(self, order: AdjustRefundOrder) -> AdjustRefundResponse:
        outcome = await processed(
            db_step(
                AdjustRefundActivities.apply_adjust_refund,
                AdjustRefundApplication(request=order.request, refund_id=workflow.uuid4().hex, now=workflow.now()),
            ),
            "adjustRefund",
        )  # None: a technical F, the only kind adjustRefund may answer
        self._answer = (
            outcome.to_response() if outcome else AdjustRefundResponse(result=Result.of(ResultCode.PROCESS_FAIL))
        )
        status = "SUCCESS" if self._answer.result.is_success else "FAIL"
        updates = [search_attributes.PAYMENT_STATUS.value_set(status)]
        if outcome and outcome.customer_id:
            updates.append(search_attributes.CUSTOMER_ID.value_set(outcome.customer_id))
        workflow.upsert_search_attributes(updates)
        count(MONEY_PROCESSES_FINISHED, HELP[MONEY_PROCESSES_FINISHED], process="adjust_refund", status=status)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._answer

    @workflow.update
    async def request_adjust_refund(self, request: AdjustRefundRequest) -> AdjustRefundResponse:
        """The inbound adjustRefund, and every retry of it."""
        if request.key_fields_digest() != self._request.key_fields_digest():
            return AdjustRefundResponse(result=Result.of(ResultCode.REPEAT_REQ_INCONSISTENT))
        await workflow.wait_condition(lambda: self._answer is not None)
        assert self._answer is not None
        return self._answer
