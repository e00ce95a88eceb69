"""authNotify: after one-click consent, issue the access token and tell Alipay+ (TOKEN_CREATED).

Id ``auth/{referenceAgreementId}``; retries on U or no answer (seed 004, step 5), on the same
schedule as notifyPayment (``delivery.DeliveryWorkflow``). Every attempt sends the same token.
"""

from __future__ import annotations

from temporalio import workflow

from .delivery import DeliveryWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.notifications import NotificationActivities
    from wallet.deliveries import AuthNotifyInput, DeliveryReport


@workflow.defn
class AuthNotifyWorkflow(DeliveryWorkflow):
    @workflow.init
    def __init__(self, notice: AuthNotifyInput) -> None:
        super().__init__(notice)

    @workflow.run
    async def run(self, notice: AuthNotifyInput) -> DeliveryReport:
        return await self._deliver(NotificationActivities.auth_notify, notice.grant, notice)
