"""Activity options shared by the payment processes, and how their failures are told apart."""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, overload

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# Database steps: short, idempotent by key, retried until the database answers.
DB_TIMEOUT = timedelta(seconds=10)
DB_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=5))

T = TypeVar("T")
ArgT = TypeVar("ArgT")

# Patch: a process's database steps run as local activities, in the workflow task that needs them,
# instead of a round trip through the server's task queue each; the same retries, each step still
# idempotent under its key. Histories begun before it keep their regular activities.
LOCAL_STEPS = "local-steps"


# How an activity's failure reaches the workflow: wrapped in an ActivityError for a regular
# activity, the activity's own ApplicationError for a local one.
ACTIVITY_FAILURES = (ActivityError, ApplicationError)


def is_permanent(error: ActivityError | ApplicationError) -> bool:
    """The activity failed in a way no retry can fix (its input can never be processed, e.g. data
    the database refuses): the process must end with a final answer instead of retrying forever."""
    cause = error.cause if isinstance(error, ActivityError) else error
    return isinstance(cause, ApplicationError) and cause.non_retryable


def reason(error: ActivityError | ApplicationError) -> str:
    """What went wrong, in words fit for a result message and the Web UI."""
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.message if isinstance(cause, ApplicationError) else str(cause or error)


def count(name: str, description: str, **labels: str) -> None:
    """One more of the workflow's business counter ``name`` (``wallet.telemetry.metrics``), through
    Temporal's replay-safe meter: nothing is counted while a history replays, and no command is added
    to it. Labels are small closed sets (a product, a status), never an id."""
    workflow.metric_meter().create_counter(name, description).add(1, labels)


@overload
def db_step(activity: Callable[[Any, ArgT], Awaitable[T]], argument: ArgT) -> Awaitable[T]: ...


@overload
def db_step(activity: Callable[[Any, ArgT], T], argument: ArgT) -> Awaitable[T]: ...


def db_step(activity: Callable[[Any, ArgT], Any], argument: ArgT) -> Awaitable[Any]:
    """Run a database step (or a delivery's start): a local activity, or for a process begun before
    ``LOCAL_STEPS`` the regular activity its history holds."""
    if workflow.patched(LOCAL_STEPS):
        return workflow.execute_local_activity_method(
            activity, argument, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
        )
    return workflow.execute_activity_method(
        activity, argument, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
    )


async def processed(step: Awaitable[T], what: str) -> T | None:
    """``step``'s result, or None when it failed in a way no retry can fix (logged): the caller then
    answers a final F/PROCESS_FAIL, where Alipay+ would otherwise be answered U and retry forever."""
    try:
        return await step
    except ACTIVITY_FAILURES as error:
        if not is_permanent(error):
            raise
        workflow.logger.error("%s cannot be processed: %s", what, reason(error))
        return None
