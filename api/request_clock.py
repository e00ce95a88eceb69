"""When the request being served arrived, so that its deadlines count from there: Alipay+ times
its 8 s from sending, and time spent queued behind other requests or verifying the signature is
part of them. ``HttpMetrics`` marks the arrival; ``seconds_left`` is what remains of a deadline."""

from __future__ import annotations

import time
from contextvars import ContextVar
from datetime import timedelta

_arrived: ContextVar[float | None] = ContextVar("request_arrived", default=None)


def mark_arrival() -> None:
    """Called once per request, in the task that serves it (each request runs in a context of its own)."""
    _arrived.set(time.monotonic())


def seconds_left(deadline: timedelta) -> float:
    """``deadline`` less the time since the request arrived (all of it outside a request)."""
    arrived = _arrived.get()
    spent = 0.0 if arrived is None else time.monotonic() - arrived
    return max(deadline.total_seconds() - spent, 0.0)
