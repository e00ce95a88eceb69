"""The activities that tell Alipay+ something (notifyPayment, authNotify): one signed call each,
over ``wallet.notifications``; the calling workflow owns the retry schedule."""

from __future__ import annotations

from temporalio import activity

from alipayplus import NotifyPaymentRequest
from wallet.deliveries import AuthorizationGrant, DeliveryReport
from wallet.notifications import Notifications


class NotificationActivities(Notifications):
    """``Notifications`` as the activities the workflows call."""

    @activity.defn
    async def notify_payment(self, request: NotifyPaymentRequest) -> DeliveryReport:
        return await super().notify_payment(request)

    @activity.defn
    async def auth_notify(self, grant: AuthorizationGrant) -> DeliveryReport:
        return await super().auth_notify(grant)
