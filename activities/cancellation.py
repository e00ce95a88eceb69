"""The cancelPayment activity: one call of ``wallet.cancellation`` (the payment record arbitrates
between the cancel and the debit; the reversal is posted once)."""

from __future__ import annotations

from temporalio import activity

from wallet.cancellation import CancelApplication, Cancellations, CancelOutcome


class CancelActivities(Cancellations):
    """``Cancellations`` as the activities the workflows call; each runs once per attempt, safely twice."""

    @activity.defn
    def cancel_payment(self, application: CancelApplication) -> CancelOutcome:
        return super().cancel_payment(application)
