"""The activities that start a final payment's deliveries (notifyPayment, authNotify), over
``wallet.delivery_starts``: idempotent by workflow id."""

from __future__ import annotations

from temporalio import activity

from wallet.deliveries import AuthNotifyInput, NotifyPaymentInput
from wallet.delivery_starts import DeliveryStarts


class DeliveryActivities(DeliveryStarts):
    """``DeliveryStarts`` as the activities the workflows call."""

    @activity.defn
    async def start_payment_notification(self, notice: NotifyPaymentInput) -> str:
        return await super().start_payment_notification(notice)

    @activity.defn
    async def start_auth_notification(self, notice: AuthNotifyInput) -> str:
        return await super().start_auth_notification(notice)
