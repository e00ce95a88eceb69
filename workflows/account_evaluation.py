"""Easy Pay step 1: check the user's account (pay #1, ``isPaymentEvaluation="true"``).

Id ``evaluation/{paymentRequestId}``. Reads only: no money moves, so a repeat re-evaluates.
No longer started: the API answers pay #1 itself from the core (``wallet.payments.Payers``), as a
read needs no durability. Kept registered so evaluations in flight during an upgrade finish, and
their histories replay.
"""

from __future__ import annotations

from temporalio import workflow

from ._options import DB_RETRY, DB_TIMEOUT, processed

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from alipayplus import PayRequest, PayResponse, Result, ResultCode
    from wallet import search_attributes
    from wallet.payments import evaluation_answer


@workflow.defn
class AccountEvaluationWorkflow:
    @workflow.run
    async def run(self, request: PayRequest) -> PayResponse:
        check = await processed(
            workflow.execute_local_activity_method(
                PaymentActivities.check_account, request, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
            ),
            "evaluation",
        )
        if check is None:  # a final F, not an evaluation Alipay+ retries forever
            return PayResponse(result=Result.of(ResultCode.PROCESS_FAIL), payment_request_id=request.payment_request_id)
        supported = check.result_code is ResultCode.SUCCESS
        workflow.upsert_search_attributes(
            [
                search_attributes.PAYMENT_STATUS.value_set("SUPPORTED" if supported else "NOT_SUPPORTED"),
                *([search_attributes.CUSTOMER_ID.value_set(check.customer_id)] if check.customer_id else []),
            ]
        )
        return evaluation_answer(request, check)
