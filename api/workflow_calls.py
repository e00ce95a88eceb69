"""Reaching a workflow: once per request id, by update-with-start under Alipay+'s deadline; a payment
behind one of our pages, and the page's own updates and queries under the page's deadline.

Every update and page query goes through ``_until_deadline``. A storm of duplicates (Alipay+'s
retries, a user's double clicks) fills the server's per-workflow limits (10 in-flight updates,
buffered queries): it refuses the excess (RESOURCE_EXHAUSTED), aborts it (UNAVAILABLE) or holds
a query. The SDK retries refusals itself, for up to 10 s; what it gives up on, and a held query,
is sent again after a jittered pause until the caller's deadline, so a duplicate gets the same
answer as the others, or ``Late`` (answered U, or the page again), never an error.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from wallet import workflow_ids
from wallet.orders import PageOutcome, PaymentState
from wallet.states import PaymentStatus
from workflows.payment_order import PaymentOrderWorkflow

from .request_clock import seconds_left

T = TypeVar("T")

PAGE_DEADLINE = timedelta(seconds=8)  # each step of a page's request: past it, "busy, try again"

# The server did not take the call, so sending it again is safe: RESOURCE_EXHAUSTED (a per-workflow
# limit), UNAVAILABLE (the server aborted the update, e.g. under the same storm), DEADLINE_EXCEEDED or
# CANCELLED "Timeout expired" (a query held past _QUERY_ATTEMPT: the client's own RPC timeout reports
# either; an update's surfaces as WorkflowUpdateRPCTimeoutOrCancelledError). Queries read, and a
# resent update carries the same update id, so a call the server did take is not applied twice.
# The SDK has already unpacked update-with-start's MultiOperationExecutionFailure into a plain
# RPCError with the failed operation's own status.
_BUSY = frozenset(
    {
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
    }
)
# During an update storm the dev server sometimes holds a query for ~10 s; the next one is answered at once.
_QUERY_ATTEMPT = timedelta(seconds=2)
# Seconds: doubling, each pause drawn from the upper half of its range. Not shorter: on the dev
# server, 50 duplicates retried every few tens of ms kept aborting each other's updates until the
# deadline, while pauses from 100-200 ms up to 0.5-1 s answered all 50 within 5 s.
_PAUSE_FIRST, _PAUSE_MAX = 0.2, 1.0


class Closed(Exception):
    """The workflow has finished and its id may not start again: answer from the records."""


class Late(Exception):
    """No answer inside the deadline: answer U (Alipay+ will ask again), or show the page again."""


@dataclass(frozen=True)
class StartOnce:
    """How to start ``run(argument)`` as ``workflow_id``, once per request id (see ``start_once``).

    A recipe rather than the SDK's operation, because an operation can be sent only once and a
    refused update-with-start is sent again.
    """

    run: Any
    argument: Any
    workflow_id: str
    task_queue: str
    search_attributes: TypedSearchAttributes

    def operation(self) -> WithStartWorkflowOperation[Any, Any]:
        return WithStartWorkflowOperation(
            self.run,
            self.argument,
            id=self.workflow_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=self.search_attributes,
        )


def start_once(
    run: Any, argument: Any, *, workflow_id: str, task_queue: str, search_attributes: TypedSearchAttributes
) -> StartOnce:
    """Start ``run(argument)`` as ``workflow_id`` unless it is running (a concurrent repeat joins it),
    and never again once it has finished: one workflow per request id, ever (``update_with_start``
    then raises ``Closed``, and the answer comes from the records)."""
    return StartOnce(run, argument, workflow_id, task_queue, search_attributes)


async def update_with_start(client: Client, update: Any, argument: Any, start: StartOnce, deadline: timedelta) -> Any:
    """The update's result, from the workflow ``start`` names (started if it is not running).

    Raises ``Closed`` if it already finished (id reuse policy reject-duplicate) and ``Late``
    past ``deadline``.
    """
    update_id = str(uuid.uuid4())  # the same on every attempt: one the server took after all is joined

    async def attempt() -> Any:
        operation = start.operation()
        try:
            return await client.execute_update_with_start_workflow(
                update, argument, start_workflow_operation=operation, id=update_id
            )
        except WorkflowAlreadyStartedError:
            raise Closed from None
        except RPCError as exc:
            if exc.status is RPCStatusCode.ALREADY_EXISTS:  # the same, from servers that omit the details
                raise Closed from None
            raise
        finally:
            future = operation._workflow_handle  # the SDK exposes it only as an awaitable
            if future.done() and not future.cancelled():
                future.exception()  # seen, so asyncio does not log "exception was never retrieved"

    return await _until_deadline(attempt, deadline)


Answer = TypeVar("Answer")


async def answer_once(
    client: Client,
    update: Any,
    request: Any,
    start: StartOnce,
    deadline: timedelta,
    *,
    late: Callable[[], Answer],
    closed: Callable[[], Answer],
) -> Answer:
    """An inbound call answered by its one workflow (started once per request id): the update's
    answer within ``deadline``; else ``late()`` (U: Alipay+ asks again); once the workflow has
    finished, ``closed()`` (the answer kept in the records)."""
    try:
        answer: Answer = await update_with_start(client, update, request, start, deadline)
    except Late:
        return late()
    except Closed:
        return closed()
    return answer


class _SeenStates:
    """The last state this process saw of each payment order, by workflow id (at most ``size``).

    A final state never changes, so the page shown after a post (its 303) or a reload needs no
    query: a payment order's workflow ends as soon as it is final, and a query on an ended
    workflow makes the worker replay its whole history to answer it. A state still in process is
    only a hint, good for what never changes while it waits (its payer, verification method and
    capability): a form's post uses it instead of a query, and the workflow refuses what comes
    too late.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._states: OrderedDict[str, PaymentState] = OrderedDict()

    def final(self, workflow_id: str) -> PaymentState | None:
        state = self._states.get(workflow_id)
        return state if state is not None and state.status is not PaymentStatus.PROCESSING else None

    def seen(self, workflow_id: str) -> PaymentState | None:
        return self._states.get(workflow_id)

    def keep(self, workflow_id: str, state: PaymentState) -> None:
        if self.final(workflow_id) is not None:
            return  # never replaced by an older answer still in process
        self._states[workflow_id] = state
        self._states.move_to_end(workflow_id)
        while len(self._states) > self._size:
            self._states.popitem(last=False)


