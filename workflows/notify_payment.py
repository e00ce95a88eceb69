"""notification delivery: tell Alipay+ a payment's final result until it answers S.

Id ``notify/{paymentRequestId}``; started once the payment is final, by an activity of the
payment's workflow (``activities.deliveries``, by type name), and outlives it. Every attempt sends the same body;
the schedule, its horizon and what counts as unanswered are ``delivery.DeliveryWorkflow``'s.
"""

from __future__ import annotations

from temporalio import workflow

from .delivery import DeliveryWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.notifications import NotificationActivities
    from wallet.deliveries import DeliveryReport, NotifyPaymentInput


@workflow.defn
class NotifyPaymentWorkflow(DeliveryWorkflow):
    @workflow.init
    def __init__(self, notice: NotifyPaymentInput) -> None:
        super().__init__(notice)

    @workflow.run
    async def run(self, notice: NotifyPaymentInput) -> DeliveryReport:
        return await self._deliver(NotificationActivities.notify_payment, notice.request, notice)
