"""Deliver a message to Alipay+ until it answers S, on durable timers.

No retry schedule is published for notifyPayment or authNotify (spec §4, §8); this is the
project's: 5 s, 30 s, 1 min, 2 min, 5 min, 10 min, 30 min, 1 h, then hourly. A rejection (F)
stops at once: blind retries cannot fix a configuration problem.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.notifications import Delivery, DeliveryReport

RETRY_DELAYS = [
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=1),
    timedelta(minutes=2),
    timedelta(minutes=5),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
]
THEN_EVERY = timedelta(hours=1)


def delay_before(attempt: int) -> timedelta:
    """The wait before attempt ``attempt`` (1-based; attempt 1 goes at once)."""
    return RETRY_DELAYS[attempt - 2] if attempt - 2 < len(RETRY_DELAYS) else THEN_EVERY


async def deliver_until_answered(
    send: Callable[[], Awaitable[DeliveryReport]], *, first_attempt: int = 1, attempts_per_run: int = 100
) -> tuple[DeliveryReport, int]:
    """Send until S or F. Returns the last report and the attempt count; UNKNOWN after
    ``attempts_per_run`` attempts means "continue as new and carry on"."""
    attempt = first_attempt
    while True:
        if attempt > 1:
            await workflow.sleep(delay_before(attempt))
        report = await send()
        if report.delivery is not Delivery.UNKNOWN or attempt - first_attempt + 1 >= attempts_per_run:
            return report, attempt
        workflow.logger.warning("attempt %d unanswered (%s); retrying", attempt, report.detail)
        attempt += 1
