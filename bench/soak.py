"""``make soak``: no message lost and no money moved twice while processes die and peers misbehave.

The stack runs as separate OS processes on free ports under a fresh temporary directory (see
``devstack.processes``): Temporal's dev server, ``mpp migrate --demo-users``, ``mpp sandbox``,
``mpp worker`` and ``mpp api``. The MPP reaches the sandbox Alipay+ through a fault-injecting
proxy in this process (``_soak_proxy``) that breaks about 30% of notifyPayment and authNotify
calls, half before and half after the sandbox got them.

Load (``_soak_load``): Easy Pay payments (pay #2, then the user's PIN POST), one in five a
one-click consent (authNotify), with partial refunds and cancels of some paid payments and
cancels of some unpaid ones, at modest concurrency; meanwhile the worker or the API is SIGKILLed
every few seconds and restarted at once. Then the deliveries settle (bounded), and the checks
(``_soak_checks``) read the records, the ledger, Temporal, the sandbox and the proxy's log.

Prints the command line, the seed, a table of checks and one of counts, the wall time; exits 0
only with zero violations. A notification sent again after Alipay+'s intact S is a violation,
unless the worker was SIGKILLed right after that S (before it could record the answer): that
re-send is at-least-once delivery doing its job, reported as "allowed" (``--strict-once`` counts
it too). On failure the temporary directory is kept: the processes' logs, ``violations.txt``
and the proxy's, the flows' and the kills' records as JSON lines. Options: ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from rich.console import Console

import workers
from devstack.processes import Service
from workers.cli import _exit

from ._soak_checks import Check
from ._soak_report import checks_table, counts_table, outcome_counts, process_check
from ._soak_run import DELIVERY_RETRY_DELAYS, LIMITS, Soak

# What this module defined before the run and the report moved out, still importable from here.
__all__ = [
    "DELIVERY_RETRY_DELAYS",
    "LIMITS",
    "Soak",
    "checks_table",
    "counts_table",
    "main",
    "outcome_counts",
    "parse_args",
    "process_check",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=200, help="Easy Pay payments (default 200)")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent payment flows (default 10)")
    parser.add_argument(
        "--kill-interval",
        type=float,
        nargs=2,
        default=(3.0, 8.0),
        metavar=("MIN", "MAX"),
        help="seconds between kills, drawn uniformly (default 3 8)",
    )
    parser.add_argument("--no-kill", action="store_true", help="no process kills (faults only)")
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of notify/authNotify calls faulted (0.3)")
    parser.add_argument("--think", type=float, default=2.0, help="the user's time before the PIN, 0..THINK s (2)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random generator (default: random)")
    parser.add_argument("--settle", type=float, default=300.0, help="seconds to wait for deliveries to end (300)")
    parser.add_argument("--expiry", type=float, default=180.0, help="each payment's expiry in seconds (180)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="hard limit on the whole run, seconds (1800)")
    parser.add_argument(
        "--strict-once",
        action="store_true",
        help="count as violations also the re-sends a worker kill right after Alipay+'s S explains",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory even on success")
    args = parser.parse_args(argv)
    if args.payments < 1 or args.concurrency < 1 or not 0 <= args.fault_rate <= 1:
        parser.error("--payments and --concurrency must be positive, --fault-rate within 0..1")
    if not 0 < args.kill_interval[0] <= args.kill_interval[1]:
        parser.error("--kill-interval needs 0 < MIN <= MAX")
    return args


# --- entry point --------------------------------------------------------------------------------


async def main(argv: list[str]) -> int:
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    command = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "bench.soak", *argv])
    console.print(f"Command: {command}")
    console.print(f"Seed: {seed} (reproduce the plan with --seed {seed})")
    console.print(f"Code under test: {Path(workers.__file__).resolve().parent.parent}")
    soak = Soak(args, seed, console)
    _watchdog(soak, args.timeout + 120)
    try:
        await asyncio.wait_for(soak.run(), args.timeout)
    except TimeoutError:
        soak.fatal = f"the run passed its hard limit of {args.timeout:.0f} s"
    except Exception as exc:
        soak.fatal = f"{type(exc).__name__}: {exc}"
        console.print_exception(max_frames=8)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(soak.shutdown(), 120)

    if soak.evidence is not None:
        from ._soak_checks import check_all

        soak.checks = check_all(soak.evidence, strict_once=args.strict_once)
    soak.checks.append(process_check(soak.stack, soak.kills))
    if soak.fatal:
        soak.checks.append(Check("the run completed", 1, [soak.fatal]))
    if soak.still_open:
        soak.checks.append(Check(f"settled within {args.settle:.0f} s", 1, soak.still_open))

    console.print(checks_table(soak.checks))
    console.print(counts_table(soak))
    violations = sum(len(check.violations) for check in soak.checks)
    wall = time.monotonic() - soak.begun
    phases = ", ".join(f"{name} done at {at:.0f} s" for name, at in soak.phase_times.items())
    console.print(f"Command: {command}")
    console.print(f"Seed {seed}; wall time {wall:.0f} s ({phases})")
    if violations:
        console.print(f"[red bold]{violations} violation(s)[/]; logs and databases kept in {soak.directory}:")
        for log in [*(soak.stack.logs() if soak.stack else []), *soak.write_records()]:
            console.print(f"  {log}")
        return 1
    console.print("[green bold]no violations[/]")
    if args.keep:
        console.print(f"kept {soak.directory}")
    else:
        shutil.rmtree(soak.directory, ignore_errors=True)
    return 0


def _watchdog(soak: Soak, seconds: float) -> None:
    """Past the hard limit even if the event loop is stuck: kill every child by pid, then leave."""

    def expire() -> None:
        services: list[Service] = soak.stack.services if soak.stack else []
        for service in services:
            if service.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(service.pid, signal.SIGKILL)
        sys.stderr.write(f"soak: hard limit of {seconds:.0f} s passed; children killed, logs in {soak.directory}\n")
        sys.stderr.flush()
        os._exit(124)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    _exit(lambda: main(sys.argv[1:]))