_seen_states = _SeenStates()


async def send_update(
    handle: WorkflowHandle[Any, Any], update: Any, *args: Any, deadline: timedelta = PAGE_DEADLINE
) -> Any:
    """``handle.execute_update(update, *args)`` for a page; ``Late`` past ``deadline``."""
    update_id = str(uuid.uuid4())  # the same on every attempt: one the server took after all is joined
    outcome = await _until_deadline(lambda: handle.execute_update(update, args=args, id=update_id), deadline)
    if isinstance(outcome, PageOutcome):
        _seen_states.keep(handle.id, outcome.state)
    return outcome


async def payment_state(handle: WorkflowHandle[Any, Any], deadline: timedelta = PAGE_DEADLINE) -> PaymentState:
    """The payment order's state, for a page; ``Late`` past ``deadline``."""
    final = _seen_states.final(handle.id)
    if final is not None:
        return final
    state: PaymentState = await _until_deadline(
        lambda: handle.query(PaymentOrderWorkflow.state, rpc_timeout=_QUERY_ATTEMPT), deadline
    )
    _seen_states.keep(handle.id, state)
    return state


async def _until_deadline(call: Callable[[], Awaitable[T]], deadline: timedelta) -> T:
    """``call()``, again after a short jittered pause whenever the server refuses it as busy,
    until ``deadline`` (then ``Late``), counted from the request's arrival."""

    async def persist() -> T:
        pause = _PAUSE_FIRST
        while True:
            try:
                return await call()
            except RPCError as exc:
                if exc.status not in _BUSY:
                    raise
            except WorkflowQueryFailedError:
                # Under an update storm, a query that replays an evicted workflow can meet an SDK
                # replay fault (TMPRL1100 "Timer machine does not handle ... UpdateAccepted", seen 1 in
                # ~10 storms; sdk-core orders an accepted update and a timer differently on replay).
                # The workflow itself carries on; the next query, once it is cached again, answers.
                pass
            # jittered, so a storm's refused duplicates do not all come back at the same moment
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, _PAUSE_MAX)

    try:
        return await asyncio.wait_for(persist(), seconds_left(deadline))
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):  # the SDK turns our cancel into the latter
        raise Late from None


async def payment_behind_page(
    client: Client, payment_request_id: str, payment_id: str, product: str, *, seen_will_do: bool = False
) -> tuple[WorkflowHandle[Any, PaymentState], PaymentState] | None:
    """The payment order a page URL names, if ``payment_id`` and ``product`` match: the paymentId
    in the URL is the page's capability, and one product's page never acts on another's order.
    ``seen_will_do``: the state this process last saw of it, if any, rather than a query (a form's
    post: see ``_SeenStates``).

    Raises ``Late`` if the server was too busy to say within the page's deadline.
    """
    handle = client.get_workflow_handle(workflow_ids.payment(payment_request_id))
    state = _seen_states.seen(handle.id) if seen_will_do else None
    try:
        state = state or await payment_state(handle)
    except RPCError:
        return None
    if state.payment_id != payment_id or state.product != product:
        return None
    return handle, state
