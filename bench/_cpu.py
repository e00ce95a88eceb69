"""What a bench's processes use: CPU seconds (the system under test, the Temporal dev server, the load
generator), the cores they share and peak memory, read from ``/proc``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class CpuUse(NamedTuple):
    """CPU seconds of the processes a bench runs: the system under test, the Temporal dev server and
    the load generator (0 where the load runs inside the process under test)."""

    under_test: float
    server: float
    load: float = 0.0

    def since(self, earlier: CpuUse) -> CpuUse:
        return CpuUse(*(now - then for now, then in zip(self, earlier, strict=True)))

    def per(self, units: int) -> CpuUse | None:
        """Seconds per unit (flow, workflow, tap); None without a unit to share them."""
        return CpuUse(*(part / units for part in self)) if units else None

    @property
    def total(self) -> float:
        return sum(self)


def cpu_seconds(also: Iterable[int] = (), load: int | None = None) -> CpuUse:
    """CPU seconds used so far by this process (all threads) and the processes ``also`` names (more of
    the system under test: extra workers), by the Temporal dev server this process started, and by the
    load generator's process ``load``."""
    return CpuUse(sum(os.times()[:2]) + _cpu_of(also), _cpu_of(_children("temporal")), _cpu_of([load] if load else []))


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores_allow(cpu_per_unit: CpuUse) -> float:
    """Units per second this machine's cores could give at that CPU per unit, all processes together:
    a measured rate near it means the machine, not waiting, was the limit."""
    return cores() / cpu_per_unit.total if cpu_per_unit.total else float("nan")


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
