"""``mpp``: run the wallet backend.

mpp demo     the embedded stack, every Easy Pay scenario, a summary; exits non-zero on a wrong state
mpp dev      the embedded stack, kept running until Ctrl-C
mpp worker   the payments worker, against the configured Temporal cluster and database
mpp api      the HTTP API, against the configured Temporal cluster and database
mpp migrate  bring the database schema up to date (optionally with the demo users)
mpp sandbox  the sandbox Alipay+ alone, to try a deployment without the real network
mpp sandbox pay  open an Easy Pay order on the running `mpp dev` stack and print its paymentUrl
mpp redeliver  send a notifyPayment or authNotify again that Alipay+ refused (F) or that gave up
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from wallet.settings import VAR_DIR, Settings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console()


def _exit(run: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Run, then leave with its exit code.

    temporalio's runtime can abort at interpreter teardown in short-lived processes
    (sdk-python#300); every resource is shut down inside ``run``, so the process ends
    with ``os._exit`` and the exit code it earned.
    """
    try:
        code = asyncio.run(run())
    except KeyboardInterrupt:
        code = 130
    time.sleep(0.1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(app: Any, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight and return, so the process
    ends with exit code 0 and whatever runs after ``serve`` (a worker's shutdown) runs too."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # uvicorn would re-raise the signal after shutdown, killing the process with it

    server = Server(uvicorn.Config(app, host=host, port=port))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve()


VarDir = Annotated[Path, typer.Option(help="Where keys and databases live")]


@app.command()
def demo(var_dir: VarDir = VAR_DIR) -> None:
    """Run every Easy Pay scenario through the real HTTP API and print a summary."""
    from .demo import run_demo
    from .demo_logging import demo_logging

    async def run() -> int:
        with demo_logging(console):  # the retries the scenarios provoke read as progress, not warnings
            return await run_demo(var_dir, console)

    _exit(run)


@app.command()
def dev(var_dir: VarDir = VAR_DIR) -> None:
    """Start the embedded stack and keep it running until Ctrl-C."""
    from .dev_stack import dev_stack

    async def run() -> int:
        async with dev_stack(var_dir) as stack:
            console.print(f"API         {stack.api_url}  (OpenAPI at {stack.api_url}/docs)")
            console.print(f"Sandbox     {stack.sandbox_url}  (Alipay+, SMS gateway)")
            console.print(f"Temporal    {stack.settings.temporal_address}  Web UI {stack.web_ui_url}")
            console.print("Ctrl-C stops everything.")
            await _until_interrupted()
        return 0

    _exit(run)


@app.command()
def worker() -> None:
    """Run the payments worker against the configured Temporal cluster."""
    from wallet.temporal import connect

    from .worker import build_worker

    async def run() -> int:
        settings = Settings()
        client = await connect(settings)
        payments_worker = build_worker(client, settings)
        task = asyncio.create_task(payments_worker.run())
        console.print(
            f"worker on {settings.temporal_address}/{settings.temporal_namespace} queue {settings.temporal_task_queue}"
        )
        with contextlib.suppress(asyncio.CancelledError):
            await _until_interrupted()
        await payments_worker.shutdown()
        await task
        return 0

    _exit(run)


@dataclass(frozen=True)
class Listener:
    """One HTTP server of a process: what it serves, where, and whether it logs each request."""

    app: Any
    host: str
    port: int
    access_log: bool = True


def _server_config(listener: Listener) -> Any:
    """uvicorn's config for ``listener``: no ``server`` header (nothing says what runs behind it)."""
    import uvicorn

    return uvicorn.Config(
        listener.app, host=listener.host, port=listener.port, server_header=False, access_log=listener.access_log
    )


async def _serve_together(listeners: Sequence[Listener]) -> int:
    """Serve every listener in this process until SIGINT or SIGTERM, as ``_serve`` does one: each
    then finishes its requests in flight, and this returns 0. If one of them cannot start (a port
    in use, a lifespan that fails) or stops, the others stop too and uvicorn's exit code is returned."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # uvicorn would re-raise the signal after shutdown, killing the process with it

    servers = [Server(_server_config(listener)) for listener in listeners]
    failures: list[int] = []

    def stop_all() -> None:
        for server in servers:
            server.should_exit = True

    async def run(server: Server) -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn's way of saying it could not start
            failures.append(exc.code if isinstance(exc.code, int) and exc.code else 1)
        finally:
            stop_all()  # one listener down takes the others down: never half a service

    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop_all)
    try:
        outcomes = await asyncio.gather(*(run(server) for server in servers), return_exceptions=True)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return failures[0] if failures else 0


@app.command()
def api(
    ops_port: Annotated[
        int | None,
        typer.Option(help="Also serve the operator listener (the Web UI's codec) on this port [MPP_OPS_PORT; off]"),
    ] = None,
    ops_host: Annotated[
        str | None, typer.Option(help="Address of the operator listener [MPP_OPS_HOST; 127.0.0.1]")
    ] = None,
) -> None:
    """Serve the HTTP API against the configured Temporal cluster; with --ops-port, the operator
    listener too, in the same process (it needs MPP_OPS_TOKEN_FILE, or nothing starts)."""
    from api.main import create_app, create_ops_app
    from api.routers.ops import OpsConfigError

    async def run() -> int:
        settings = Settings()
        listeners = [Listener(create_app(settings), settings.api_host, settings.api_port)]
        port = ops_port if ops_port is not None else settings.ops_port
        if port is not None:
            try:
                ops_app = create_ops_app(settings)
            except OpsConfigError as exc:
                console.print(f"operator listener refused to start: {exc}")
                return 1
            host = ops_host or settings.ops_host
            # no access log when the token is part of the path (MPP_OPS_TOKEN_IN_PATH): it would be logged
            listeners.append(Listener(ops_app, host, port, access_log=not settings.ops_token_in_path))
        return await _serve_together(listeners)

    _exit(run)


@app.command()
def redeliver(
    workflow_id: Annotated[str, typer.Argument(help="notify/{paymentRequestId} or auth/{referenceAgreementId}")],
) -> None:
    """Deliver again a notifyPayment or authNotify that ended REJECTED or GAVE_UP: a new run of the
    same workflow, with the same message and a fresh schedule."""
    from activities.deliveries import NotRedeliverable
    from activities.deliveries import redeliver as start_again
    from wallet.temporal import connect

    from .worker import delivery_schedule

    async def run() -> int:
        settings = Settings()
        client = await connect(settings)
        try:
            run_id = await start_again(client, workflow_id, settings.temporal_task_queue, delivery_schedule(settings))
        except NotRedeliverable as exc:
            console.print(f"not redelivered: {exc}")
            return 1
        console.print(f"{workflow_id} delivering again (run {run_id})")
        return 0

    _exit(run)


@app.command()
def unlock(
    customer_id: Annotated[str, typer.Argument(help="The wallet user's customerId")],
    by: Annotated[str, typer.Option(help="Who lifts it, for the audit record")] = "operator",
) -> None:
    """Lift an account's lockout or backoff after too many wrong PINs or OTPs, before it ends by itself."""
    from wallet.db import create_engine_for

    settings = Settings()
    engine = create_engine_for(settings.database_url)
    try:
        lifted = settings.credentials(engine).unlock(customer_id, by)
    finally:
        engine.dispose()
    console.print(f"{customer_id}: {'unlocked' if lifted else 'had no wrong PINs or OTPs to forget'}")


@app.command()
def migrate(demo_users: Annotated[bool, typer.Option(help="Also create and fund the demo users")] = False) -> None:
    """Upgrade the database at DATABASE_URL to the newest schema."""
    from wallet.db import create_engine_for
    from wallet.db import migrate as upgrade
    from wallet.ledger import Ledger
    from wallet.users import UserStore

    settings = Settings()
    upgrade(settings.database_url)
    if demo_users:
        engine = create_engine_for(settings.database_url)
        UserStore(engine).seed_demo_users(Ledger(engine), settings.secret_key, settings.pin_scrypt_cost)
        engine.dispose()
    console.print(f"schema up to date{' with demo users' if demo_users else ''}")


# `mpp sandbox` serves the sandbox Alipay+ as before; `mpp sandbox pay` is a sub-command beside it.
sandbox_app = typer.Typer(invoke_without_command=True, add_completion=False)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.callback()
def sandbox(
    context: typer.Context,
    port: Annotated[int, typer.Option(help="Port of the sandbox Alipay+")] = 8001,
    alipayplus_private_key_file: Annotated[Path, typer.Option(help="Its signing key")] = VAR_DIR
    / "keys"
    / "alipayplus_private.pem",
) -> None:
    """Serve the sandbox Alipay+ (notify receiver, SMS gateway, MPM with its merchants, the server
    SDK's code identification, the Ant NFC server, Mastercard's authorizations and their conversion
    into NFC pay, cancel, refund and adjustRefund) and run its inquiry worker.

    `mpp sandbox pay` instead opens an Easy Pay order on the running `mpp dev` stack."""
    if context.invoked_subcommand is not None:
        return
    from temporalio.worker import Worker

    from sandbox.alipayplus.app import create_app
    from sandbox.alipayplus.card_events import CardEventConverter
    from sandbox.alipayplus.driver import AlipayPlusDriver, TokenActivationNotifier
    from sandbox.alipayplus.inquiry import (
        SANDBOX_TASK_QUEUE,
        InquiryScheduleWorkflow,
        InquiryStarter,
        SandboxActivities,
    )
    from sandbox.alipayplus.mpm import SandboxMpm
    from sandbox.alipayplus.peer import SandboxAlipayPlus
    from sandbox.code_service import CodeService
    from sandbox.nfc import SandboxAntNfc, SandboxMastercard
    from wallet.temporal import connect

    async def run() -> int:
        settings = Settings()
        peer = SandboxAlipayPlus.from_settings(settings, alipayplus_private_key_file)
        client = await connect(settings)
        async with (
            AlipayPlusDriver.for_peer(peer, settings.public_base_url) as driver,
            Worker(
                client,
                task_queue=SANDBOX_TASK_QUEUE,
                workflows=[InquiryScheduleWorkflow],
                activities=SandboxActivities(driver).all(),
            ),
        ):
            mpm = SandboxMpm.from_settings(settings, driver, peer=peer)
            inquiries = InquiryStarter(client)
            mpm.on_pay_in_process = inquiries
            mastercard = SandboxMastercard()
            ant_nfc = SandboxAntNfc(mastercard, on_token_active=TokenActivationNotifier(driver))
            card_events = CardEventConverter.behind(
                mastercard, ant_nfc, driver, psp_id=settings.psp_id, on_pay_in_process=inquiries
            )
            sandbox_http = create_app(
                peer,
                mpm=mpm,
                code_service=CodeService(),
                ant_nfc=ant_nfc,
                mastercard=mastercard,
                card_events=card_events,
            )
            await _serve(sandbox_http, "127.0.0.1", port)
        return 0

    _exit(run)


@sandbox_app.command("pay")
def sandbox_pay(
    user: Annotated[str, typer.Option(help="The payer's login id (a demo user: see the README)")] = "852-11112222",
    amount: Annotated[int, typer.Option(min=1, help="In minor units of --currency (5000 IDR is IDR 50.00)")] = 5000,
    currency: Annotated[str, typer.Option(help="ISO 4217 code")] = "IDR",
    one_click: Annotated[bool, typer.Option(help="Ask for one-click consent too (authNotify follows)")] = False,
    var_dir: VarDir = VAR_DIR,
) -> None:
    """Send Easy Pay pay #1 and pay #2 to the running `mpp dev` stack, as the sandbox Alipay+ does,
    and print the paymentUrl to open in a browser (with the PIN, or where the SMS code arrives)."""
    from pydantic import ValidationError

    from alipayplus import Amount

    from .dev_stack import dev_settings
    from .sandbox_pay import pay_by_hand

    async def run() -> int:
        try:
            price = Amount(currency=currency.upper(), value=amount)
        except ValidationError as exc:  # an unknown currency
            console.print(f"[red]no order:[/] {exc.errors()[0]['msg']}")
            return 2
        keys = var_dir / "keys" / "alipayplus_private.pem"
        return await pay_by_hand(dev_settings(var_dir), keys, console, login_id=user, amount=price, one_click=one_click)

    _exit(run)


if __name__ == "__main__":
    app()
