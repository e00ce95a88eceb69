"""Start the delivery workflows (notifyPayment, authNotify) of a payment that reached a final state.

They are started from an activity rather than as child workflows: deliveries outlive the
payment (which closes at once), and a child that outlives its parent stalls the clock of
Temporal's time-skipping test server. The start is idempotent by workflow id, so a retried
activity or a replayed payment never starts a second delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from workflows.auth_notify import AuthNotifyInput, AuthNotifyWorkflow
from workflows.notify_payment import NotifyPaymentInput, NotifyPaymentWorkflow

_ONCE = dict(
    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
)


@dataclass
class DeliveryActivities:
    temporal: Client
    task_queue: str

    @activity.defn
    async def start_payment_notification(self, notice: NotifyPaymentInput) -> str:
        workflow_id = f"notify/{notice.request.payment_request_id}"
        await self._start(NotifyPaymentWorkflow.run, notice, workflow_id)
        return workflow_id

    @activity.defn
    async def start_auth_notification(self, notice: AuthNotifyInput) -> str:
        workflow_id = f"auth/{notice.grant.reference_agreement_id}"
        await self._start(AuthNotifyWorkflow.run, notice, workflow_id)
        return workflow_id

    async def _start(self, run: object, argument: object, workflow_id: str) -> None:
        try:
            await self.temporal.start_workflow(run, argument, id=workflow_id, task_queue=self.task_queue, **_ONCE)  # type: ignore[call-overload]
        except WorkflowAlreadyStartedError:
            activity.logger.info("%s already ran; not starting it twice", workflow_id)
