"""The adjustRefund activity: one call of ``wallet.adjust_refunds`` (checks, credit and record in one
transaction, idempotent on refundRequestId)."""

from __future__ import annotations

from temporalio import activity

from wallet.adjust_refunds import AdjustRefundApplication, AdjustRefundOutcome, AdjustRefunds


class AdjustRefundActivities(AdjustRefunds):
    """``AdjustRefunds`` as the activities the workflows call; each runs once per attempt, safely twice."""

    @activity.defn
    def apply_adjust_refund(self, application: AdjustRefundApplication) -> AdjustRefundOutcome:
        return super().apply_adjust_refund(application)
