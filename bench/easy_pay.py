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

Both targets run in this process, served by uvicorn (the stack as ``mpp dev`` runs it: API, worker
and sandbox Alipay+ on one event loop); the load comes from a process of its own
(``bench._load``), calling through the same ``AlipayPlusDriver`` code, so the process under test
has its core to itself. The Temporal dev server is a separate process on a fresh SQLite file (WAL)
under a temporary directory. In the same run, on the same dev server, the engine's ceiling is
measured (``bench._ceiling``: trivial 1-activity workflows/s and trivial update-with-start latency)
and Easy Pay's figures are printed as ratios of it, with the peak memory and the CPU per flow and per
trivial workflow of every process (under test, dev server, load): from these, the flows/s the
machine's cores allow, which says whether a level was bound by the machine or by waiting. The
payer is the PIN user 852-11112222 and every payment is 100 minor units (IDR), far from the
user's single and daily limits; every paymentRequestId is new. Exits non-zero if any request
failed or answered anything but the expected result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from fastapi import FastAPI, Request, Response
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from alipayplus import (
    ErrorResponse,
    InquiryPaymentRequest,
    InquiryPaymentResponse,
    Message,
    PayRequest,
    PayResponse,
    Result,
    ResultCode,
    SignatureError,
)
from devstack.processes import mpp_command, settings_env
from devstack.stack import DevStack, Ports, _serving, dev_stack
from sandbox.alipayplus.peer import SandboxAlipayPlus
from wallet.db import create_engine_for
from wallet.ledger import Ledger
from wallet.secrets import keyed_digest, pin_verifier, pin_verifier_matches
from wallet.settings import Settings
from workers.cli import _exit

from ._ceiling import busy, engine_ceiling, ratio
from ._cpu import CpuUse, cores, cores_allow, cpu_seconds, peak_rss_mib
from ._load import PIN, PIN_USER, Ceiling, Level, LoadProcess, TargetSpec, percentile

LEVELS = (1, 10, 50)
FLOW_SECONDS = 8.0  # closed-loop flows per level, and at least FLOWS_PER_CLIENT each; in-flight ones count
FLOWS_PER_CLIENT = 2
WARMUP_PAYS, WARMUP_FLOWS = 10, 5  # pays per level (at least one per client), flows once per target


def latency_requests(concurrency: int) -> int:
    return max(40, 4 * concurrency)


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


# --- load ------------------------------------------------------------------------------------


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


async def bench(
    load: LoadProcess,
    target: TargetSpec,
    console: Console,
    peer: SandboxAlipayPlus | None = None,
    workers: Sequence[int] = (),  # the extra worker processes' ids: their CPU is the system's too
) -> tuple[list[Level], list[str]]:
    """Warm-up flows once; per level a warm-up at that concurrency (its connections open), then measure."""
    console.print(f"[bold]{target.name}[/]")
    wall, start = time.perf_counter(), cpu_seconds(workers, load.pid)
    warm = await load.flows(target, WARMUP_FLOWS, 0.0, WARMUP_FLOWS)
    failures = warm.failures + await drain_notifications(peer, warm.completed)
    levels = []
    for concurrency in LEVELS:
        failures += (await load.latency(target, concurrency, max(WARMUP_PAYS, concurrency))).failures
        level = await load.latency(target, concurrency, latency_requests(concurrency))
        flows_began, before = time.perf_counter(), cpu_seconds(workers, load.pid)
        flows = await load.flows(target, concurrency, FLOW_SECONDS, FLOWS_PER_CLIENT * concurrency)
        used, flows_took = cpu_seconds(workers, load.pid).since(before), time.perf_counter() - flows_began
        level.flows, level.flow_seconds, level.completed = flows.flows, flows.flow_seconds, flows.completed
        level.failures += flows.failures
        level.cpu_per_flow = used.per(level.flows)
        level.failures += await drain_notifications(peer, level.completed)
        console.print(
            f"  c={concurrency:<3} pay p50 {level.percentile(50):7.1f} ms  p99 {level.percentile(99):7.1f} ms  "
            f"{level.flows_per_second:7.1f} flows/s ({level.flows} in {level.flow_seconds:.1f} s)  "
            f"failed {len(level.failures)}  cores busy {busy(used, flows_took)}"
        )
        levels.append(level)
    wall, used = time.perf_counter() - wall, cpu_seconds(workers, load.pid).since(start)
    console.print(f"  over all {wall:.0f} s: cores busy {busy(used, wall)}")
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


