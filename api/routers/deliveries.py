"""The operator's view of notifyPayment / authNotify deliveries, on the operator listener only
(``api.main.create_ops_app``), every route behind the operator's token.

``GET /ops/deliveries`` lists them by state from Temporal's visibility (``DeliveryStatus``);
``GET /ops/deliveries/{id}`` shows one: its workflow, its ``delivery`` query and its attempts from
the delivery log (time, answer, code, latency; never the message); ``POST …/redeliver`` starts
one again that Alipay+ rejected (F) or that gave up. ``mpp ops`` is a client of these routes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from wallet import search_attributes
from wallet.deliveries import AUTH_NOTIFY_WORKFLOW, NOTIFY_PAYMENT_WORKFLOW, DeliveryProgress, DeliverySchedule
from wallet.delivery_log import AUTH_NOTIFY, NOTIFY_PAYMENT, Attempt, DeliveryLog
from wallet.delivery_starts import NotRedeliverable, redeliver
from wallet.settings import Settings

from ..operators import require_operator

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ops/deliveries", tags=["ops"], dependencies=[Depends(require_operator)])

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
QUERY_TIMEOUT = timedelta(seconds=5)  # a closed delivery's query needs a worker to replay it: not forever
WORKFLOW_TYPES = {NOTIFY_PAYMENT: NOTIFY_PAYMENT_WORKFLOW, AUTH_NOTIFY: AUTH_NOTIFY_WORKFLOW}
KIND_OF_TYPE = {workflow: kind for kind, workflow in WORKFLOW_TYPES.items()}
ID_PREFIXES = {"notify/": NOTIFY_PAYMENT, "auth/": AUTH_NOTIFY}


class DeliveryState(StrEnum):
    """A delivery's ``DeliveryStatus``: still trying, or how it ended."""

    DELIVERING = "DELIVERING"
    ACKNOWLEDGED = "ACKNOWLEDGED"  # S
    REJECTED = "REJECTED"  # F
    GAVE_UP = "GAVE_UP"  # no S or F before its horizon


class DeliveryKind(StrEnum):
    NOTIFY_PAYMENT = NOTIFY_PAYMENT
    AUTH_NOTIFY = AUTH_NOTIFY


@dataclass
class DeliveryOps:
    """What these routes use, set up by the operator listener's lifespan (``app.state.deliveries``)."""

    temporal: Client
    log: DeliveryLog
    task_queue: str
    schedule: DeliverySchedule  # a redelivery's: the deployment's, as the worker's deliveries

    @classmethod
    def from_settings(cls, settings: Settings, temporal: Client, log: DeliveryLog) -> DeliveryOps:
        return cls(temporal, log, settings.temporal_task_queue, settings.delivery_schedule())


def _ops(request: Request) -> DeliveryOps:
    ops: DeliveryOps | None = getattr(request.app.state, "deliveries", None)
    if ops is None:  # an app whose lifespan never ran (e.g. served for the codec alone): nothing here
        raise HTTPException(404, "this listener does not serve deliveries: it was started without Temporal")
    return ops


Ops = Annotated[DeliveryOps, Depends(_ops)]


class AttemptView(BaseModel):
    attempted_at: datetime
    answer: str  # S, F, U, NO_ANSWER
    result_code: str | None
    latency_ms: int
    detail: str
    run_id: str


class DeliverySummary(BaseModel):
    delivery_id: str
    kind: str
    state: str  # DeliveryStatus
    workflow_status: str  # RUNNING, COMPLETED, …
    run_id: str
    started_at: datetime | None
    closed_at: datetime | None
    attempts: int  # recorded in the delivery log, over every run
    last_attempt_at: datetime | None
    last_answer: str | None


class DeliveryList(BaseModel):
    deliveries: list[DeliverySummary]
    limit: int


class DeliveryDetail(BaseModel):
    delivery_id: str
    kind: str
    state: str
    workflow_status: str
    run_id: str
    started_at: datetime | None
    closed_at: datetime | None
    progress: DeliveryProgress | None  # the workflow's ``delivery`` query; None if it did not answer
    attempts: list[AttemptView]


class Redelivered(BaseModel):
    delivery_id: str
    run_id: str


_DETAIL = {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}}
_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"description": "Operator credential required", "content": _DETAIL},
    404: {"description": "No such delivery, or this listener serves none", "content": _DETAIL},
    503: {"description": "Temporal cannot be asked now", "content": _DETAIL},
}


def _visibility_query(state: DeliveryState | None, kind: DeliveryKind | None) -> str:
    # Only our enums' values reach the query string: nothing an operator types is quoted into it.
    kinds = [kind.value] if kind else list(WORKFLOW_TYPES)
    clauses = ["(" + " OR ".join(f"WorkflowType = '{WORKFLOW_TYPES[name]}'" for name in kinds) + ")"]
    if state:
        clauses.append(f"{search_attributes.DELIVERY_STATUS.name} = '{state.value}'")
    return " AND ".join(clauses)


