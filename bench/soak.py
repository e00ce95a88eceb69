"""``make soak``: no message lost and no money moved twice while processes die and peers misbehave.

The stack runs as separate OS processes on free ports under a fresh temporary directory (see
``_soak_stack``): Temporal's dev server, ``mpp migrate --demo-users``, ``mpp sandbox``,
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
import dataclasses
import json
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from temporalio.client import Client

import workers
from alipayplus import Signer
from devstack.stack import Ports, dev_settings
from sandbox.alipayplus.driver import AlipayPlusDriver
from sandbox.alipayplus.peer import SandboxAlipayPlus
from wallet.db import create_engine_for
from wallet.keys import ensure_dev_keys
from wallet.ledger import Ledger
from wallet.settings import Settings
from wallet.temporal import connect
from wallet.users import UserStore
from workers.cli import _exit

from ._soak_checks import (
    Check,
    Evidence,
    delivered,
    inquire_all,
    not_ok_workflows,
    read_records,
    read_user_postings,
    sandbox_received,
    settle,
)
from ._soak_load import PIN_USER, Flow, Kill, Load, killer, plan_flows
from ._soak_proxy import FAULTS, PHASES, FaultProxy
from ._soak_stack import Service, Stack, free_ports

DELIVERY_RETRY_DELAYS = '["PT1S","PT2S","PT4S","PT8S"]'
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=50, keepalive_expiry=3.0)


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


# --- the run ------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, seed: int, console: Console) -> None:
        self.args, self.seed, self.console = args, seed, console
        self.begun = time.monotonic()
        self.directory = Path(tempfile.mkdtemp(prefix="mpp-soak-"))
        self.stack: Stack | None = None
        self.proxy: FaultProxy | None = None
        self.flows: list[Flow] = []
        self.kills: list[Kill] = []
        self.load: Load | None = None
        self.checks: list[Check] = []
        self.evidence: Evidence | None = None
        self.still_open: list[str] = []
        self.fatal: str | None = None
        self.phase_times: dict[str, float] = {}

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.begun:7.1f}s[/] {message}")

    async def run(self) -> None:
        args = self.args
        keys = self.directory / "keys"
        ensure_dev_keys(keys)
        temporal_port, api_port, sandbox_port, proxy_port = free_ports(4)
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        settings = dev_settings(self.directory, Ports(temporal_port, 0, api_port, sandbox_port))
        settings = settings.model_copy(
            update={
                "alipayplus_base_url": proxy_url,
                "database_url": os.environ.get("DATABASE_URL") or settings.database_url,
            }
        )
        worker_env = {"MPP_DELIVERY_RETRY_DELAYS": os.environ.get("MPP_DELIVERY_RETRY_DELAYS", DELIVERY_RETRY_DELAYS)}
        self.stack = stack = Stack.build(self.directory, settings, sandbox_port, worker_env)
        signer = Signer.from_pem(settings.client_id, (keys / "alipayplus_private.pem").read_bytes(), "1")
        self.proxy = proxy = FaultProxy(stack.sandbox_url, signer, args.fault_rate, random.Random(self.seed * 3 + 1))
        self.say(f"stack under {self.directory} (database {_redacted(settings.database_url)})")

        await stack.temporal.start()
        await stack.migrate()
        await proxy.start(proxy_port)
        await stack.sandbox.start()
        await stack.worker.start()
        await stack.api.start()
        self.say(
            f"up: Temporal {settings.temporal_address}, sandbox {stack.sandbox_url}, proxy {proxy_url}, "
            f"API {settings.public_base_url}; worker pid {stack.worker.pid}, API pid {stack.api.pid}"
        )
        self.phase_times["start"] = time.monotonic() - self.begun

        client = await connect(settings)
        engine = create_engine_for(settings.database_url)
        try:
            await self._load_and_check(settings, stack, proxy, client, engine)
        finally:
            engine.dispose()

    async def _load_and_check(
        self, settings: Settings, stack: Stack, proxy: FaultProxy, client: Client, engine: Engine
    ) -> None:
        args = self.args
        user = UserStore(engine).find(None, PIN_USER, "MOBILE")
        if user is None:
            raise RuntimeError(f"demo user {PIN_USER} missing after mpp migrate --demo-users")
        ledger = Ledger(engine)
        balance_before = ledger.balance(user.account_id)

        peer = SandboxAlipayPlus.from_settings(settings, self.directory / "keys" / "alipayplus_private.pem")
        plan_rng = random.Random(self.seed)
        run_id = f"{self.seed % 1_000_000:06d}"
        self.flows = plan_flows(
            args.payments,
            plan_rng,
            run_id,
            settings.psp_id,
            f"{stack.sandbox_url}/sandbox/result",
            timedelta(seconds=args.expiry),
            args.think,
        )
        async with (
            AlipayPlusDriver.for_peer(
                peer, settings.public_base_url, transport=httpx.AsyncHTTPTransport(limits=LIMITS)
            ) as driver,
            httpx.AsyncClient(timeout=30.0, limits=LIMITS) as user_agent,
        ):
            self.load = load = Load(driver, user_agent, flow_timeout=args.expiry + 120.0)
            stop_killing = asyncio.Event()
            kill_task = (
                None
                if args.no_kill
                else asyncio.create_task(
                    killer(
                        [stack.worker, stack.api],
                        random.Random(self.seed * 3 + 2),
                        tuple(args.kill_interval),
                        stop_killing,
                        self.kills,
                    )
                )
            )
            progress = asyncio.create_task(self._progress(load, proxy))
            load_task = asyncio.create_task(load.run(self.flows, args.concurrency))
            try:
                waiting: set[asyncio.Future[None]] = {load_task}
                if kill_task is not None:
                    waiting.add(kill_task)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if kill_task is not None and kill_task in done:
                    kill_task.result()  # a restart failed: raises StartupError with the log's path
                    raise RuntimeError("the killer stopped on its own")
                await load_task
            finally:
                stop_killing.set()
                if kill_task is not None:
                    if load_task.done():
                        await kill_task  # let the last restart finish
                    else:
                        kill_task.cancel()
                        await asyncio.gather(kill_task, return_exceptions=True)
                load_task.cancel()
                progress.cancel()
                await asyncio.gather(load_task, progress, return_exceptions=True)
            self.phase_times["load"] = time.monotonic() - self.begun
            for service in (stack.worker, stack.api):
                if not service.running:  # died on its own: the checks report it, the settle needs it
                    self.say(f"[red]{service.name} is not running; restarting it to settle[/]")
                    await service.start()
            self.say(
                f"load done: {len(self.flows)} flows, {len(self.kills)} kills; settling (at most {args.settle:.0f} s)"
            )

            last_report = [0.0]

            def settling(pending: list[str]) -> None:
                if time.monotonic() - last_report[0] > 15:
                    last_report[0] = time.monotonic()
                    self.say(f"settling: {len(pending)} open, e.g. {pending[0]}")

            self.still_open = await settle(client, engine, self.flows, args.settle, settling)
            self.phase_times["settle"] = time.monotonic() - self.begun
            self.say(f"settled ({len(self.still_open)} still open); checking")

            ids = [flow.payment_request_id for flow in self.flows]
            records, refunds = read_records(engine, ids)
            notifies = {}
            auths = {}
            for flow in self.flows:
                notifies[flow.payment_request_id] = await delivered(client, f"notify/{flow.payment_request_id}")
                if flow.agreement:
                    auths[flow.agreement] = await delivered(client, f"auth/{flow.agreement}")
            notifications, auth_notifications = await sandbox_received(stack.sandbox_url)
            inquiries = await inquire_all(driver, self.flows)
            ledger_check = ledger.check()
            self.evidence = Evidence(
                flows=self.flows,
                records=records,
                refunds=refunds,
                postings=read_user_postings(engine, user.account_id, ids),
                notifies=notifies,
                auths=auths,
                notifications=notifications,
                auth_notifications=auth_notifications,
                proxy_calls=list(proxy.calls),
                kills=list(self.kills),
                balance_before=balance_before,
                balance_after=ledger.balance(user.account_id),
                customer_id=user.customer_id,
                ledger_ok=ledger_check.ok,
                ledger_detail=str(ledger_check),
                not_ok=await not_ok_workflows(client),
                inquiries=inquiries,
            )

    async def _progress(self, load: Load, proxy: FaultProxy) -> None:
        while True:
            await asyncio.sleep(10)
            kills = Counter(kill.service for kill in self.kills)
            self.say(
                f"flows {load.stats.flows_done}/{len(self.flows)}, kills worker {kills['worker']} API {kills['api']}, "
                f"notify/auth calls {len(proxy.calls)} ({sum(1 for c in proxy.calls if c.fault)} faulted), "
                f"caller retries {load.stats.transport_retries}"
            )

    def write_records(self) -> list[Path]:
        """What the run saw, for a post-mortem: every violation, the proxy's calls, the flows, the kills."""
        written = []
        with contextlib.suppress(OSError):
            violations = self.directory / "violations.txt"
            violations.write_text(
                "".join(f"{check.name}: {violation}\n" for check in self.checks for violation in check.violations)
                + "".join(f"{check.name}: allowed: {finding}\n" for check in self.checks for finding in check.allowed)
            )
            written.append(violations)
            started = self.begun
            rows: dict[str, list[dict[str, Any]]] = {
                "proxy-calls.jsonl": [
                    {
                        **dataclasses.asdict(call),
                        "started": round(call.started - started, 3),
                        "forwarded_at": round(call.forwarded_at - started, 3) if call.forwarded_at else None,
                        "finished": round(call.finished - started, 3) if call.finished else None,
                    }
                    for call in (self.proxy.calls if self.proxy else [])
                ],
                "flows.jsonl": [
                    {
                        **{name: value for name, value in vars(flow).items() if name not in ("request", "plan")},
                        "payment_request_id": flow.payment_request_id,
                        "plan": dataclasses.asdict(flow.plan),
                    }
                    for flow in self.flows
                ],
                "kills.jsonl": [{**dataclasses.asdict(kill), "at": round(kill.at - started, 3)} for kill in self.kills],
            }
            for name, lines in rows.items():
                path = self.directory / name
                path.write_text("".join(json.dumps(line, default=str) + "\n" for line in lines))
                written.append(path)
        return written

    async def shutdown(self) -> None:
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                await self.proxy.close()
        if self.stack is not None:
            await self.stack.stop_all()


