"""``make bench-nfc-pay``: NFC taps and their conversion into settled payments, end to end on the
embedded stack, loopback only.

Every tap is the whole chain: the sandbox POS terminal (``sandbox.pos.PosTerminal``) runs the
kernel-2 exchange against the phone's ``process_apdu`` (``hce_device.nfc_sdk``, an activated card
of the PIN user 852-11112222), sends the authorization over HTTP to the sandbox Mastercard, which
recomputes the ARQC and hands it to Alipay+'s card-event converter; that sends our signed NFC pay
(``NfcPaymentWorkflow``: payer check, debit, records) and approves on its S. The phone then reports
the tap to our API (``POST …/taps``, a signal to the token workflow) and, below 10 credentials,
collects more through our server (the token workflow's replenish via the Ant proxy).

Printed:

* **taps per second through the whole chain**: one phone tapping one tap after another, then
  ``PHONES`` phones tapping at once (each phone's own taps one after another, as at a counter),
  timed until the token workflows' state counts every tap; p50/max of one tap (POS to approval,
  the report not included) and of tap plus report (the phone starts the report as the ARQC
  leaves, so it mostly overlaps the authorization).
* **authorizations per second converted into settled payments**: an approved tap (pay S), then the
  acquirer's clearing: every other one at the authorized amount (``CLEARING_EQUAL``: nothing is
  sent) and the rest lower (``CLEARING_LOWER``: a refund of the difference, counted once the
  refund answers S); at concurrency 1 and ``PHONES``.

Before the taps, in the same run and on the same dev server, the engine's ceiling is measured
(``bench._ceiling``: trivial 1-activity workflows/s at concurrency 1 and ``PHONES``, their load from
a process of its own), and the taps/s are printed as ratios of it, with the CPU per tap (this
process, the dev server) and the peak memory. The taps' own load stays in this process: the phone,
the POS and Mastercard are the chain being measured.

Every tap is IDR 1.00, far from the user's balance, single and daily limits; the stack's data is
a fresh temporary directory. Loops are bounded; the process exits non-zero if any tap is not
approved, any clearing's refund does not answer S, the token workflows do not count every tap in
time, or the ledger check fails.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from alipayplus import Amount
from devstack.demo import Demo, ledger_line
from devstack.demo.nfc import PIN_USER, ActivatedPhone, activated_phone
from devstack.stack import DevStack, Ports, dev_stack
from sandbox.alipayplus.card_events import CardEvent
from sandbox.pos import HttpCardNetwork, PosConfig, PosTerminal, TapOutcome
from wallet.db import create_engine_for
from wallet.ledger import Ledger
from workers.cli import _exit

from ._ceiling import engine_ceiling, ratio
from ._cpu import CpuUse, cores_allow, cpu_seconds, peak_rss_mib
from ._load import Ceiling, LoadProcess

PHONES = 10
SEQUENTIAL_TAPS = 30
TAPS_PER_PHONE = 10  # at once: PHONES × TAPS_PER_PHONE taps
SETTLEMENTS_ALONE = 20
SETTLEMENTS_PER_PHONE = 5  # at once: PHONES × SETTLEMENTS_PER_PHONE authorizations
WARM_UP_TAPS = 3
CEILING_SECONDS = 8.0
TAP = Amount(currency="IDR", value=100)  # IDR 1.00
CLEARED_LOWER = Amount(currency="IDR", value=60)  # the acquirer clears IDR 0.60: IDR 0.40 refunded
TERMINAL = PosConfig(terminal_id="BENCHPOS", merchant_name="Bench Kopi")
COUNT_POLLS, COUNT_POLL_SECONDS = 600, 0.05  # at most 30 s for the token workflows to count the taps


class BenchFailure(RuntimeError):
    """A tap, a settlement or a count that did not end as it must."""


@dataclass
class Checkout:
    """One phone at one terminal, and how many of its taps our server must count."""

    phone: ActivatedPhone
    terminal: PosTerminal
    taps: int = 0

    async def tap(self) -> tuple[TapOutcome, float, float]:
        """One approved tap and its report: (outcome, seconds to approval, seconds with the report)."""
        started = time.perf_counter()
        outcome = await self.terminal.tap(self.phone.sdk, TAP)
        approved = time.perf_counter()
        if not outcome.approved:
            raise BenchFailure(
                f"tap {self.taps + 1} of {self.phone.token_reference_id}: {outcome.status} {outcome.reason}"
            )
        self.taps += 1
        waiting = await self.phone.sdk.report_taps()
        if waiting:
            raise BenchFailure(f"{waiting} tap report(s) of {self.phone.token_reference_id} not delivered")
        return outcome, approved - started, time.perf_counter() - started


@dataclass
class Row:
    load: str
    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # the first figure's p50/max
    with_report: list[float] = field(default_factory=list)
    cpu_per_tap: CpuUse | None = None  # this process (phones, POS, peers and the stack), the dev server

    def per_second(self) -> str:
        return f"{self.count / self.seconds:.1f}"


@asynccontextmanager
async def checkouts(demo: Demo, phones: int) -> AsyncIterator[list[Checkout]]:
    """``phones`` phones activated at once (to status 2), each at its own terminal on Mastercard."""
    network = HttpCardNetwork(demo.stack.sandbox_url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(network.aclose)
        activated = await asyncio.gather(
            *(stack.enter_async_context(activated_phone(demo, PIN_USER)) for _ in range(phones))
        )
        yield [Checkout(phone, PosTerminal(TERMINAL, network)) for phone in activated]


async def counted(demo: Demo, checkouts: list[Checkout]) -> None:
    """Wait until every token workflow counts every tap its phone made."""
    pending = list(checkouts)
    for _ in range(COUNT_POLLS):
        states = await asyncio.gather(*(checkout.phone.token_state(demo) for checkout in pending))
        pending = [checkout for checkout, state in zip(pending, states, strict=True) if state["taps"] < checkout.taps]
        if not pending:
            return
        await asyncio.sleep(COUNT_POLL_SECONDS)
    raise BenchFailure(f"{len(pending)} token workflow(s) did not count every tap in time")


async def tap_run(demo: Demo, load: str, checkouts: list[Checkout], taps_each: int) -> Row:
    """Each checkout taps ``taps_each`` times, one after another; all checkouts at once."""

    async def taps(checkout: Checkout) -> list[tuple[float, float]]:
        timings = []
        for _ in range(taps_each):
            _, approval, with_report = await checkout.tap()
            timings.append((approval, with_report))
        return timings

    started, before = time.perf_counter(), cpu_seconds()
    timings = [timing for each in await asyncio.gather(*(taps(checkout) for checkout in checkouts)) for timing in each]
    await counted(demo, checkouts)
    elapsed = time.perf_counter() - started
    row = Row(load, len(timings), elapsed, [t[0] for t in timings], [t[1] for t in timings])
    row.cpu_per_tap = cpu_seconds().since(before).per(row.count)
    return row


async def settle(demo: Demo, checkout: Checkout, lower: bool) -> float:
    """An authorization to a settled payment: the tap (pay S), then its clearing; seconds taken."""
    started = time.perf_counter()
    outcome, _, _ = await checkout.tap()
    assert outcome.authorization is not None  # an approved tap was authorized
    authorization_id = outcome.authorization.retrieval_reference
    cleared = await demo.stack.card_events.clear(authorization_id, CLEARED_LOWER if lower else TAP)
    [step] = cleared.steps
    expected = CardEvent.CLEARING_LOWER if lower else CardEvent.CLEARING_EQUAL
    if step.event is not expected or not step.succeeded or (lower and step.call is None):
        answer = step.call.result if step.call else None
        raise BenchFailure(f"clearing of {authorization_id}: {step.event} {step.action} answered {answer}")
    return time.perf_counter() - started


async def settle_run(demo: Demo, load: str, checkouts: list[Checkout], each: int) -> Row:
    """Each checkout's authorizations one after another, all checkouts at once; every other one lower."""

    async def authorizations(checkout: Checkout, offset: int) -> list[float]:
        return [await settle(demo, checkout, lower=(offset + index) % 2 == 1) for index in range(each)]

    started = time.perf_counter()
    latencies = [
        t
        for each_run in await asyncio.gather(*(authorizations(c, i) for i, c in enumerate(checkouts)))
        for t in each_run
    ]
    elapsed = time.perf_counter() - started
    return Row(load, len(latencies), elapsed, latencies)


