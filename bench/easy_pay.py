"""``make bench``: what Temporal costs on the Easy Pay hot path, next to a bare signed handler.

Measured, at concurrency 1, 10 and 50, through real HTTP on loopback:

* **pay #2 latency** (p50/p99, ms): a signed pay #2 from the Alipay+ driver until its signed
  ``U/PAYMENT_IN_PROCESS`` answer with a paymentUrl is verified. On the embedded stack this is
  the update-with-start of ``EasyPayWorkflow`` (account check activity, record activity, answer).
* **Easy Pay flows per second**: closed-loop clients, each running pay #2 and then the user's
  page (GET, for its form token), PIN POST to the paymentUrl (303 back to the page) and the
  page's GET showing our result page, whose Continue leads to Alipay+'s result page with
  ``status=success`` (verification, debit, record, notifyPayment started), for a fixed duration.

The baseline is a bare FastAPI handler defined here, without Temporal or a database: it checks
the Alipay+ signature over the raw body, parses ``PayRequest`` and answers a signed
``U/PAYMENT_IN_PROCESS``. It does the protocol work every implementation must do (RSA verify and
sign, JSON parse and serialise, one HTTP exchange), so the gap between the two rows is what
durability costs: workflow history writes, activities, the ledger. Its "flow" is pay plus three
more signed round trips (signed inquiryPayments standing in for the page's GET, the
verification POST and the result page's GET), so both sides make the same number of HTTP calls
per flow. Each level is preceded by a few warm-up calls at its concurrency (connections open);
each target's CPU use (this process, the dev server) is printed to show where the time goes.

Both targets run in this process, on one event loop with the load generator (as ``mpp dev``
does), served by uvicorn and called through the same ``AlipayPlusDriver`` code; the Temporal
dev server is a separate process on a fresh SQLite file (WAL) under a temporary directory. The
payer is the PIN user 852-11112222 and every payment is 100 minor units (IDR), far from the
user's single and daily limits; every paymentRequestId is new. Exits non-zero if any request
failed or answered anything but the expected result.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import math
import os
import platform
import socket
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from alipayplus import (
    Amount,
    ErrorResponse,
    InquiryPaymentRequest,
    InquiryPaymentResponse,
    Message,
    PayRequest,
    PayResponse,
    Result,
    ResultCode,
    ResultStatus,
    SignatureError,
)
from api.pages import form_fields, link
from devstack.stack import DevStack, Ports, _serving, dev_stack
from sandbox.alipayplus.driver import AlipayPlusDriver
from sandbox.alipayplus.peer import SandboxAlipayPlus
from wallet.db import create_engine_for
from wallet.ledger import Ledger
from wallet.settings import Settings
from workers.cli import _exit

LEVELS = (1, 10, 50)
PIN_USER, PIN = "852-11112222", "246810"
AMOUNT = Amount(currency="IDR", value=100)  # 100 minor units: thousands of flows stay under the daily limit
FLOW_SECONDS = 8.0  # closed-loop flows per level, and at least FLOWS_PER_CLIENT each; in-flight ones count
FLOWS_PER_CLIENT = 2
WARMUP_PAYS, WARMUP_FLOWS = 10, 5  # pays per level (at least one per client), flows once per target
# No connection churn at 50; idle connections dropped before uvicorn's 5 s keep-alive timeout
# closes them, or a request racing that close fails with a ReadError (a client artefact).
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=3.0)


def latency_requests(concurrency: int) -> int:
    return max(40, 4 * concurrency)


class Failure(Exception):
    """A request that completed but did not answer what a working flow answers."""


# --- the baseline: a bare signed FastAPI handler, no Temporal, no database -------------------


def bare_app(settings: Settings, base_url: str) -> FastAPI:
    """Signature check over the raw body, parse, signed answer: the floor any MPP pays."""
    signer, verifier = settings.signer, settings.verifier
    app = FastAPI(title="bare signed handler")

    def signed(path: str, message: Message) -> Response:
        body = message.to_wire()
        return Response(content=body, headers=signer.headers(path, body, response=True))

    async def verified(request: Request, message_type: type[Message]) -> Message | ErrorResponse:
        body = await request.body()
        try:
            verifier.check(request.url.path, request.headers, body)
            return message_type.from_wire(body)
        except SignatureError as exc:
            return ErrorResponse(result=Result.of(exc.code, exc.message))
        except ValidationError as exc:
            return ErrorResponse(result=Result.of(ResultCode.PARAM_ILLEGAL, str(exc.errors()[0]["msg"])))

    @app.post(PayRequest.PATH)
    async def pay(request: Request) -> Response:
        order = await verified(request, PayRequest)
        if isinstance(order, PayRequest):
            payment_id = uuid.uuid4().hex
            order = PayResponse(
                result=Result.of(ResultCode.PAYMENT_IN_PROCESS),
                payment_id=payment_id,
                payment_url=f"{base_url}/easypay/verify/{order.payment_request_id}/{payment_id}",
            )
        return signed(PayRequest.PATH, order)

    @app.post(InquiryPaymentRequest.PATH)
    async def inquiry_payment(request: Request) -> Response:
        inquiry = await verified(request, InquiryPaymentRequest)
        if isinstance(inquiry, InquiryPaymentRequest):
            inquiry = InquiryPaymentResponse(
                result=Result.success(), payment_result=Result.success(), payment_request_id=inquiry.payment_request_id
            )
        return signed(InquiryPaymentRequest.PATH, inquiry)

    return app


# --- what a flow is, per target --------------------------------------------------------------


@dataclass
class Target:
    name: str
    driver: AlipayPlusDriver
    psp_id: str
    redirect_base: str
    verify: Callable[[PayRequest, PayResponse], Awaitable[None]]  # the flow's second HTTP call
    run_id: str = field(default_factory=lambda: time.strftime("%H%M%S"))

    def order(self) -> PayRequest:
        request_id = f"bench{self.run_id}{uuid.uuid4().hex[:16]}"
        return AlipayPlusDriver.easy_pay_order(
            request_id,
            PIN_USER,
            AMOUNT,
            self.psp_id,
            redirect_url=f"{self.redirect_base}/sandbox/result?paymentRequestId={request_id}",
        )

    async def pay(self) -> tuple[PayRequest, PayResponse, float]:
        request = self.order()
        started = time.perf_counter()
        answer = await self.driver.pay(request)
        seconds = time.perf_counter() - started
        result = answer.result
        if result.result_status is not ResultStatus.UNKNOWN or result.result_code != ResultCode.PAYMENT_IN_PROCESS:
            raise Failure(f"pay #2 answered {result.result_status}/{result.result_code}: {result.result_message}")
        if not answer.payment_url:
            raise Failure("pay #2 answered U/PAYMENT_IN_PROCESS without a paymentUrl (answer deadline passed?)")
        return request, answer, seconds

    async def flow(self) -> str:
        request, answer, _ = await self.pay()
        await self.verify(request, answer)
        return request.payment_request_id


def pin_verification(user: httpx.AsyncClient) -> Callable[[PayRequest, PayResponse], Awaitable[None]]:
    async def verify(request: PayRequest, answer: PayResponse) -> None:
        url = answer.payment_url or ""
        page = await user.get(url)  # the page, then its form with its token
        response = await user.post(url, data={"code": PIN, **form_fields(page.text)})
        location = response.headers.get("location", "")
        if response.status_code != 303 or not location or not url.endswith(location.split("?")[0]):
            raise Failure(f"PIN POST answered HTTP {response.status_code} {location or response.text[:120]!r}")
        result = await user.get(url)  # the page, now our result page
        if "status=success" not in (link(result.text, "continue") or ""):
            raise Failure(f"the result page answered HTTP {result.status_code} {result.text[:120]!r}")

    return verify


def signed_round_trip(driver: AlipayPlusDriver) -> Callable[[PayRequest, PayResponse], Awaitable[None]]:
    async def verify(request: PayRequest, answer: PayResponse) -> None:
        for _ in range(3):  # as many calls as the page's GET, the PIN POST and the result page's GET
            inquiry = await driver.inquire(request.payment_request_id)
            if not inquiry.result.is_success:
                raise Failure(f"inquiryPayment answered {inquiry.result.result_status}/{inquiry.result.result_code}")

    return verify


# --- load ------------------------------------------------------------------------------------


@dataclass
class Level:
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    flows: int = 0
    flow_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        """Nearest rank: with 40 samples, p99 is the slowest."""
        ranked = sorted(self.latencies_ms)
        return ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)] if ranked else float("nan")

    @property
    def flows_per_second(self) -> float:
        return self.flows / self.flow_seconds if self.flow_seconds else float("nan")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


async def measure_latency(target: Target, level: Level, requests: int) -> None:
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                _, _, seconds = await target.pay()
                level.latencies_ms.append(seconds * 1000)
            except Exception as exc:
                level.failures.append(f"pay: {_describe(exc)}")

    await asyncio.gather(*(client() for _ in range(level.concurrency)))


async def measure_flows(target: Target, level: Level, seconds: float, at_least: int) -> list[str]:
    """Closed loop until ``seconds`` have passed and ``at_least`` flows have started."""
    completed: list[str] = []
    started = time.perf_counter()
    deadline = started + seconds
    begun = 0

    async def client() -> None:
        nonlocal begun
        while time.perf_counter() < deadline or begun < at_least:
            begun += 1
            try:
                completed.append(await target.flow())
            except Exception as exc:
                level.failures.append(f"flow: {_describe(exc)}")

    await asyncio.gather(*(client() for _ in range(level.concurrency)))
    level.flow_seconds = time.perf_counter() - started
    level.flows = len(completed)
    return completed


async def drain_notifications(
    peer: SandboxAlipayPlus | None, payment_request_ids: list[str], timeout: float = 60.0
) -> list[str]:
    """Let each finished payment's notifyPayment land before the next measurement starts."""
    pending = set(payment_request_ids) if peer is not None else set()
    deadline = time.perf_counter() + timeout
    while peer is not None and pending and time.perf_counter() < deadline:
        pending -= {received.body.get("paymentRequestId") for received in peer.notifications()}
        if pending:
            await asyncio.sleep(0.1)
    return [f"notifyPayment never arrived for {len(pending)} payment(s)"] if pending else []


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process (all threads) and its child processes (the dev server)."""
    own = sum(os.times()[:2])
    children = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # from field 3 (state) on
            if int(fields[1]) == os.getpid():
                children += (int(fields[11]) + int(fields[12])) / tick
    return own, children


async def bench(
    target: Target, console: Console, peer: SandboxAlipayPlus | None = None
) -> tuple[list[Level], list[str]]:
    """Warm-up flows once; per level a warm-up at that concurrency (its connections open), then measure."""
    console.print(f"[bold]{target.name}[/]")
    wall, (own, children) = time.perf_counter(), cpu_seconds()
    warm = Level(concurrency=WARMUP_FLOWS)
    failures = warm.failures
    failures += await drain_notifications(peer, await measure_flows(target, warm, 0.0, WARMUP_FLOWS))
    levels = []
    for concurrency in LEVELS:
        await measure_latency(target, Level(concurrency, failures=failures), max(WARMUP_PAYS, concurrency))
        level = Level(concurrency)
        await measure_latency(target, level, latency_requests(concurrency))
        completed = await measure_flows(target, level, FLOW_SECONDS, at_least=FLOWS_PER_CLIENT * concurrency)
        level.failures += await drain_notifications(peer, completed)
        console.print(
            f"  c={concurrency:<3} pay p50 {level.percentile(50):7.1f} ms  p99 {level.percentile(99):7.1f} ms  "
            f"{level.flows_per_second:7.1f} flows/s ({level.flows} in {level.flow_seconds:.1f} s)  "
            f"failed {len(level.failures)}"
        )
        levels.append(level)
    wall, (own, children) = (
        time.perf_counter() - wall,
        (now - then for now, then in zip(cpu_seconds(), (own, children), strict=True)),
    )
    console.print(
        f"  CPU over {wall:.0f} s: this process (load, API, worker, sandbox) {own / wall:.2f} cores, "
        f"Temporal dev server {children / wall:.2f} cores"
    )
    return levels, failures


# --- report ----------------------------------------------------------------------------------


def machine_facts() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cores} cores ({cpu}), Python {platform.python_version()}, "
        f"temporalio {importlib.metadata.version('temporalio')}, {platform.system()} {platform.release()}"
    )


def report(results: list[tuple[str, list[Level]]]) -> Table:
    table = Table(
        title="Easy Pay: pay #2 latency and completed flows",
        caption=(
            f"latency: max(40, 4×c) pay #2 calls per level after max(10, c) warm-up calls; flows: closed loop for "
            f"{FLOW_SECONDS:.0f} s and at least {FLOWS_PER_CLIENT} per client, in-flight flows finish and count; "
            "flow = pay #2 + two more HTTP calls"
        ),
    )
    for column in ("target", "conc.", "pay n", "pay p50 ms", "pay p99 ms", "flows/s", "flows", "failed"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for index, (name, levels) in enumerate(results):
        for level in levels:
            table.add_row(
                name if level is levels[0] else "",
                str(level.concurrency),
                str(len(level.latencies_ms)),
                f"{level.percentile(50):.1f}",
                f"{level.percentile(99):.1f}",
                f"{level.flows_per_second:.1f}",
                str(level.flows),
                str(len(level.failures)) if not level.failures else f"[red]{len(level.failures)}[/]",
            )
        if index < len(results) - 1:
            table.add_section()
    return table


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run(console: Console) -> int:
    if not console.is_terminal:
        console.width = max(console.width, 130)  # keep the table readable in logs
    begun = time.perf_counter()
    failures: list[str] = []
    results: list[tuple[str, list[Level]]] = []
    ledger_ok = False
    with tempfile.TemporaryDirectory(prefix="mpp-bench-") as var_dir:
        console.print("Starting the embedded stack (Temporal dev server on SQLite, worker, API, sandbox Alipay+) …")
        async with dev_stack(Path(var_dir), Ports.free(), web_ui=False) as stack, contextlib.AsyncExitStack() as scope:
            console.print(f"  up in {time.perf_counter() - begun:.1f} s")
            user = await scope.enter_async_context(httpx.AsyncClient(timeout=30.0, limits=LIMITS))
            bare_url = f"http://127.0.0.1:{_free_port()}"
            await scope.enter_async_context(
                _serving(bare_app(stack.settings, bare_url), int(bare_url.rsplit(":", 1)[1]))
            )
            bare_driver = _driver(stack, bare_url)
            api_driver = _driver(stack, stack.api_url)
            scope.push_async_callback(bare_driver.aclose)
            scope.push_async_callback(api_driver.aclose)
            targets = [
                (
                    Target(
                        "bare signed handler",
                        bare_driver,
                        stack.settings.psp_id,
                        stack.sandbox_url,
                        signed_round_trip(bare_driver),
                    ),
                    None,
                ),
                (
                    Target(
                        "MPP API + Temporal",
                        api_driver,
                        stack.settings.psp_id,
                        stack.sandbox_url,
                        pin_verification(user),
                    ),
                    stack.alipayplus,
                ),
            ]
            for target, peer in targets:
                levels, warm_up_failures = await bench(target, console, peer)
                results.append((target.name, levels))
                failures += warm_up_failures + [failure for level in levels for failure in level.failures]
            engine = create_engine_for(stack.settings.database_url)
            try:
                ledger_ok = Ledger(engine).check().ok
            finally:
                engine.dispose()
    console.print(report(results[::-1]))  # the stack first, its baseline under it
    console.print(f"Machine: {machine_facts()}")
    console.print(
        f"Ledger check after the run: {'ok' if ledger_ok else '[red]FAILED[/]'}; "
        f"total {time.perf_counter() - begun:.0f} s"
    )
    if failures or not ledger_ok:
        console.print(
            f"[red]{len(failures)} request(s) failed[/]" + ("" if ledger_ok else "[red]; the ledger check failed[/]")
        )
        for failure, count in Counter(failures).most_common(10):
            console.print(f"  {count}× {failure}")
        return 1
    return 0


def _driver(stack: DevStack, base_url: str) -> AlipayPlusDriver:
    """The sandbox's signing driver, with a connection pool big enough for concurrency 50."""
    return AlipayPlusDriver.for_peer(stack.alipayplus, base_url, transport=httpx.AsyncHTTPTransport(limits=LIMITS))


async def main() -> int:
    console = Console()
    try:
        return await run(console)
    except Exception:  # everything is shut down by now; report and leave non-zero
        console.print_exception()
        return 1


if __name__ == "__main__":
    _exit(main)
