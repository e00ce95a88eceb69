"""Every recorded history still replays: a change that breaks determinism fails here.

Histories are recorded by the workflow tests: ``RECORD_HISTORIES=1 make test``. A changed
workflow needs ``workflow.patched()`` or a newly recorded history, never a broken replay.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from sandbox.alipayplus.inquiry import InquiryScheduleWorkflow
from wallet.settings import Settings
from wallet.temporal import data_converter
from workers.worker import WORKFLOWS as MPP_WORKFLOWS
from workers.worker import workflow_runner

from .conftest import HISTORIES

RECORDED = sorted(HISTORIES.glob("*.json"))
WORKFLOWS = [*MPP_WORKFLOWS, InquiryScheduleWorkflow]


def _workflow_type(path: Path) -> str:
    events = json.loads(path.read_text())["events"]
    return events[0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def test_every_workflow_type_has_a_recorded_history() -> None:
    recorded = {_workflow_type(path) for path in RECORDED}
    assert {workflow.__name__ for workflow in WORKFLOWS} <= recorded


@pytest.mark.parametrize("path", RECORDED, ids=[path.stem for path in RECORDED])
async def test_history_replays(path: Path, settings: Settings) -> None:
    """Histories are encrypted with the test payload key, as production ones are with theirs."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(
        workflows=list(WORKFLOWS),
        data_converter=data_converter(settings),
        workflow_runner=workflow_runner(data_converter(settings)),
    ).replay_workflow(history)
