"""notification delivery: tell Alipay+ a payment's final result until it answers S.

Id ``notify/{paymentRequestId}``; started by the payment workflow on a final state and
left running after it (parent close policy ABANDON). Retries resend the same body.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

from ._delivery import deliver_until_answered

with workflow.unsafe.imports_passed_through():
    from activities.notifications import Delivery, DeliveryReport, NotificationActivities
    from alipayplus import NotifyPaymentRequest


class NotifyPaymentInput(BaseModel):
    request: NotifyPaymentRequest
    attempts_so_far: int = 0


@workflow.defn
class NotifyPaymentWorkflow:
    def __init__(self) -> None:
        self._attempts = 0
        self._last: DeliveryReport | None = None

    @workflow.run
    async def run(self, notice: NotifyPaymentInput) -> DeliveryReport:
        async def send() -> DeliveryReport:
            self._attempts += 1
            self._last = await workflow.execute_activity_method(
                NotificationActivities.notify_payment,
                notice.request,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),  # the schedule below is the retry
            )
            return self._last

        report, attempt = await deliver_until_answered(send, first_attempt=notice.attempts_so_far + 1)
        if report.delivery is Delivery.UNKNOWN:
            workflow.continue_as_new(NotifyPaymentInput(request=notice.request, attempts_so_far=attempt))
        if report.delivery is Delivery.REJECTED:
            workflow.logger.error("Alipay+ rejected notifyPayment: %s", report.detail)
        return report

    @workflow.query
    def attempts(self) -> int:
        return self._attempts
