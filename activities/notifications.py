"""The activities that tell Alipay+ something (notifyPayment, authNotify): one signed call each,
over ``wallet.notifications``; the calling workflow owns the retry schedule. Each call is recorded
as the attempt this activity is (its workflow run and activity id), once however often it runs."""

from __future__ import annotations

from temporalio import activity

from alipayplus import NotifyPaymentRequest
from wallet.deliveries import AuthorizationGrant, DeliveryReport
from wallet.delivery_log import AttemptKey
from wallet.notifications import Notifications


def _this_attempt() -> AttemptKey | None:
    info = activity.info()
    if not info.workflow_id or not info.workflow_run_id:
        return None  # not run by a delivery workflow: nothing to file it under
    return AttemptKey(delivery_id=info.workflow_id, run_id=info.workflow_run_id, activity_id=info.activity_id)


class NotificationActivities(Notifications):
    """``Notifications`` as the activities the workflows call."""

    @activity.defn
    async def notify_payment(self, request: NotifyPaymentRequest) -> DeliveryReport:
        return await self.send_payment_notice(request, _this_attempt())

    @activity.defn
    async def auth_notify(self, grant: AuthorizationGrant) -> DeliveryReport:
        return await self.send_auth_notice(grant, _this_attempt())
