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
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from wallet.settings import Settings

if TYPE_CHECKING:
    from temporalio.client import Client
from wallet.telemetry import process as telemetry
from workers.ops_cli import ops_app

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console()
log = logging.getLogger(__name__)


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


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM from now on (a signal during start-up is not lost)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until_interrupted() -> None:
    await _stop_on_signals().wait()


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

    from api.monitoring import create_monitoring_app
    from wallet.temporal import connect

    from .worker import build_worker, worker_readiness_checks

    async def run() -> int:
        stop = _stop_on_signals()
        settings = Settings()
        telemetry.start("mpp-worker", settings)
        client = await connect(settings)
        payments_worker = build_worker(client, settings)
        task = asyncio.create_task(payments_worker.run())
        monitor, stop_monitor = None, asyncio.Event()
        if settings.worker_metrics_port is not None:
            checks = worker_readiness_checks(client, settings, task)
            monitoring = create_monitoring_app(checks)
            listener = Listener(monitoring, settings.metrics_host, settings.worker_metrics_port, access_log=False)
            monitor = asyncio.create_task(_serve_together([listener], until=stop_monitor))
        log.info(
            "worker on %s/%s queue %s%s",
            settings.temporal_address,
            settings.temporal_namespace,
            settings.temporal_task_queue,
            f", metrics on {settings.metrics_host}:{settings.worker_metrics_port}" if monitor else "",
        )
        interrupted = asyncio.create_task(stop.wait())
        lost = asyncio.create_task(_until_connection_lost(client, settings.worker_lost_connection_exit))
        await asyncio.wait([task, interrupted, lost], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if task.done():  # the worker stopped by itself: a bug, or a fatal error from the server
            error = task.exception()
            log.error("worker stopped: %s", error if error else "without an error")
            code = 1
        else:
            if lost.done():
                log.error(
                    "Temporal unreachable for %s: stopping, so that the supervisor restarts the worker",
                    settings.worker_lost_connection_exit,
                )
                code = 1
            await payments_worker.shutdown()
            with contextlib.suppress(Exception):  # a worker that loses its server may end with an error
                await task
        interrupted.cancel()
        lost.cancel()
        stop_monitor.set()
        if monitor is not None:
            await monitor
        return code

    _exit(run)


async def _until_connection_lost(client: Client, grace: timedelta) -> None:
    """Return once Temporal has failed every health check for ``grace``. The SDK's pollers retry a
    lost connection for ever; a process that cannot regain it should say so by exiting non-zero."""
    failing_since: float | None = None
    interval = min(5.0, max(grace.total_seconds() / 4, 0.2))
    while True:
        try:
            healthy = await asyncio.wait_for(client.service_client.check_health(), interval)
        except Exception:  # unreachable, refused, timed out: all "not healthy"
            healthy = False
        now = time.monotonic()
        if healthy:
            failing_since = None
        elif failing_since is None:
            failing_since = now
        elif now - failing_since >= grace.total_seconds():
            return
        await asyncio.sleep(interval)


def _supervise(count: int) -> int:
    """Run ``count`` worker processes (``mpp worker`` each) until SIGINT or SIGTERM, passed on to each:
    they finish their tasks in flight, and this returns 0. One that ends by itself (a connection it
    could not regain) stops the others, and its exit code is returned, so that whatever runs this
    restarts the set."""
    command = [sys.executable, "-m", "workers.cli", "worker"]
    base_port = Settings().worker_metrics_port
    children = [subprocess.Popen(command, env=_child_environment(base_port, index)) for index in range(count)]
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


def _child_environment(base_port: int | None, index: int) -> dict[str, str]:
    """The i-th worker's environment: its monitoring listener on the base port plus i."""
    environment = dict(os.environ)
    if base_port is not None:
        environment["MPP_WORKER_METRICS_PORT"] = str(base_port + index)
    return environment


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
        listener.app,
        host=listener.host,
        port=listener.port,
        server_header=False,
        access_log=listener.access_log,
        log_config=None,  # uvicorn's records go to the root logger's handler: JSON, like every other line
    )


async def _serve_together(listeners: Sequence[Listener], *, until: asyncio.Event | None = None) -> int:
    """Serve every listener in this process until SIGINT or SIGTERM (or, if given, until ``until`` is
    set: its owner handles the signals): each then finishes its requests in flight, and this returns 0.
    If one of them cannot start (a port in use, a lifespan that fails) or stops, the others stop too
    and uvicorn's exit code is returned."""
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
    signals = (signal.SIGINT, signal.SIGTERM) if until is None else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop_all)
    stopper = asyncio.create_task(until.wait()) if until is not None else None
    if stopper is not None:
        stopper.add_done_callback(lambda _: stop_all())
    try:
        outcomes = await asyncio.gather(*(run(server) for server in servers), return_exceptions=True)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if stopper is not None:
            stopper.cancel()
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
    from api.main import create_app, create_ops_app, readiness_checks
    from api.monitoring import create_monitoring_app
    from api.operators import OpsConfigError

    async def run() -> int:
        settings = Settings()
        telemetry.start("mpp-api", settings)
        public = create_app(settings)
        listeners = [Listener(public, settings.api_host, settings.api_port)]
        if settings.metrics_port is not None:
            monitoring = create_monitoring_app(readiness_checks(public))
            listeners.append(Listener(monitoring, settings.metrics_host, settings.metrics_port, access_log=False))
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

    async def run() -> int:
        settings = Settings()
        client = await connect(settings)
        try:
            run_id = await start_again(client, workflow_id, settings.temporal_task_queue, settings.delivery_schedule())
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


app.add_typer(ops_app, name="ops", help="The operator's view of deliveries, over the operator listener")


if __name__ == "__main__":
    app()
