"""The refund activity: one call of ``wallet.refunds`` (checks, credit and record in one transaction,
idempotent on refundRequestId)."""

from __future__ import annotations

from temporalio import activity

from wallet.refunds import RefundApplication, RefundOutcome, Refunds


class RefundActivities(Refunds):
    """``Refunds`` as the activities the workflows call; each runs once per attempt, safely twice."""

    @activity.defn
    def apply_refund(self, application: RefundApplication) -> RefundOutcome:
        return super().apply_refund(application)