def ceiling_report(ours: list[Level], ceiling: dict[int, Ceiling]) -> Table:
    """Easy Pay against the engine's ceiling at each concurrency, measured in this run."""
    table = Table(
        title="Easy Pay ÷ the engine's ceiling (same run, same dev server)",
        caption="ceiling: trivial 1-activity workflows/s and trivial update-with-start latency (bench._trivial)",
    )
    columns = (
        "conc.", "flows/s", "ceiling wf/s", "flows ÷ ceiling", "pay p50 ÷ ceiling p50", "pay p99 ÷ ceiling p99",
        "ceiling p50/p99 ms",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for level in ours:
        engine = ceiling.get(level.concurrency)
        if engine is None:
            continue
        engine_p50, engine_p99 = percentile(engine.update_ms, 50), percentile(engine.update_ms, 99)
        table.add_row(
            str(level.concurrency),
            f"{level.flows_per_second:.1f}",
            f"{engine.workflows_per_second:.1f}",
            ratio(level.flows_per_second, engine.workflows_per_second),
            ratio(level.percentile(50), engine_p50),
            ratio(level.percentile(99), engine_p99),
            f"{engine_p50:.0f} / {engine_p99:.0f}",
        )
    return table


def cpu_report(ours: list[Level], ceiling: dict[int, Ceiling], pin_check_ms: float) -> Table:
    """Where the machine's CPU goes per Easy Pay flow and per trivial workflow, all processes counted.
    Where flows/s come near what the cores allow, the machine was saturated, not waiting, and
    flows ÷ ceiling is about the inverse of the CPU ratio: only less CPU per flow raises it."""
    table = Table(
        title=f"CPU per unit of work, every process counted ({cores()} cores)",
        caption=(
            "ms of CPU: under test (API, worker, sandbox Alipay+) / dev server / load process; "
            f"each flow's includes one PIN check, scrypt at the stack's cost: {pin_check_ms:.0f} ms here"
        ),
    )
    columns = (
        "conc.", "Easy Pay flow ms", "trivial workflow ms", "flow ÷ workflow CPU", "flows/s the cores allow",
        "flows/s measured", "ceiling wf/s the cores allow",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for level in ours:
        engine = ceiling.get(level.concurrency)
        flow, workflow = level.cpu_per_flow, engine.cpu_per_workflow if engine else None
        if flow is None or workflow is None:
            continue
        table.add_row(
            str(level.concurrency),
            milliseconds(flow),
            milliseconds(workflow),
            ratio(flow.total, workflow.total),
            f"{cores_allow(flow):.1f}",
            f"{level.flows_per_second:.1f}",
            f"{cores_allow(workflow):.1f}",
        )
    return table


def milliseconds(cpu: CpuUse) -> str:
    return f"{cpu.total * 1000:.0f} = " + " / ".join(f"{part * 1000:.0f}" for part in cpu)


def pin_check_cpu_ms(settings: Settings, checks: int = 5) -> float:
    """CPU of one PIN check at the stack's scrypt cost, on this thread (the flows' checks run in the
    worker's threads, scrypt without the GIL)."""
    digest = keyed_digest(settings.secret_key, "pin", PIN_USER, PIN)
    stored = pin_verifier(digest, settings.pin_scrypt_cost)
    began = time.thread_time()
    for _ in range(checks):
        pin_verifier_matches(stored, digest)
    return (time.thread_time() - began) * 1000 / checks


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


@contextlib.contextmanager
def extra_workers(stack: DevStack, count: int) -> Iterator[list[int]]:
    """``count`` more worker processes (``mpp worker``) on the stack's queue, beside its own worker;
    stopped by their own process ids (SIGTERM, then SIGKILL past 30 s)."""
    environment = {**os.environ, **settings_env(stack.settings)}
    children = [
        subprocess.Popen(mpp_command("worker"), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield [child.pid for child in children]
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


async def run(console: Console, worker_processes: int = 1) -> int:
    if not console.is_terminal:
        console.width = max(console.width, 130)  # keep the table readable in logs
    begun = time.perf_counter()
    failures: list[str] = []
    results: list[tuple[str, list[Level]]] = []
    ledger_ok = False
    ceiling: dict[int, Ceiling] = {}
    pin_check_ms = float("nan")
    peak_rss = (float("nan"), float("nan"))
    load = LoadProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="mpp-bench-") as var_dir:
            console.print("Starting the embedded stack (Temporal dev server on SQLite, worker, API, sandbox Alipay+) …")
            async with (
                dev_stack(Path(var_dir), Ports.free(), web_ui=False) as stack,
                contextlib.AsyncExitStack() as scope,
            ):
                console.print(f"  up in {time.perf_counter() - begun:.1f} s")
                workers = scope.enter_context(extra_workers(stack, worker_processes - 1))
                if workers:
                    console.print(f"  {len(workers)} more worker process(es): {', '.join(map(str, workers))}")
                bare_url = f"http://127.0.0.1:{_free_port()}"
                await scope.enter_async_context(
                    _serving(bare_app(stack.settings, bare_url), int(bare_url.rsplit(":", 1)[1]))
                )
                ceiling = await engine_ceiling(load, stack, LEVELS, FLOW_SECONDS, console)
                pin_check_ms = pin_check_cpu_ms(stack.settings)
                targets = [
                    (_spec(stack, "bare signed handler", bare_url, "signed"), None),
                    (_spec(stack, "MPP API + Temporal", stack.api_url, "pin"), stack.alipayplus),
                ]
                for target, peer in targets:
                    levels, warm_up_failures = await bench(load, target, console, peer, workers)
                    results.append((target.name, levels))
                    failures += warm_up_failures + [failure for level in levels for failure in level.failures]
                peak_rss = peak_rss_mib()
                engine = create_engine_for(stack.settings.database_url)
                try:
                    ledger_ok = Ledger(engine).check().ok
                finally:
                    engine.dispose()
    finally:
        load.close()
    console.print(report(results[::-1]))  # the stack first, its baseline under it
    if ceiling and results:
        console.print(ceiling_report(results[-1][1], ceiling))
        console.print(cpu_report(results[-1][1], ceiling, pin_check_ms))
    own_rss, server_rss = peak_rss
    console.print(f"Peak RSS: the process under test {own_rss:.0f} MiB, Temporal dev server {server_rss:.0f} MiB")
    console.print(f"Machine: {machine_facts()}; load average {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
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


def _spec(stack: DevStack, name: str, base_url: str, flow: str) -> TargetSpec:
    """A target the load process can rebuild: the sandbox Alipay+'s keys sign, the MPP's verify."""
    settings = stack.settings
    return TargetSpec(
        name=name,
        base_url=base_url,
        psp_id=settings.psp_id,
        redirect_base=stack.sandbox_url,
        flow="pin" if flow == "pin" else "signed",
        client_id=settings.client_id,
        alipayplus_private_key_file=settings.mpp_private_key_file.parent / "alipayplus_private.pem",
        mpp_public_key_file=settings.mpp_public_key_file,
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="worker processes in all: the stack's own, and `mpp worker` processes beside it (default 1)",
    )
    arguments = parser.parse_args()
    console = Console()
    try:
        return await run(console, max(1, arguments.worker_processes))
    except Exception:  # everything is shut down by now; report and leave non-zero
        console.print_exception()
        return 1


if __name__ == "__main__":
    _exit(main)
