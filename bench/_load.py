"""The benches' load, generated in a process of its own.

The process under test (API, worker, sandbox peer) then has its core to itself, as in production,
where Alipay+ and the users' browsers are elsewhere: a load generator sharing its event loop and
GIL took about a third of that process's CPU (signing pay requests, parsing pages). The parent sends
commands over a pipe (``LoadProcess.call``); the child runs them on its own event loop and sends
back plain, picklable results.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import httpx
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from alipayplus import Amount, PayRequest, PayResponse, ResultCode, ResultStatus
from api.pages import form_fields, link
from sandbox.alipayplus.driver import AlipayPlusDriver
from sandbox.alipayplus.peer import SandboxAlipayPlus
from wallet.settings import Settings
from wallet.temporal import connect

from ._cpu import CpuUse
from ._trivial import AnswerWorkflow, OneActivityWorkflow

PIN_USER, PIN = "852-11112222", "246810"
AMOUNT = Amount(currency="IDR", value=100)  # 100 minor units: thousands of flows stay under the daily limit
CEILING_QUEUE = "bench-ceiling"
# No connection churn at 50; idle connections dropped before uvicorn's 5 s keep-alive timeout
# closes them, or a request racing that close fails with a ReadError (a client artefact).
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=3.0)


class Failure(Exception):
    """A request that completed but did not answer what a working flow answers."""


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: with 40 samples, p99 is the slowest."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)] if ranked else float("nan")


@dataclass
class Level:
    """What one concurrency level measured."""

    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    flows: int = 0
    flow_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)  # the paymentRequestIds of the completed flows
    cpu_per_flow: CpuUse | None = None  # over the flows part, set by the parent

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    @property
    def flows_per_second(self) -> float:
        return self.flows / self.flow_seconds if self.flow_seconds else float("nan")


@dataclass(frozen=True)
class TargetSpec:
    """Where a target listens and how its flow goes, in values a child process can rebuild it from."""

    name: str
    base_url: str
    psp_id: str
    redirect_base: str
    flow: Literal["pin", "signed"]  # PIN on our page, or three signed inquiries standing in for it
    client_id: str
    alipayplus_private_key_file: Path
    mpp_public_key_file: Path


@dataclass
class Target:
    name: str
    driver: AlipayPlusDriver
    psp_id: str
    redirect_base: str
    verify: Callable[[PayRequest, PayResponse], Awaitable[None]]  # the flow's calls after pay #2
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


async def measure_flows(target: Target, level: Level, seconds: float, at_least: int) -> None:
    """Closed loop until ``seconds`` have passed and ``at_least`` flows have started."""
    started = time.perf_counter()
    deadline = started + seconds
    begun = 0

    async def client() -> None:
        nonlocal begun
        while time.perf_counter() < deadline or begun < at_least:
            begun += 1
            try:
                level.completed.append(await target.flow())
            except Exception as exc:
                level.failures.append(f"flow: {_describe(exc)}")

    await asyncio.gather(*(client() for _ in range(level.concurrency)))
    level.flow_seconds = time.perf_counter() - started
    level.flows = len(level.completed)


@dataclass
class Ceiling:
    """The engine's trivial workloads at one concurrency."""

    concurrency: int
    update_ms: list[float] = field(default_factory=list)
    workflows: int = 0
    seconds: float = 0.0
    cpu_per_workflow: CpuUse | None = None  # over the workflows/s part, set by the parent

    @property
    def workflows_per_second(self) -> float:
        return self.workflows / self.seconds if self.seconds else float("nan")