def _redacted(url: str) -> str:
    with contextlib.suppress(Exception):
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url


# --- the report ---------------------------------------------------------------------------------


def process_check(stack: Stack | None, kills: list[Kill]) -> Check:
    check = Check("processes: no unexpected exit, clean exit (0) on SIGTERM")
    if stack is None:
        return check
    for service in stack.services:
        check.checked += 1
        for exit_ in service.unexpected_exits():
            check.fail(f"{service.name} pid {exit_.pid} exited by itself with {exit_.returncode}; see {service.log}")
        code = stack.stop_codes.get(service.name, "not started")
        if service.name in stack.stopped_while_starting:  # an aborted run: no handlers yet, nothing to judge
            continue
        if service.process is not None and code != 0:
            how = "had to be SIGKILLed" if code is None else f"exited with {code}"
            check.fail(f"{service.name} {how} on SIGTERM; see {service.log}")
    return check


def checks_table(checks: list[Check]) -> Table:
    table = Table(title="Soak checks", show_lines=False)
    table.add_column("check")
    table.add_column("checked", justify="right")
    table.add_column("violations", justify="right")
    table.add_column("first violations (allowed findings dimmed)", overflow="fold")
    for check in checks:
        shown = check.violations[:4] + [f"… and {len(check.violations) - 4} more"] * (len(check.violations) > 4)
        shown += [f"[dim]allowed: {finding}[/]" for finding in check.allowed[:2]]
        shown += [f"[dim]… and {len(check.allowed) - 2} more allowed[/]"] * (len(check.allowed) > 2)
        count = "[green]0[/]" if check.ok else f"[red]{len(check.violations)}[/]"
        table.add_row(
            check.name,
            str(check.checked),
            count + (f" [dim](+{len(check.allowed)} allowed)[/]" if check.allowed else ""),
            "\n".join(shown),
        )
    return table


