"""``make demo``: every Easy Pay, refund, cancel, merchant-presented (MPM), NFC activation, NFC
payment and Auto Debit scenario, through the real HTTP API, on the embedded stack.

Alipay+ is the sandbox driver (signed pay, inquiryPayment, refund and cancelPayment calls); the
user is an HTTP client on our verification page, reading OTPs from the sandbox SMS inbox. For
NFC, each scenario activates its own phone (``hce_device.nfc_sdk``) and taps it on a sandbox POS
terminal, whose authorization goes over HTTP to the sandbox Mastercard and becomes Alipay+'s NFC
pay; reversals, clearings and merchant refunds become cancelPayment, refund and adjustRefund
(``devstack.demo.nfc_pay``). For Auto Debit, each scenario binds a merchant (prepare, our consent
page, applyToken) and charges the agreement's token (``devstack.demo.auto_debit``). Scenarios run
concurrently, started 0.3 s apart; each ends in a state that is checked, and the process exits
non-zero if any state is wrong. Money given back is read from the ledger, per payment.

``session`` is what every scenario shares (``Demo``, ``Scenario``, ``Outcome``) and imports no
scenario module; ``easy_pay``, ``mpm``, ``nfc``, ``nfc_pay`` and ``auto_debit`` hold the scenarios;
this module runs them all (``SCENARIOS``, in the summary's order) and re-exports what the tests and benches use.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from wallet.db import create_engine_for
from wallet.ledger import Ledger, LedgerCheck

from ..stack import DEFAULT_PORTS, DevStack, Ports, dev_stack
from .auto_debit import AUTO_DEBIT_SCENARIOS
from .easy_pay import EASY_PAY_SCENARIOS
from .mpm import MPM_SCENARIOS
from .nfc import NFC_SCENARIOS
from .nfc_pay import NFC_PAY_SCENARIOS
from .observed import where_and_what
from .session import (
    FROZEN_USER,
    OTP_PHONE,
    OTP_USER,
    PIN,
    PIN_USER,
    POOR_USER,
    PRICE,
    Demo,
    Outcome,
    Scenario,
    forget_earlier_runs,
)

__all__ = [
    "FROZEN_USER",
    "OTP_PHONE",
    "OTP_USER",
    "PIN",
    "PIN_USER",
    "POOR_USER",
    "PRICE",
    "SCENARIOS",
    "Demo",
    "Outcome",
    "Scenario",
    "forget_earlier_runs",
    "ledger_line",
    "run_demo",
    "run_scenarios",
    "summary",
]

SCENARIOS = [*EASY_PAY_SCENARIOS, *MPM_SCENARIOS, *NFC_SCENARIOS, *NFC_PAY_SCENARIOS, *AUTO_DEBIT_SCENARIOS]
# Seconds between two scenarios' starts. The demo shows each scenario's behaviour, not a burst: all
# 62 at the same instant made a 2-core machine queue pay #2 past Alipay+'s 8 s, and 0.15 s apart
# still let a busy machine finish a payment after Alipay+'s first inquiry at 10 s (a load test is
# ``make bench``'s job). The demo takes as long either way: its longest scenarios wait, not work.
STAGGER = 0.3


async def run_scenarios(stack: DevStack, console: Console) -> list[tuple[Scenario, Outcome, float]]:
    forget_earlier_runs(stack)
    demo = Demo(stack)
    results: list[tuple[Scenario, Outcome, float]] = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:

        async def one(index: int, scenario: Scenario) -> None:
            await asyncio.sleep(index * STAGGER)
            task = progress.add_task(scenario.name, total=1)
            started = time.perf_counter()
            try:
                outcome = await asyncio.wait_for(scenario.run(demo), timeout=60)
            except Exception as exc:  # a broken scenario is a wrong state, not a crash of the demo
                outcome = Outcome("—", f"error: {type(exc).__name__}: {exc}"[:120])
            seconds = time.perf_counter() - started
            mark = "[green]✓[/]" if outcome.state == scenario.expected else "[red]✗[/]"
            progress.update(task, completed=1, description=f"{mark} {scenario.name}")
            results.append((scenario, outcome, seconds))

        await asyncio.gather(*(one(index, scenario) for index, scenario in enumerate(SCENARIOS)))
        settling = progress.add_task("Alipay+ inquiry schedules settle", total=1)
        try:
            settled = f"[green]✓[/] {await asyncio.wait_for(demo.inquiries_settled(), timeout=30)}"
        except TimeoutError:
            settled = "[red]✗[/] some Alipay+ inquiry schedules are still waiting for a final result"
        progress.update(settling, completed=1, description=settled)
    await demo.aclose()
    order = {scenario.name: index for index, scenario in enumerate(SCENARIOS)}
    return sorted(results, key=lambda row: order[row[0].name])


def summary(results: list[tuple[Scenario, Outcome, float]]) -> Table:
    table = Table(title="Easy Pay, refund, cancel, MPM, NFC activation, NFC payment and Auto Debit scenarios")
    for column in ("scenario", "workflow id", "final state", "seconds", ""):
        table.add_column(column)
    for scenario, outcome, seconds in results:
        ok = outcome.state == scenario.expected
        state = outcome.state if ok else f"{outcome.state} (expected {scenario.expected})"
        table.add_row(
            scenario.name, outcome.workflow_id, state, f"{seconds:.2f}", "[green]ok[/]" if ok else "[red]WRONG[/]"
        )
    return table


def ledger_line(check: LedgerCheck) -> str:
    return (
        f"Ledger: {check.postings} postings, balanced={check.balanced}, balances match entries="
        f"{check.balances_match_entries}, no negative user balance={check.no_negative_user_balance}, "
        f"returns within debits={check.returns_within_debits}"
    )


async def run_demo(
    var_dir: Path, console: Console, ports: Ports = DEFAULT_PORTS, database_url: str | None = None
) -> int:
    if not console.is_terminal:
        console.width = max(console.width, 150)  # keep the summary table readable in logs
    console.print("Starting the embedded stack (Temporal dev server, worker, API, sandbox Alipay+)…")
    async with dev_stack(var_dir, ports, database_url=database_url) as stack:
        results = await run_scenarios(stack, console)
        console.print(summary(results))
        engine = create_engine_for(stack.settings.database_url)
        check = Ledger(engine).check()
        engine.dispose()
        console.print(ledger_line(check))
        for line in await where_and_what(stack.metrics_url):
            console.print(line)
        console.print(f"Temporal Web UI: {stack.web_ui_url}/namespaces/{stack.settings.temporal_namespace}/workflows")
        console.print("(the demo stops the stack it started; `make dev` brings it back with these workflows)")
    wrong = [scenario.name for scenario, outcome, _ in results if outcome.state != scenario.expected]
    if wrong or not check.ok:
        console.print(
            f"[red]{len(wrong)} scenario(s) in the wrong state[/]" + ("" if check.ok else "; ledger check failed")
        )
        return 1
    console.print(f"[green]All {len(results)} scenarios ended in their expected state.[/]")
    return 0