async def closed_loop(concurrency: int, seconds: float, call: Callable[[], Awaitable[object]]) -> tuple[int, float]:
    """``call()`` from ``concurrency`` clients, each again as soon as it returns, for ``seconds``."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done, time.perf_counter() - started


def _ceiling_calls(client: Client) -> tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[None]]]:
    """The two trivial calls against the worker on ``CEILING_QUEUE`` (``bench._ceiling.ceiling_worker``):
    an update-with-start answered at once (its milliseconds), and a 1-activity workflow run to its end."""

    async def update_with_start() -> float:
        operation = WithStartWorkflowOperation(
            AnswerWorkflow.run,
            id=f"bench-answer/{uuid.uuid4().hex}",
            task_queue=CEILING_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        started = time.perf_counter()
        await client.execute_update_with_start_workflow(AnswerWorkflow.answer, "ok", start_workflow_operation=operation)
        return (time.perf_counter() - started) * 1000

    async def one_activity() -> None:
        await client.execute_workflow(
            OneActivityWorkflow.run, "ok", id=f"bench-one/{uuid.uuid4().hex}", task_queue=CEILING_QUEUE
        )

    return update_with_start, one_activity


async def measure_ceiling_latency(client: Client, ceiling: Ceiling) -> None:
    """Update-with-start latencies: max(40, 4×c) calls after a warm-up at the same concurrency."""
    update_with_start, _ = _ceiling_calls(client)
    await closed_loop(ceiling.concurrency, 0.5, update_with_start)
    remaining = max(40, 4 * ceiling.concurrency)

    async def latency_client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            ceiling.update_ms.append(await update_with_start())

    await asyncio.gather(*(latency_client() for _ in range(ceiling.concurrency)))


async def measure_ceiling_workflows(client: Client, ceiling: Ceiling, seconds: float) -> None:
    """1-activity workflows per second, closed loop for ``seconds``."""
    _, one_activity = _ceiling_calls(client)
    ceiling.workflows, ceiling.seconds = await closed_loop(ceiling.concurrency, seconds, one_activity)


# --- the child process -------------------------------------------------------------------------


class _Load:
    """The child's side: targets built once from their specs, one HTTP client pool for all."""

    def __init__(self) -> None:
        self._targets: dict[str, Target] = {}
        self._closing: list[Callable[[], Awaitable[None]]] = []
        self._temporal: Client | None = None

    def target(self, spec: TargetSpec) -> Target:
        if spec.name not in self._targets:
            peer = SandboxAlipayPlus(
                client_id=spec.client_id,
                alipayplus_private_key_pem=spec.alipayplus_private_key_file.read_bytes(),
                mpp_public_key_pem=spec.mpp_public_key_file.read_bytes(),
            )
            transport = httpx.AsyncHTTPTransport(limits=LIMITS)
            driver = AlipayPlusDriver.for_peer(peer, spec.base_url, transport=transport)
            self._closing.append(driver.aclose)
            if spec.flow == "pin":
                user = httpx.AsyncClient(timeout=30.0, limits=LIMITS)
                self._closing.append(user.aclose)
                verify = pin_verification(user)
            else:
                verify = signed_round_trip(driver)
            self._targets[spec.name] = Target(spec.name, driver, spec.psp_id, spec.redirect_base, verify)
        return self._targets[spec.name]

    async def run(self, command: tuple[Any, ...]) -> Any:
        kind, *args = command
        if kind == "latency":
            spec, concurrency, requests = args
            level = Level(concurrency)
            await measure_latency(self.target(spec), level, requests)
            return level
        if kind == "flows":
            spec, concurrency, seconds, at_least = args
            level = Level(concurrency)
            await measure_flows(self.target(spec), level, seconds, at_least)
            return level
        if kind in ("ceiling-latency", "ceiling-workflows"):
            settings, ceiling, *seconds = args
            if self._temporal is None:  # as the stack connects: its address, namespace and payload codec
                self._temporal = await connect(settings)
            if kind == "ceiling-latency":
                await measure_ceiling_latency(self._temporal, ceiling)
            else:
                await measure_ceiling_workflows(self._temporal, ceiling, *seconds)
            return ceiling
        raise ValueError(f"unknown command {kind!r}")

    async def aclose(self) -> None:
        for close in self._closing:
            await close()


async def _serve(connection: Connection) -> None:
    load = _Load()
    try:
        while (command := await asyncio.to_thread(connection.recv)) is not None:
            try:
                connection.send(await load.run(command))
            except Exception as exc:  # the parent reports it; the child carries on
                connection.send(Failure(_describe(exc)))
    finally:
        await load.aclose()


def _child(connection: Connection) -> None:
    asyncio.run(_serve(connection))
    os._exit(0)  # past the Temporal runtime's teardown, which can abort a short process (sdk-python#300)


class LoadProcess:
    """The load generator's process: ``await call(command)`` runs one measurement there."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state copied from the parent
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_child, args=(child,), name="bench-load", daemon=True)
        self._process.start()
        child.close()
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def call(self, *command: Any) -> Any:
        async with self._lock:  # one measurement at a time
            self._connection.send(command)
            answer = await asyncio.to_thread(self._connection.recv)
        if isinstance(answer, Failure):
            raise answer
        return answer

    async def latency(self, spec: TargetSpec, concurrency: int, requests: int) -> Level:
        level: Level = await self.call("latency", spec, concurrency, requests)
        return level

    async def flows(self, spec: TargetSpec, concurrency: int, seconds: float, at_least: int) -> Level:
        level: Level = await self.call("flows", spec, concurrency, seconds, at_least)
        return level

    async def ceiling_latency(self, settings: Settings, ceiling: Ceiling) -> Ceiling:
        measured: Ceiling = await self.call("ceiling-latency", settings, ceiling)
        return measured

    async def ceiling_workflows(self, settings: Settings, ceiling: Ceiling, seconds: float) -> Ceiling:
        measured: Ceiling = await self.call("ceiling-workflows", settings, ceiling, seconds)
        return measured

    def close(self) -> None:
        """Stop the child: asked first, then by its own process id."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):  # a broken pipe: the child has gone already
                self._connection.send(None)
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._connection.close()