def _unavailable(exc: RPCError) -> HTTPException:
    log.warning("ops deliveries: Temporal answered %s: %s", exc.status.name if exc.status else "?", exc.message)
    return HTTPException(503, f"Temporal: {exc.message}")


def _state(typed: Any) -> str:
    return str(typed.get(search_attributes.DELIVERY_STATUS) or "?")


@router.get("", summary="List deliveries by state and kind", responses=_COMMON)
async def list_deliveries(
    ops: Ops,
    state: Annotated[DeliveryState | None, Query(description="DeliveryStatus; every state if absent")] = None,
    kind: Annotated[DeliveryKind | None, Query(description="notifyPayment or authNotify; both if absent")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"At most this many (≤ {MAX_LIMIT})")] = DEFAULT_LIMIT,
) -> DeliveryList:
    """Deliveries in ``state`` (newest first, as Temporal's visibility lists them), with their attempt counts."""
    try:
        executions = [
            execution
            async for execution in ops.temporal.list_workflows(
                _visibility_query(state, kind), limit=limit, page_size=min(limit, 100)
            )
        ]
    except RPCError as exc:
        raise _unavailable(exc) from None
    summaries = await asyncio.to_thread(ops.log.summaries, [execution.id for execution in executions])
    deliveries = []
    for execution in executions:
        count, last = summaries.get(execution.id, (0, None))
        deliveries.append(
            DeliverySummary(
                delivery_id=execution.id,
                kind=KIND_OF_TYPE.get(execution.workflow_type, execution.workflow_type),
                state=_state(execution.typed_search_attributes),
                workflow_status=execution.status.name if execution.status else "?",
                run_id=execution.run_id,
                started_at=execution.start_time,
                closed_at=execution.close_time,
                attempts=count,
                last_attempt_at=last.attempted_at if last else None,
                last_answer=last.answer if last else None,
            )
        )
    return DeliveryList(deliveries=deliveries, limit=limit)


@router.get(
    "/{delivery_id:path}",
    summary="One delivery and its attempts",
    responses=_COMMON,
)
async def delivery(ops: Ops, delivery_id: str) -> DeliveryDetail:
    """One delivery (``notify/{paymentRequestId}`` or ``auth/{referenceAgreementId}``) and every attempt it made."""
    kind = next((name for prefix, name in ID_PREFIXES.items() if delivery_id.startswith(prefix)), None)
    if kind is None:
        raise HTTPException(404, f"{delivery_id}: not a delivery (notify/… or auth/…)")
    handle = ops.temporal.get_workflow_handle(delivery_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, f"{delivery_id}: no such delivery") from None
        raise _unavailable(exc) from None
    progress: DeliveryProgress | None
    try:
        progress = await handle.query("delivery", result_type=DeliveryProgress, rpc_timeout=QUERY_TIMEOUT)
    except Exception as exc:  # no worker to replay it, or a run from before the query: show the rest
        log.info("ops deliveries: %s did not answer its delivery query: %s", delivery_id, exc)
        progress = None
    attempts = await asyncio.to_thread(ops.log.attempts, delivery_id)
    return DeliveryDetail(
        delivery_id=delivery_id,
        kind=kind,
        state=_state(description.typed_search_attributes),
        workflow_status=description.status.name if description.status else "?",
        run_id=description.run_id,
        started_at=description.start_time,
        closed_at=description.close_time,
        progress=progress,
        attempts=[_view(attempt) for attempt in attempts],
    )


@router.post(
    "/{delivery_id:path}/redeliver",
    summary="Deliver one again (rejected or gave up)",
    responses={**_COMMON, 409: {"description": "Still running, never existed, or acknowledged", "content": _DETAIL}},
)
async def redeliver_one(ops: Ops, delivery_id: str) -> Redelivered:
    """Deliver again a delivery that ended REJECTED or GAVE_UP: a new run, same message, fresh schedule."""
    try:
        run_id = await redeliver(ops.temporal, delivery_id, ops.task_queue, ops.schedule)
    except NotRedeliverable as exc:
        raise HTTPException(409, str(exc)) from None
    except RPCError as exc:
        raise _unavailable(exc) from None
    log.info("ops deliveries: %s redelivered (run %s)", delivery_id, run_id)
    return Redelivered(delivery_id=delivery_id, run_id=run_id)


def _view(attempt: Attempt) -> AttemptView:
    return AttemptView(
        attempted_at=attempt.attempted_at,
        answer=attempt.answer,
        result_code=attempt.result_code,
        latency_ms=attempt.latency_ms,
        detail=attempt.detail,
        run_id=attempt.run_id,
    )
