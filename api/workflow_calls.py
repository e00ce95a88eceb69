"""Reaching a workflow: once per request id, by update-with-start under Alipay+'s deadline; a payment
behind one of our pages."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows.payment_order import PaymentOrderWorkflow, PaymentState

T = TypeVar("T")


class Closed(Exception):
    """The workflow has finished and its id may not start again: answer from the records."""


class Late(Exception):
    """No answer inside the deadline: answer U, Alipay+ will ask again."""


def start_once(
    run: Any, argument: Any, *, workflow_id: str, task_queue: str, search_attributes: TypedSearchAttributes
) -> WithStartWorkflowOperation[Any, Any]:
    """Start ``run(argument)`` as ``workflow_id`` unless it is running (a concurrent repeat joins it),
    and never again once it has finished: one workflow per request id, ever (``update_with_start``
    then raises ``Closed``, and the answer comes from the records)."""
    return WithStartWorkflowOperation(
        run,
        argument,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=search_attributes,
    )


async def update_with_start(
    client: Client, update: Any, argument: Any, start: WithStartWorkflowOperation[Any, Any], deadline: timedelta
) -> Any:
    """The update's result, from the workflow ``start`` names (started if it is not running).

    Raises ``Closed`` if it already finished (id reuse policy reject-duplicate) and ``Late``
    past ``deadline``.
    """
    try:
        return await asyncio.wait_for(
            client.execute_update_with_start_workflow(update, argument, start_workflow_operation=start),
            deadline.total_seconds(),
        )
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise Late from None
    except WorkflowAlreadyStartedError:
        raise Closed from None
    except RPCError as exc:  # the same, from servers that omit the already-started details
        if exc.status is not RPCStatusCode.ALREADY_EXISTS:
            raise
        raise Closed from None
    finally:
        future = start._workflow_handle  # the SDK exposes it only as an awaitable
        if future.done() and not future.cancelled():
            future.exception()  # seen, so asyncio does not log "exception was never retrieved"


async def payment_behind_page(
    client: Client, payment_request_id: str, payment_id: str, product: str
) -> tuple[WorkflowHandle[Any, PaymentState], PaymentState] | None:
    """The payment order a page URL names, if ``payment_id`` and ``product`` match: the paymentId
    in the URL is the page's capability, and one product's page never acts on another's order."""
    handle = client.get_workflow_handle(f"pay/{payment_request_id}")
    try:
        state = await handle.query(PaymentOrderWorkflow.state)
    except RPCError:
        return None
    if state.payment_id != payment_id or state.product != product:
        return None
    return handle, state