def _ms(values: list[float], pick: Callable[[list[float]], float]) -> str:
    return f"{pick(values) * 1000:.0f}" if values else "—"


def tap_table(rows: list[Row]) -> Table:
    table = Table(title="NFC taps through the whole chain (POS → phone → Mastercard → Alipay+ → pay → tap report)")
    columns = ("load", "taps", "p50 tap ms", "max tap ms", "p50 tap+report ms", "max tap+report ms", "taps/s counted")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.load,
            str(row.count),
            _ms(row.latencies, statistics.median),
            _ms(row.latencies, max),
            _ms(row.with_report, statistics.median),
            _ms(row.with_report, max),
            row.per_second(),
        )
    return table


def settle_table(rows: list[Row]) -> Table:
    table = Table(
        title="Authorizations converted into settled payments (pay S, then clearing: equal, or lower → refund S)"
    )
    for column in ("concurrency", "authorizations", "p50 ms", "max ms", "settled/s"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.load,
            str(row.count),
            _ms(row.latencies, statistics.median),
            _ms(row.latencies, max),
            row.per_second(),
        )
    return table


def ceiling_table(taps: list[Row], ceiling: dict[int, Ceiling]) -> Table:
    """Taps/s against the engine's 1-activity workflows/s at the same concurrency, with CPU per tap."""
    table = Table(title="NFC taps ÷ the engine's ceiling (same run, same dev server)")
    columns = (
        "load", "taps/s", "ceiling wf/s", "taps ÷ ceiling", "CPU ms/tap", "server CPU ms/tap", "taps/s the cores allow",
    )  # fmt: skip
    for column in columns:
        table.add_column(column)
    for row, concurrency in zip(taps, (1, PHONES), strict=True):
        engine = ceiling[concurrency]
        table.add_row(
            row.load,
            row.per_second(),
            f"{engine.workflows_per_second:.1f}",
            ratio(row.count / row.seconds, engine.workflows_per_second),
            f"{row.cpu_per_tap.under_test * 1000:.0f}" if row.cpu_per_tap else "n/a",
            f"{row.cpu_per_tap.server * 1000:.0f}" if row.cpu_per_tap else "n/a",
            f"{cores_allow(row.cpu_per_tap):.1f}" if row.cpu_per_tap else "n/a",
        )
    return table


