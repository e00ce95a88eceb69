"""Alipay+'s inquiry schedule: ask the MPP every 10 s, up to 12 times, until the result is final;
with still no final result, cancel the payment (cancelPayment), as Alipay+ does.

Workflow id ``inquiry/{paymentRequestId}`` on ``SANDBOX_TASK_QUEUE``; one activity per inquiry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client, WorkflowHandle
    from temporalio.common import WorkflowIDConflictPolicy

    from alipayplus import CancelPaymentResponse, InquiryPaymentResponse, PayRequest, Result

    from .driver import AlipayPlusDriver

SANDBOX_TASK_QUEUE = "sandbox-alipayplus"
CANCEL_AFTER_LAST_INQUIRY = "cancel-after-last-inquiry"  # workflow.patched: older histories end without it


def inquiry_workflow_id(payment_request_id: str) -> str:
    return f"inquiry/{payment_request_id}"


class InquirySchedule(BaseModel):
    payment_request_id: str
    acquirer_id: str
    psp_id: str
    interval: timedelta = timedelta(seconds=10)
    max_inquiries: int = 12
    cancel_retries_for: timedelta = timedelta(days=1)  # then the schedule ends, logged, the payment unknown


class InquiryOutcome(BaseModel):
    final: bool
    payment_result: Result | None
    inquiries: int
    cancelled: bool = False  # no final result after the last inquiry: Alipay+ cancelled the payment


@dataclass
class SandboxActivities:
    driver: AlipayPlusDriver

    def all(self) -> list[Callable[..., Any]]:
        """What a sandbox worker registers."""
        return [self.inquire_payment, self.cancel_payment]

    @activity.defn
    async def inquire_payment(self, schedule: InquirySchedule) -> InquiryPaymentResponse:
        # TransportError (no answer in 5 s, bad signature, ...) fails the attempt; Temporal retries.
        return await self.driver.inquire(schedule.payment_request_id, schedule.acquirer_id, schedule.psp_id)

    @activity.defn
    async def cancel_payment(self, schedule: InquirySchedule) -> CancelPaymentResponse:
        # No answer in 8 s or U: Alipay+ retries the cancel with the same paymentRequestId.
        answer = await self.driver.cancel(schedule.payment_request_id, schedule.acquirer_id, schedule.psp_id)
        if not answer.result.is_final:
            raise ApplicationError(f"cancelPayment answered {answer.result.result_code}; retrying")
        return answer


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
        cancelled = False
        if workflow.patched(CANCEL_AFTER_LAST_INQUIRY):
            cancelled = await self._cancel(schedule)
        return InquiryOutcome(final=False, payment_result=None, inquiries=self._inquiries, cancelled=cancelled)

    async def _cancel(self, schedule: InquirySchedule) -> bool:
        """Still no final result: Alipay+ cancels the payment, so it can never succeed later. It
        resends the same cancel until it gets a final answer (the MPP may be down for a while)."""
        try:
            answer = await workflow.execute_activity_method(
                SandboxActivities.cancel_payment,
                schedule,
                start_to_close_timeout=timedelta(seconds=9),
                schedule_to_close_timeout=schedule.cancel_retries_for,
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)),
            )
        except ActivityError:
            workflow.logger.error(
                "cancelPayment for %s got no final answer in %s",
                schedule.payment_request_id,
                schedule.cancel_retries_for,
            )
            return False
        return answer.result.is_success

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


class InquiryStarter:
    """What Alipay+ does when a pay answer is not final: start inquiring (one schedule per
    payment, however often its pay is repeated). Keeps the handles, so a demo can wait for them."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.schedules: dict[str, WorkflowHandle[InquiryScheduleWorkflow, InquiryOutcome]] = {}

    async def __call__(self, request: PayRequest) -> None:
        self.schedules[request.payment_request_id] = await self._client.start_workflow(
            InquiryScheduleWorkflow.run,
            InquirySchedule(
                payment_request_id=request.payment_request_id,
                acquirer_id=request.acquirer_id,
                psp_id=request.psp_id,
            ),
            id=inquiry_workflow_id(request.payment_request_id),
            task_queue=SANDBOX_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
