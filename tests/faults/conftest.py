"""Faults on demand: activities that stall after their side effect, or die with their worker.

Each wraps the real activity under its own name, so the workflow under test runs unchanged;
the peer really receives the message before the fault, as when an answer is lost.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.worker import Replayer

from sandbox.alipayplus.inquiry import InquiryScheduleWorkflow
from wallet.settings import Settings
from wallet.temporal import data_converter
from workers.worker import WORKFLOWS


def activity_name(function: Callable[..., Any]) -> str:
    return activity._Definition.must_from_callable(function).name


def named(activities: list[Any], name: str) -> Any:
    """The activity called ``name`` among the worker's."""
    [found] = [candidate for candidate in activities if activity_name(candidate) == name]
    return found


def replacing(activities: list[Any], fake: Any) -> list[Any]:
    """The worker's activities with ``fake`` in place of the one of its activity name."""
    replaced = [fake if activity_name(candidate) == activity_name(fake) else candidate for candidate in activities]
    assert fake in replaced, f"no activity {activity_name(fake)!r} to replace"
    return replaced


class Stall:
    """The first ``times`` calls that ``when`` picks do their work (the peer gets the message), then
    never answer: the attempt ends by its start-to-close timeout, or with its worker, as when a
    worker hangs or dies mid-call."""

    def __init__(
        self,
        real: Callable[..., Any],
        times: int = 1,
        when: Callable[..., bool] = lambda *_: True,
        hang: float | None = None,
    ) -> None:
        self.real, self.times, self.when = real, times, when
        self.hang = hang  # seconds before the stalled call wakes up (its answer then goes nowhere); None: never
        self.stalls = 0
        self.stalled = asyncio.Event()  # set once a call has done its work and stalls

    def activity(self) -> Any:
        @functools.wraps(self.real, updated=())  # its signature and types, not its activity definition
        async def stall(*args: Any) -> Any:
            answer = await self.real(*args)
            if self.stalls < self.times and self.when(*args):
                self.stalls += 1
                self.stalled.set()
                # until the worker shuts down and cancels it, or wakes up after its attempt timed out
                await asyncio.wait_for(asyncio.Event().wait(), self.hang) if self.hang else await asyncio.Event().wait()
            return answer

        return activity.defn(name=self.real.__name__)(stall)


async def assert_replays(handle: WorkflowHandle[Any, Any], settings: Settings) -> None:
    """The history this fault left behind replays against today's code (the recorded ones do too,
    in tests/test_replay.py, once saved)."""
    replayer = Replayer(workflows=[*WORKFLOWS, InquiryScheduleWorkflow], data_converter=data_converter(settings))
    await replayer.replay_workflow(await handle.fetch_history())
