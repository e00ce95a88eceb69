"""``mpp``'s production commands: run the wallet backend against a configured Temporal cluster and database.

mpp worker     the payments worker, against the configured Temporal cluster and database
mpp api        the HTTP API, against the configured Temporal cluster and database
mpp redeliver  send a notifyPayment or authNotify again that Alipay+ refused (F) or that gave up
mpp unlock     lift an account's lockout after too many wrong PINs or OTPs
mpp migrate    bring the database schema up to date (optionally with the demo users)

The ``mpp`` installed as a script is ``devstack.cli.app``: these commands plus the embedded stack's
(``demo``, ``dev``, ``sandbox``). Nothing here imports ``devstack``, ``sandbox`` or ``hce_device``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console

from wallet.settings import Settings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console()


def _exit(run: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Run, then leave with its exit code.

    temporalio's runtime can abort at interpreter teardown in short-lived processes
    (sdk-python#300); every resource is shut down inside ``run``, so the process ends
    with ``os._exit`` and the exit code it earned.
    """
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            code = runner.run(run())
    except KeyboardInterrupt:
        code = 130
    time.sleep(0.1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (every platform but Windows): less CPU per request and per
    Temporal call than asyncio's own loop; else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def worker(
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on this machine: each has its own event loop and GIL, so on a machine "
            "with several cores run about one per core (on 2 cores the Temporal server needs the other)",
        ),
    ] = 1,
) -> None:
    """Run the payments worker against the configured Temporal cluster."""
    if processes > 1:
        raise typer.Exit(_supervise(processes))

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


def _supervise(count: int) -> int:
    """Run ``count`` worker processes (``mpp worker`` each) until SIGINT or SIGTERM, passed on to each:
    they finish their tasks in flight, and this returns 0. One that ends by itself (a connection it
    could not regain) stops the others, and its exit code is returned, so that whatever runs this
    restarts the set."""
    command = [sys.executable, "-m", "workers.cli", "worker"]
    children = [subprocess.Popen(command) for _ in range(count)]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    console.print(f"{count} worker processes: {', '.join(str(child.pid) for child in children)}")
    failed = 0
    while any(child.poll() is None for child in children):
        ended = [child for child in children if child.returncode is not None]
        if ended and not stopping:
            failed = next((child.returncode for child in ended if child.returncode), 1)
            stop()
        time.sleep(0.2)
    return failed or next((child.returncode for child in children if child.returncode), 0)


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
    from api.operators import OpsConfigError

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
    from wallet.delivery_starts import NotRedeliverable
    from wallet.delivery_starts import redeliver as start_again
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


if __name__ == "__main__":
    app()
