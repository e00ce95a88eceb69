"""Deadlines count from the request's arrival (``api.request_clock``)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from datetime import timedelta

import pytest

from api.request_clock import mark_arrival, seconds_left

pytestmark = pytest.mark.timeout(10)

SIX_SECONDS = timedelta(seconds=6)


def test_outside_a_request_the_whole_deadline_is_left() -> None:
    assert contextvars.Context().run(seconds_left, SIX_SECONDS) == 6.0


def test_time_since_arrival_is_spent() -> None:
    def served_after_a_queue() -> float:
        mark_arrival()
        time.sleep(0.2)  # queued behind other requests, verifying the signature
        return seconds_left(SIX_SECONDS)

    left = contextvars.Context().run(served_after_a_queue)
    assert 5.0 < left <= 5.8


def test_a_deadline_already_spent_leaves_nothing() -> None:
    def late() -> float:
        mark_arrival()
        time.sleep(0.05)
        return seconds_left(timedelta(seconds=0.01))

    assert contextvars.Context().run(late) == 0.0


async def test_each_request_has_its_own_arrival() -> None:
    """Two requests served side by side (each in its own task, as the server runs them)."""

    async def request(arrives_after: float, served_after: float) -> float:
        await asyncio.sleep(arrives_after)
        mark_arrival()
        await asyncio.sleep(served_after)
        return seconds_left(SIX_SECONDS)

    waited, fresh = await asyncio.gather(request(0.0, 0.4), request(0.3, 0.0))
    assert waited <= 5.6 < fresh
