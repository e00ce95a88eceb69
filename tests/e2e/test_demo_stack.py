"""End to end on the real Temporal dev server: the embedded stack (``devstack.stack``) on
free ports, every demo scenario run once through the real HTTP API, each checked on its own.

Independent of the session's time-skipping server: its own ports, var dir, keys and database.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from rich.console import Console
from sqlalchemy import text as text_sql

from devstack.demo import SCENARIOS, Outcome, Scenario, run_scenarios
from devstack.stack import DevStack, Ports, dev_stack
from tests.conftest import on_postgresql
from tests.postgres import new_database
from wallet.db import create_engine_for
from wallet.ledger import Ledger, LedgerCheck
from wallet.users import DEMO_USERS

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Counts:
    """What the stack's /metrics says, and what its database holds, at one moment."""

    metrics: list[Sample]
    postings: dict[str, int]  # by kind
    posted: dict[str, int]  # minor units moved, by posting kind (each posting's positive legs)
    attempts: dict[str, int]  # delivery attempts by answer
    payments_ended: int  # payment records past PROCESSING


@dataclass(frozen=True)
class DemoRun:
    outcomes: dict[str, tuple[Scenario, Outcome, float]]
    ledger: LedgerCheck
    before: Counts
    after: Counts


async def _counts(stack: DevStack) -> Counts:
    async with httpx.AsyncClient(timeout=10.0) as http:
        text = (await http.get(f"{stack.metrics_url}/metrics")).text
    engine = create_engine_for(stack.settings.database_url)
    try:
        with engine.connect() as db:
            postings = dict(db.execute(text_sql("SELECT kind, count(*) FROM posting GROUP BY kind")).all())
            posted = dict(
                db.execute(
                    text_sql(
                        "SELECT p.kind, sum(e.amount) FROM posting p JOIN entry e ON e.posting_id = p.id"
                        " WHERE e.amount > 0 GROUP BY p.kind"
                    )
                ).all()
            )
            attempts = dict(db.execute(text_sql("SELECT answer, count(*) FROM delivery_attempt GROUP BY answer")).all())
            ended = db.execute(
                text_sql("SELECT count(*) FROM payment_record WHERE status != 'PROCESSING'")
            ).scalar_one()
    finally:
        engine.dispose()
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    return Counts(samples, postings, posted, attempts, int(ended))


async def _settled_counts(stack: DevStack, timeout: float = 20.0) -> Counts:
    """Counts once the stack has gone quiet: a delivery still under way when the scenarios end (a
    notification's last attempt) writes its record a moment before it counts it, so a snapshot taken
    between the two would see them differ by one. Two snapshots 0.5 s apart that agree will do."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    counts = await _counts(stack)
    while loop.time() < deadline:
        await asyncio.sleep(0.5)
        again = await _counts(stack)
        if _moving(counts) == _moving(again):
            return again
        counts = again
    return counts


def _moving(counts: Counts) -> tuple[object, ...]:
    """What a late delivery or posting changes: the records, and the counters that follow them."""
    watched = ("mpp_delivery_attempts_total", "mpp_postings_total", "mpp_payments_finished_total")
    metrics = sorted(
        (sample.name, sorted(sample.labels.items()), sample.value)
        for sample in counts.metrics
        if sample.name in watched
    )
    return counts.postings, counts.attempts, counts.payments_ended, metrics


def _metric(counts: Counts, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for sample in counts.metrics
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


@pytest.fixture(scope="module")
async def demo_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DemoRun]:
    """The demo, once; its records in a SQLite file, or with ``--database=postgresql`` in a database of
    its own on the session's PostgreSQL server."""
    database_url = new_database(request.getfixturevalue("postgres"), "demo") if on_postgresql(request.config) else None
    var_dir = tmp_path_factory.mktemp("dev_stack")
    async with dev_stack(var_dir, Ports.free(), web_ui=False, database_url=database_url) as stack:
        before = await _counts(stack)
        results = await run_scenarios(stack, Console(file=io.StringIO()))
        after = await _settled_counts(stack)
        engine = create_engine_for(stack.settings.database_url)
        try:
            check = Ledger(engine).check()
        finally:
            engine.dispose()
        outcomes = {scenario.name: (scenario, outcome, seconds) for scenario, outcome, seconds in results}
        yield DemoRun(outcomes, check, before, after)


def test_every_scenario_ran(demo_run: DemoRun) -> None:
    assert sorted(demo_run.outcomes) == sorted(scenario.name for scenario in SCENARIOS)


@pytest.mark.parametrize("name", [scenario.name for scenario in SCENARIOS])
def test_scenario_ends_in_expected_state(demo_run: DemoRun, name: str) -> None:
    scenario, outcome, seconds = demo_run.outcomes[name]
    assert outcome.state == scenario.expected, f"{name} ({outcome.workflow_id}, {seconds:.1f} s)"


def test_ledger_check_is_ok(demo_run: DemoRun) -> None:
    assert demo_run.ledger.ok, demo_run.ledger
    assert demo_run.ledger.postings > len(DEMO_USERS)  # the demo funding, then the payments debited


def _grew(run: DemoRun, name: str, **labels: str) -> float:
    return _metric(run.after, name, **labels) - _metric(run.before, name, **labels)


def test_metrics_count_what_the_database_holds(demo_run: DemoRun) -> None:
    """The counters moved by exactly what the run wrote: postings and money by kind, delivery
    attempts by answer, payments that ended; and the pay route's requests were counted."""
    before, after = demo_run.before, demo_run.after
    for kind in after.postings:
        written = after.postings[kind] - before.postings.get(kind, 0)
        moved = after.posted[kind] - before.posted.get(kind, 0)
        assert _grew(demo_run, "mpp_postings_total", kind=kind) == written, kind
        assert _grew(demo_run, "mpp_posted_minor_units_total", kind=kind) == moved, kind
    assert after.postings.get("PAYMENT_DEBIT", 0) > before.postings.get("PAYMENT_DEBIT", 0)
    for answer, count in after.attempts.items():
        assert _grew(demo_run, "mpp_delivery_attempts_total", answer=answer) == count - before.attempts.get(answer, 0)
    assert after.attempts.get("U", 0) >= 2  # the scripted U answers of notifyPayment and authNotify
    # at least once: a workflow task that fails and runs again counts again (a replay does not)
    assert _grew(demo_run, "mpp_payments_finished_total") >= after.payments_ended - before.payments_ended
    assert _grew(demo_run, "mpp_payments_finished_total", status="SUCCESS") > 0
    assert _grew(demo_run, "mpp_http_requests_total", route="/aps/api/v1/payments/pay", status="200") > 0
    assert _grew(demo_run, "mpp_signature_failures_total") >= 1  # the tampered-body scenario