def counts_table(soak: Soak) -> Table:
    evidence, proxy, load = soak.evidence, soak.proxy, soak.load
    table = Table(title="Soak counts")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("detail", overflow="fold")
    flows = soak.flows
    if evidence is not None:
        statuses = Counter(
            (str(record.status) if (record := evidence.records.get(f.payment_request_id)) else "no record")
            for f in flows
        )
        debited = sum(1 for record in evidence.records.values() if record.payment_time is not None)
        reversed_ = sum(
            1 for record in evidence.records.values() if record.payment_time is not None and record.cancelled_at
        )
        one_click = sum(1 for flow in flows if flow.agreement)
        table.add_row(
            "payments",
            str(len(flows)),
            ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
            + f"; debited {debited}, of which reversed by cancel {reversed_}; one-click {one_click}",
        )
    refunds = Counter(flow.refund_result for flow in flows if flow.refund_result)
    table.add_row("refunds (30%)", str(sum(refunds.values())), _counted(refunds))
    before = Counter(flow.cancel_before_result for flow in flows if flow.cancel_before_result)
    after = Counter(flow.cancel_after_result for flow in flows if flow.cancel_after_result)
    table.add_row(
        "cancels",
        str(sum(before.values()) + sum(after.values())),
        f"before the PIN: {_counted(before)}; after success: {_counted(after)}",
    )
    kills = Counter(kill.service for kill in soak.kills)
    for service in ("worker", "api"):
        restarts = [kill.restart_seconds for kill in soak.kills if kill.service == service]
        detail = (
            f"restart to ready avg {sum(restarts) / len(restarts):.1f} s, max {max(restarts):.1f} s" if restarts else ""
        )
        table.add_row(f"{service} kills (SIGKILL)", str(kills[service]), detail)
    if proxy is not None:
        faults = proxy.faults()
        for fault in FAULTS:
            table.add_row(
                f"fault {fault}",
                str(sum(faults.get((fault, phase), 0) for phase in PHASES)),
                ", ".join(f"{phase} forwarding {faults.get((fault, phase), 0)}" for phase in PHASES),
            )
        for api in ("notifyPayment", "authNotify"):
            calls = [call for call in proxy.calls if call.api == api]
            table.add_row(
                f"{api} calls via proxy",
                str(len(calls)),
                f"forwarded {sum(1 for c in calls if c.forwarded)}, faulted {sum(1 for c in calls if c.fault)}",
            )
    if evidence is not None:
        table.add_row(
            "notifyPayment received by sandbox",
            str(sum(len(bodies) for bodies in evidence.notifications.values())),
            f"for {len(evidence.notifications)} payments",
        )
        table.add_row(
            "authNotify received by sandbox",
            str(sum(len(bodies) for bodies in evidence.auth_notifications.values())),
            f"for {len(evidence.auth_notifications)} agreements",
        )
        lost, doubled, stuck = outcome_counts(soak)
        table.add_row("lost", str(lost), "final payment / debited one-click whose delivery never got acknowledged")
        table.add_row("doubled", str(doubled), "debited twice, or notified/authNotified again after an intact S")
        resent = sum(len(check.allowed) for check in soak.checks if "again after" in check.name)
        table.add_row(
            "re-sent after a worker kill",
            str(resent),
            "the worker died right after Alipay+'s S, before recording it: at-least-once, allowed"
            + (" (counted as doubled: --strict-once)" if soak.args.strict_once else ""),
        )
        table.add_row("stuck", str(stuck), "payment not final, or its delivery still running after the settle")
    if load is not None:
        table.add_row(
            "caller retries",
            str(load.stats.transport_retries + load.stats.pin_retries),
            f"signed calls without a signed answer {load.stats.transport_retries}, PIN POSTs {load.stats.pin_retries}, "
            f"pay U without page {load.stats.pay_unknown}, refund/cancel U {sum(load.stats.retried_u.values())}",
        )
    return table


def outcome_counts(soak: Soak) -> tuple[int, int, int]:
    evidence = soak.evidence
    assert evidence is not None
    lost = stuck = 0
    for delivery in [*evidence.notifies.values(), *evidence.auths.values()]:
        if delivery.open:
            stuck += 1
        elif delivery.status is not None and not delivery.acknowledged:
            lost += 1
    for flow in soak.flows:
        record = evidence.records.get(flow.payment_request_id)
        if record is None or record.status == "PROCESSING":
            stuck += 1
            continue
        if evidence.notifies[flow.payment_request_id].status is None:
            lost += 1
        if flow.agreement and record.payment_time is not None and evidence.auths[flow.agreement].status is None:
            lost += 1
    doubled_checks = [check for check in soak.checks if "again after" in check.name]
    debits_twice = sum(
        1 for postings in evidence.postings.values() if sum(p.kind == "PAYMENT_DEBIT" for p in postings) > 1
    )
    return lost, debits_twice + sum(len(check.violations) for check in doubled_checks), stuck


def _counted(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(counter.items())) or "none"


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