async def bench(stack: DevStack, console: Console) -> int:
    stack.ant_nfc.approve_after_polls = 0  # activation is not what is measured here
    stack.ant_nfc.ntu_after_polls = 0
    load = LoadProcess()
    try:
        ceiling = await engine_ceiling(load, stack, (1, PHONES), CEILING_SECONDS, console)
    finally:
        load.close()
    demo = Demo(stack)
    try:
        console.print(f"Activating {PHONES} phones …")
        async with checkouts(demo, PHONES) as phones:
            alone = phones[:1]
            await tap_run(demo, "warm-up", alone, WARM_UP_TAPS)
            taps = [
                await tap_run(demo, "one phone, tap after tap", alone, SEQUENTIAL_TAPS),
                await tap_run(demo, f"{PHONES} phones at once", phones, TAPS_PER_PHONE),
            ]
            settled = [
                await settle_run(demo, "1", alone, SETTLEMENTS_ALONE),
                await settle_run(demo, str(PHONES), phones, SETTLEMENTS_PER_PHONE),
            ]
            await counted(demo, phones)  # the settlements' taps too
    finally:
        await demo.aclose()
    console.print(tap_table(taps))
    console.print(ceiling_table(taps, ceiling))
    console.print(settle_table(settled))
    own_rss, server_rss = peak_rss_mib()
    console.print(f"Peak RSS: this process {own_rss:.0f} MiB, Temporal dev server {server_rss:.0f} MiB")
    engine = create_engine_for(stack.settings.database_url)
    try:
        check = Ledger(engine).check()
    finally:
        engine.dispose()
    console.print(ledger_line(check))
    console.print(
        f"Each tap {TAP}; a lower clearing is {CLEARED_LOWER} (refund of the rest). Phones replenish below 10 "
        "credentials through our server, inside the tap+report figures."
    )
    return 0 if check.ok else 1


async def run(console: Console) -> int:
    with tempfile.TemporaryDirectory(prefix="mpp-bench-nfc-pay-") as var_dir:
        console.print("Starting the embedded stack (Temporal dev server, worker, API, sandbox peers) …")
        async with dev_stack(Path(var_dir), Ports.free(), web_ui=False) as stack:
            return await bench(stack, console)


async def main() -> int:
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 150)  # keep the tables readable in logs
    try:
        return await run(console)
    except Exception:
        console.print_exception()
        return 1


if __name__ == "__main__":
    _exit(main)
