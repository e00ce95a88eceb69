"""The engine's ceiling, measured in the same run and on the same dev server as the bench beside it,
and the resource figures every bench prints.

Two trivial workloads (``bench._trivial``) run on a worker of their own in the process under test,
configured as the payments worker is; the load comes from the bench's load process
(``bench._load.measure_ceiling``): closed-loop 1-activity workflows (workflows per second) and
update-with-start calls answered at once (p50/p99). A bench divides its own figures by these, so its
ratios say how close the product comes to what Temporal itself allows on this machine.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from rich.console import Console
from temporalio.client import Client
from temporalio.worker import Worker

from devstack.stack import DevStack
from wallet.settings import Settings
from workers.worker import workflow_runner

from ._load import CEILING_QUEUE, Ceiling, LoadProcess, percentile
from ._trivial import AnswerWorkflow, OneActivityWorkflow, echo


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
            wall, before = time.perf_counter(), cpu_seconds()
            trivial = await load.ceiling(settings, concurrency, seconds)
            wall, (own, server) = (
                time.perf_counter() - wall,
                (now - then for now, then in zip(cpu_seconds(), before, strict=True)),
            )
            ceiling[concurrency] = trivial
            console.print(
                f"  c={concurrency:<3} update-with-start p50 {percentile(trivial.update_ms, 50):7.1f} ms  "
                f"p99 {percentile(trivial.update_ms, 99):7.1f} ms  {trivial.workflows_per_second:7.1f} workflows/s  "
                f"CPU: this process {own / wall:.2f} cores, dev server {server / wall:.2f} cores"
            )
    return ceiling


def _children(named: str) -> list[int]:
    """This process's children whose command name is ``named`` (the dev server: ``temporal``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            name, rest = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
            if name == named and int(rest[1]) == os.getpid():
                pids.append(int(stat.parent.name))
    return pids


def cpu_seconds(also: Iterable[int] = ()) -> tuple[float, float]:
    """CPU seconds used so far by this process (all threads) and the processes ``also`` names (more of
    the system under test: extra workers), and by the Temporal dev server this process started."""
    return sum(os.times()[:2]) + _cpu_of(also), _cpu_of(_children("temporal"))


def _cpu_of(pids: Iterable[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    seconds = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # from field 3 (state) on
            seconds += (int(fields[11]) + int(fields[12])) / tick
    return seconds


def peak_rss_mib() -> tuple[float, float]:
    """Peak resident memory (VmHWM) of this process and of the Temporal dev server, MiB."""

    def hwm(pid: int | str) -> float:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    return hwm("self"), max((hwm(pid) for pid in _children("temporal")), default=float("nan"))
