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

# The installed ``mpp`` (pyproject's [project.scripts]): the embedded stack's commands (demo, dev,
# sandbox, sandbox pay), defined here, around the production commands of ``workers.cli``, which
# stays free of ``devstack``, ``sandbox`` and ``hce_device``. The order is --help's.

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from wallet.settings import VAR_DIR, LogFormat, Settings
from wallet.telemetry.logs import configure_logging
from wallet.telemetry.tracing import configure_tracing
from workers.cli import _exit, _until_interrupted, console
from workers.cli import app as production_app

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


VarDir = Annotated[Path, typer.Option(help="Where keys and databases live")]
PortOffset = Annotated[
    int,
    typer.Option(
        min=0,
        max=50_000,
        help="Added to every port (Temporal 7233, Web UI 8233, API 8000, sandbox 8001, operator 8002,"
        " metrics 8003), to run beside another stack",
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="The records' database (e.g. postgresql+psycopg://…); default: a SQLite file in --var-dir"),
]


@app.command()
def demo(var_dir: VarDir = VAR_DIR, port_offset: PortOffset = 0, database_url: DatabaseUrl = None) -> None:
    """Run every Easy Pay scenario through the real HTTP API and print a summary."""
    from .demo import run_demo
    from .demo.console import demo_logging
    from .stack import DEFAULT_PORTS

    async def run() -> int:
        configure_tracing("mpp-demo")  # OTEL_TRACES_EXPORTER=otlp|console; none by default
        with demo_logging(console):  # the retries the scenarios provoke read as progress, not warnings
            return await run_demo(var_dir, console, DEFAULT_PORTS.shifted(port_offset), database_url)

    _exit(run)


@app.command()
def dev(var_dir: VarDir = VAR_DIR, port_offset: PortOffset = 0, database_url: DatabaseUrl = None) -> None:
    """Start the embedded stack and keep it running until Ctrl-C."""
    from .stack import DEFAULT_PORTS, dev_stack

    async def run() -> int:
        configure_logging(LogFormat.TEXT)
        configure_tracing("mpp-dev")  # OTEL_TRACES_EXPORTER=otlp|console; none by default
        async with dev_stack(var_dir, DEFAULT_PORTS.shifted(port_offset), database_url=database_url) as stack:
            console.print(f"API         {stack.api_url}  (OpenAPI at {stack.api_url}/docs)")
            console.print(f"Sandbox     {stack.sandbox_url}  (Alipay+, SMS gateway)")
            console.print(f"Temporal    {stack.settings.temporal_address}  Web UI {stack.web_ui_url}")
            console.print(f"Metrics     {stack.metrics_url}/metrics  (health /healthz, readiness /readyz)")
            console.print(f"Operator    {stack.ops_url}  (`mpp ops deliveries`; the token in var/keys/ops.token)")
            console.print("Ctrl-C stops everything.")
            await _until_interrupted()
        return 0

    _exit(run)


# The production commands (worker, api, redeliver, unlock, migrate), as `workers.cli` registers them.
app.registered_commands.extend(production_app.registered_commands)
app.registered_groups.extend(production_app.registered_groups)  # `mpp ops …`


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
    port_offset: PortOffset = 0,
) -> None:
    """Send Easy Pay pay #1 and pay #2 to the running `mpp dev` stack, as the sandbox Alipay+ does,
    and print the paymentUrl to open in a browser (with the PIN, or where the SMS code arrives)."""
    from pydantic import ValidationError

    from alipayplus import Amount

    from .sandbox_pay import pay_by_hand
    from .stack import DEFAULT_PORTS, dev_settings

    async def run() -> int:
        try:
            price = Amount(currency=currency.upper(), value=amount)
        except ValidationError as exc:  # an unknown currency
            console.print(f"[red]no order:[/] {exc.errors()[0]['msg']}")
            return 2
        keys = var_dir / "keys" / "alipayplus_private.pem"
        settings = dev_settings(var_dir, DEFAULT_PORTS.shifted(port_offset))
        return await pay_by_hand(settings, keys, console, login_id=user, amount=price, one_click=one_click)

    _exit(run)


if __name__ == "__main__":
    app()
