"""The soak's run: start the stack and the fault proxy, drive the load while killing, settle, gather the evidence."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from sqlalchemy import Engine
from temporalio.client import Client

from alipayplus import Signer
from devstack.processes import Stack, free_ports
from devstack.stack import Ports, dev_settings
from sandbox.alipayplus.driver import AlipayPlusDriver
from sandbox.alipayplus.peer import SandboxAlipayPlus
from wallet.db import create_engine_for
from wallet.keys import ensure_dev_keys
from wallet.ledger import Ledger
from wallet.settings import Settings
from wallet.temporal import connect
from wallet.users import UserStore

from ._soak_checks import Check
from ._soak_evidence import (
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
from ._soak_proxy import FaultProxy

DELIVERY_RETRY_DELAYS = '["PT1S","PT2S","PT4S","PT8S"]'
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=50, keepalive_expiry=3.0)


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
