"""Start the delivery workflows (notifyPayment, authNotify) of a payment that reached a final state,
and start one again when an operator asks.

They are started from an activity rather than as child workflows: deliveries outlive the
payment (which closes at once), and a child that outlives its parent stalls the clock of
Temporal's time-skipping test server. The start is idempotent by workflow id, so a retried
activity or a replayed payment never starts a second delivery. The deployment's schedule
(``MPP_DELIVERY_*``) is set here, so a workflow's own input says how it retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from . import search_attributes, workflow_ids
from .deliveries import (
    AUTH_NOTIFY_WORKFLOW,
    DELIVERING,
    NOTIFY_PAYMENT_WORKFLOW,
    AuthNotifyInput,
    Delivery,
    DeliveryInput,
    DeliveryReport,
    DeliverySchedule,
    NotifyPaymentInput,
)

log = logging.getLogger(__name__)


@dataclass
class DeliveryStarts:
    temporal: Client
    task_queue: str
    schedule: DeliverySchedule = field(default_factory=DeliverySchedule)

    async def start_payment_notification(self, notice: NotifyPaymentInput) -> str:
        workflow_id = workflow_ids.payment_notification(notice.request.payment_request_id)
        await _start(self.temporal, self.task_queue, NOTIFY_PAYMENT_WORKFLOW, self._scheduled(notice), workflow_id)
        return workflow_id

    async def start_auth_notification(self, notice: AuthNotifyInput) -> str:
        grant = notice.grant
        workflow_id = (
            workflow_ids.auth_notification(grant.reference_agreement_id)
            if grant.agreement_id is None  # Easy Pay's TOKEN_CREATED, as ever
            else workflow_ids.agreement_notification(grant.agreement_id, grant.notify_type)
        )
        await _start(self.temporal, self.task_queue, AUTH_NOTIFY_WORKFLOW, self._scheduled(notice), workflow_id)
        return workflow_id

    def _scheduled(self, notice: Any) -> Any:
        return notice.model_copy(update={"schedule": self.schedule})


class NotRedeliverable(Exception):
    """The delivery is still running, never existed, or Alipay+ already acknowledged it."""


async def redeliver(client: Client, workflow_id: str, task_queue: str, schedule: DeliverySchedule) -> str:
    """Deliver again what the delivery ``workflow_id`` (``notify/…`` or ``auth/…``) stopped sending
    (Alipay+ answered F, or it gave up): a new run of the same id, with the same message, a fresh
    attempt count and horizon. Returns the new run's id."""
    kinds: dict[str, tuple[str, type[DeliveryInput]]] = {
        "notify": (NOTIFY_PAYMENT_WORKFLOW, NotifyPaymentInput),
        "auth": (AUTH_NOTIFY_WORKFLOW, AuthNotifyInput),
    }
    kind = workflow_id.split("/", 1)[0]
    if kind not in kinds:
        raise NotRedeliverable(f"{workflow_id}: not a delivery (notify/… or auth/…)")
    workflow, input_type = kinds[kind]
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except Exception as exc:  # NOT_FOUND and friends, reported in words
        raise NotRedeliverable(f"{workflow_id}: {exc}") from None
    if description.status is not Status.COMPLETED:
        raise NotRedeliverable(f"{workflow_id} is {description.status.name if description.status else '?'}")
    ended = await client.get_workflow_handle(workflow_id, result_type=DeliveryReport).result()
    if ended.delivery is Delivery.ACKNOWLEDGED:
        raise NotRedeliverable(f"{workflow_id}: Alipay+ already acknowledged it")
    history = await handle.fetch_history()  # this run's first event holds its input
    started = history.events[0].workflow_execution_started_event_attributes
    [notice] = await client.data_converter.decode(started.input.payloads, [input_type])
    again = notice.model_copy(update={"schedule": schedule, "attempts_so_far": 0, "first_attempt_at": None})
    new = await client.start_workflow(
        workflow,
        again,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_delivering(again),
    )
    return new.result_run_id or ""


async def _start(client: Client, task_queue: str, workflow: str, notice: DeliveryInput, workflow_id: str) -> None:
    try:
        await client.start_workflow(
            workflow,  # by name: the workflows import this module's activities, not the other way round
            notice,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,  # once ever; ``redeliver`` is the way back
            search_attributes=_delivering(notice),
        )
    except WorkflowAlreadyStartedError:
        log.info("%s already ran; not starting it twice", workflow_id)


def _delivering(notice: DeliveryInput) -> TypedSearchAttributes:
    pairs = [SearchAttributePair(search_attributes.DELIVERY_STATUS, DELIVERING)]
    if isinstance(notice, NotifyPaymentInput):
        pairs.append(SearchAttributePair(search_attributes.PAYMENT_REQUEST_ID, notice.request.payment_request_id))
    return TypedSearchAttributes(pairs)
