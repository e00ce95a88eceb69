"""Deliver a message to Alipay+ until it answers S, on durable timers, for a bounded time.

No retry schedule is published for notifyPayment or authNotify (spec §4, §8); this is the
project's: 5 s, 30 s, 1 min, 2 min, 5 min, 10 min, 30 min, 1 h, then hourly, for 3 days
(``MPP_DELIVERY_RETRY_DELAYS``, ``MPP_DELIVERY_HORIZON``). Every technical fault counts as an
unanswered attempt and waits for the next slot: a U answer, no answer, a 5xx, an unsigned or
garbled body, a slow answer, and also an activity that timed out or whose worker died. An F
answer stops at once (blind retries cannot fix a configuration problem); so does the horizon,
visibly: ``DeliveryStatus = "GAVE_UP"`` in the Web UI and the ``delivery`` query. Either can be
delivered again later with ``mpp redeliver`` (a new run of the same workflow id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from ._options import count, is_permanent, reason

with workflow.unsafe.imports_passed_through():
    from wallet import search_attributes
    from wallet.deliveries import (
        DELIVERING,
        Delivery,
        DeliveryInput,
        DeliveryProgress,
        DeliveryReport,
    )
    from wallet.telemetry.metrics import DELIVERIES_FINISHED, HELP

DELIVERY_STATUS_PATCH = "delivery-status"  # workflow.patched: older histories end without the upsert
# One call per slot of the schedule: Temporal must not retry it on its own, because a timeout or a
# lost worker is caught below and counted as an unanswered attempt like any other.
ONE_CALL = RetryPolicy(maximum_attempts=1)
# The ``kind`` label of the delivery metrics, by workflow type (as ``DELIVERY_ATTEMPTS`` names them).
KINDS = {"NotifyPaymentWorkflow": "notifyPayment", "AuthNotifyWorkflow": "authNotify"}


class DeliveryWorkflow:
    """The shared part of notifyPayment's and authNotify's workflows (not a workflow type itself)."""

    def __init__(self, notice: DeliveryInput) -> None:
        self._schedule = notice.schedule
        self._attempts = notice.attempts_so_far
        self._first_attempt_at = notice.first_attempt_at
        self._status = DELIVERING
        self._last_detail: str | None = None

    @workflow.query
    def attempts(self) -> int:
        return self._attempts

    @workflow.query
    def delivery(self) -> DeliveryProgress:
        first = self._first_attempt_at
        return DeliveryProgress(
            status=self._status,
            attempts=self._attempts,
            first_attempt_at=first,
            gives_up_at=first + self._schedule.horizon if first else None,
            last_detail=self._last_detail,
        )

    async def _deliver(
        self,
        activity: Callable[..., Awaitable[DeliveryReport]],
        argument: Any,
        notice: DeliveryInput,
        *,
        attempts_per_run: int = 100,
    ) -> DeliveryReport:
        """Send until S or F or the horizon; after ``attempts_per_run`` unanswered attempts the run
        continues as new with its count and first attempt time, so its history stays small."""
        schedule = self._schedule
        if self._first_attempt_at is None:
            self._first_attempt_at = workflow.now()
        gives_up_at = self._first_attempt_at + schedule.horizon
        for _ in range(attempts_per_run):
            attempt = self._attempts + 1
            if attempt > 1:
                wait = schedule.delay_before(attempt)
                if workflow.now() + wait > gives_up_at:
                    return self._end(Delivery.GAVE_UP, f"no S or F answer in {attempt - 1} attempts")
                await workflow.sleep(wait)
            self._attempts = attempt
            report = await self._attempt(activity, argument)
            self._last_detail = report.detail
            if report.delivery is not Delivery.UNKNOWN:
                return self._end(report.delivery, report.detail)
            workflow.logger.warning("attempt %d unanswered (%s); retrying", attempt, report.detail)
        workflow.continue_as_new(
            notice.model_copy(update={"attempts_so_far": self._attempts, "first_attempt_at": self._first_attempt_at})
        )

    async def _attempt(self, activity: Callable[..., Awaitable[DeliveryReport]], argument: Any) -> DeliveryReport:
        try:
            return await workflow.execute_activity_method(
                activity, argument, start_to_close_timeout=self._schedule.attempt_timeout, retry_policy=ONE_CALL
            )
        except ActivityError as error:
            if is_permanent(error):  # the message itself cannot be sent (e.g. it cannot be stored)
                return DeliveryReport(delivery=Delivery.GAVE_UP, detail=f"not deliverable: {reason(error)}")
            # a timeout, a lost worker, an error in the activity: as if Alipay+ had not answered
            return DeliveryReport(delivery=Delivery.UNKNOWN, detail=f"no answer: {reason(error)}")

    def _end(self, outcome: Delivery, detail: str) -> DeliveryReport:
        self._status = outcome.value
        workflow_type = workflow.info().workflow_type
        count(
            DELIVERIES_FINISHED,
            HELP[DELIVERIES_FINISHED],
            kind=KINDS.get(workflow_type, workflow_type),
            outcome=outcome.value,
        )
        if outcome is not Delivery.ACKNOWLEDGED:
            workflow.logger.error("delivery ended %s: %s", outcome.value, detail)
        if workflow.patched(DELIVERY_STATUS_PATCH):
            workflow.upsert_search_attributes([search_attributes.DELIVERY_STATUS.value_set(outcome.value)])
        return DeliveryReport(delivery=outcome, detail=detail)
