"""Reaching a workflow within Alipay+'s timeout: update-with-start under a deadline."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")


class Closed(Exception):
    """The workflow has finished and its id may not start again: answer from the records."""


class Late(Exception):
    """No answer inside the deadline: answer U, Alipay+ will ask again."""


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
