"""The engine's ceiling, measured in the same run and on the same dev server as the bench beside it.

Two trivial workloads (``bench._trivial``) run on a worker of their own in the process under test,
configured as the payments worker is; the load comes from the bench's load process
(``bench._load``): update-with-start calls answered at once (p50/p99), then closed-loop 1-activity
workflows (workflows per second, and the CPU each costs every process: ``bench._cpu``). A bench
divides its own figures by these, so its ratios say how close the product comes to what Temporal
itself allows on this machine.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterable

from rich.console import Console
from temporalio.client import Client
from temporalio.worker import Worker

from devstack.stack import DevStack
from wallet.settings import Settings
from workers.worker import workflow_runner

from ._cpu import CpuUse, cores, cpu_seconds
from ._load import CEILING_QUEUE, Ceiling, LoadProcess, percentile
from ._trivial import AnswerWorkflow, OneActivityWorkflow, echo


def busy(used: CpuUse, wall: float) -> str:
    """The cores each process kept busy over ``wall`` seconds, and all of them out of the machine's."""
    return (
        f"{used.total / wall:.2f} of {cores()} (under test {used.under_test / wall:.2f}, "
        f"dev server {used.server / wall:.2f}, load {used.load / wall:.2f})"
    )


def ratio(ours: float, ceiling: float) -> str:
    return f"{ours / ceiling:.2f}" if ceiling and not math.isnan(ours) and not math.isnan(ceiling) else "n/a"


@contextlib.asynccontextmanager
async def ceiling_worker(client: Client) -> AsyncIterator[None]:
    """The trivial workloads' worker, configured as the payments worker is (runner, sandbox)."""
    async with Worker(
        client,
        task_queue=CEILING_QUEUE,
        workflows=[OneActivityWorkflow, AnswerWorkflow],
        activities=[echo],
        workflow_runner=workflow_runner(client.data_converter),
    ):
        yield


async def engine_ceiling(
    load: LoadProcess, stack: DevStack, levels: Iterable[int], seconds: float, console: Console
) -> dict[int, Ceiling]:
    """The ceiling at each of ``levels``, its load from ``load``, printed as it is measured."""
    console.print("[bold]engine ceiling[/] (trivial workflows on the same dev server)")
    ceiling: dict[int, Ceiling] = {}
    settings = Settings(**stack.settings.model_dump())  # its values, without the keys it has loaded
    async with ceiling_worker(stack.client):
        for concurrency in levels:
            trivial = await load.ceiling_latency(settings, Ceiling(concurrency))
            wall, before = time.perf_counter(), cpu_seconds(load=load.pid)
            trivial = await load.ceiling_workflows(settings, trivial, seconds)
            wall, used = time.perf_counter() - wall, cpu_seconds(load=load.pid).since(before)
            trivial.cpu_per_workflow = used.per(trivial.workflows)
            ceiling[concurrency] = trivial
            console.print(
                f"  c={concurrency:<3} update-with-start p50 {percentile(trivial.update_ms, 50):7.1f} ms  "
                f"p99 {percentile(trivial.update_ms, 99):7.1f} ms  {trivial.workflows_per_second:7.1f} workflows/s  "
                f"cores busy {busy(used, wall)}"
            )
    return ceiling
