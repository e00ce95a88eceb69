"""The engine's ceiling workloads: a 1-activity workflow and an update-with-start answered at once.

Kept in a module of their own, importing only temporalio, so the sandbox re-imports next to nothing
for each new workflow: what they cost is what the engine and the SDK cost, nothing of ours.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def echo(text: str) -> str:
    return text


@workflow.defn
class OneActivityWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(echo, text, start_to_close_timeout=timedelta(seconds=10))


@workflow.defn
class AnswerWorkflow:
    """Started by update-with-start; answers the update and ends, as a pay #2 would with nothing to do."""

    def __init__(self) -> None:
        self._answered = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._answered)
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.update
    async def answer(self, text: str) -> str:
        self._answered = True
        return text
