"""refund: give a successful payment's money back, once per refundRequestId (spec §5).

Id ``refund/{refundRequestId}``, started by update-with-start from the inbound refund.
  1. Only a successful, uncancelled payment, inside its refund window, can be refunded.
  2. The user is credited refundFromAmount (or refundAmount at the payment's own rate),
     and the payment's refunded sums grow under their caps, in one transaction.
  3. The answer is kept: a repeat gets the same one, changed key fields REPEAT_REQ_INCONSISTENT.
"""

from __future__ import annotations

from temporalio import workflow

from ._options import count, db_step, processed

with workflow.unsafe.imports_passed_through():
    from activities.refunds import RefundActivities
    from alipayplus import RefundRequest, RefundResponse, Result, ResultCode
    from wallet import search_attributes
    from wallet.orders import RefundOrder
    from wallet.refunds import RefundApplication
    from wallet.telemetry.metrics import HELP, MONEY_PROCESSES_FINISHED

PRODUCT = "REFUND"


@workflow.defn
class RefundWorkflow:
    @workflow.init
    def __init__(self, order: RefundOrder) -> None:
        self._request = order.request
        self._answer: RefundResponse | None = None

    @workflow.run
    async def run(self, order: RefundOrder) -> RefundResponse:
        outcome = await processed(
            db_step(
                RefundActivities.apply_refund,
                RefundApplication(
                    request=order.request, refund_id=workflow.uuid4().hex, now=workflow.now(), window=order.window
                ),
            ),
            "refund",
        )
        self._answer = outcome.to_response() if outcome else RefundResponse(result=Result.of(ResultCode.PROCESS_FAIL))
        status = "SUCCESS" if self._answer.result.is_success else "FAIL"
        workflow.upsert_search_attributes([search_attributes.PAYMENT_STATUS.value_set(status)])
        count(MONEY_PROCESSES_FINISHED, HELP[MONEY_PROCESSES_FINISHED], process="refund", status=status)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._answer

    @workflow.update
    async def request_refund(self, request: RefundRequest) -> RefundResponse:
        """The inbound refund, and every retry of it."""
        if request.key_fields_digest() != self._request.key_fields_digest():
            return RefundResponse(result=Result.of(ResultCode.REPEAT_REQ_INCONSISTENT))
        await workflow.wait_condition(lambda: self._answer is not None)
        assert self._answer is not None
        return self._answer
