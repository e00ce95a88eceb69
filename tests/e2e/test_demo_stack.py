"""End to end on the real Temporal dev server: the embedded stack (``devstack.stack``) on
free ports, every demo scenario run once through the real HTTP API, each checked on its own.

Independent of the session's time-skipping server: its own ports, var dir, keys and database.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from rich.console import Console

from devstack.demo import SCENARIOS, Outcome, Scenario, run_scenarios
from devstack.stack import Ports, dev_stack
from wallet.db import create_engine_for
from wallet.ledger import Ledger, LedgerCheck
from wallet.users import DEMO_USERS

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class DemoRun:
    outcomes: dict[str, tuple[Scenario, Outcome, float]]
    ledger: LedgerCheck


@pytest.fixture(scope="module")
async def demo_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DemoRun]:
    async with dev_stack(var_dir=tmp_path_factory.mktemp("dev_stack"), ports=Ports.free(), web_ui=False) as stack:
        results = await run_scenarios(stack, Console(file=io.StringIO()))
        engine = create_engine_for(stack.settings.database_url)
        try:
            check = Ledger(engine).check()
        finally:
            engine.dispose()
        yield DemoRun({scenario.name: (scenario, outcome, seconds) for scenario, outcome, seconds in results}, check)


def test_every_scenario_ran(demo_run: DemoRun) -> None:
    assert sorted(demo_run.outcomes) == sorted(scenario.name for scenario in SCENARIOS)


@pytest.mark.parametrize("name", [scenario.name for scenario in SCENARIOS])
def test_scenario_ends_in_expected_state(demo_run: DemoRun, name: str) -> None:
    scenario, outcome, seconds = demo_run.outcomes[name]
    assert outcome.state == scenario.expected, f"{name} ({outcome.workflow_id}, {seconds:.1f} s)"


def test_ledger_check_is_ok(demo_run: DemoRun) -> None:
    assert demo_run.ledger.ok, demo_run.ledger
    assert demo_run.ledger.postings > len(DEMO_USERS)  # the demo funding, then the payments debited
