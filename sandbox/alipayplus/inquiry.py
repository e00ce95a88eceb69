"""Alipay+'s inquiry schedule: ask the MPP every 10 s, up to 12 times, until the result is final.

Workflow id ``inquiry/{paymentRequestId}`` on ``SANDBOX_TASK_QUEUE``; one activity per inquiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from alipayplus import InquiryPaymentResponse, Result

    from .driver import AlipayPlusDriver

SANDBOX_TASK_QUEUE = "sandbox-alipayplus"


def inquiry_workflow_id(payment_request_id: str) -> str:
    return f"inquiry/{payment_request_id}"


class InquirySchedule(BaseModel):
    payment_request_id: str
    acquirer_id: str
    psp_id: str
    interval: timedelta = timedelta(seconds=10)
    max_inquiries: int = 12


class InquiryOutcome(BaseModel):
    final: bool
    payment_result: Result | None
    inquiries: int


@dataclass
class SandboxActivities:
    driver: AlipayPlusDriver

    @activity.defn
    async def inquire_payment(self, schedule: InquirySchedule) -> InquiryPaymentResponse:
        # TransportError (no answer in 5 s, bad signature, ...) fails the attempt; Temporal retries.
        return await self.driver.inquire(schedule.payment_request_id, schedule.acquirer_id, schedule.psp_id)


@workflow.defn
class InquiryScheduleWorkflow:
    def __init__(self) -> None:
        self._inquiries = 0

    @workflow.run
    async def run(self, schedule: InquirySchedule) -> InquiryOutcome:
        while self._inquiries < schedule.max_inquiries:
            await workflow.sleep(schedule.interval)
            self._inquiries += 1
            try:
                response = await workflow.execute_activity_method(
                    SandboxActivities.inquire_payment,
                    schedule,
                    start_to_close_timeout=timedelta(seconds=6),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=1), backoff_coefficient=1.0, maximum_attempts=3
                    ),
                )
            except ActivityError:
                # No usable answer even after retries: for Alipay+ that is "unknown"; ask again later.
                workflow.logger.warning("inquiry %d for %s got no answer", self._inquiries, schedule.payment_request_id)
                continue
            # Only paymentResult S/F is final; a failed inquiry (result F) or U keeps polling.
            if response.payment_result is not None and response.payment_result.is_final:
                return InquiryOutcome(final=True, payment_result=response.payment_result, inquiries=self._inquiries)
        # TODO(later issue): after the last unanswered inquiry Alipay+ cancels the payment (cancelPayment).
        return InquiryOutcome(final=False, payment_result=None, inquiries=self._inquiries)

    @workflow.query
    def inquiries(self) -> int:
        return self._inquiries


__all__ = [
    "SANDBOX_TASK_QUEUE",
    "InquiryOutcome",
    "InquirySchedule",
    "InquiryScheduleWorkflow",
    "SandboxActivities",
    "inquiry_workflow_id",
]
