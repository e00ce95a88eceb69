"""The production topology on one machine: every service its own OS process, on free loopback
ports, under one directory (``make soak`` and ``tests/e2e/test_topology.py``).

Temporal's dev server (``temporal server start-dev``, headless, its own SQLite file), then
``mpp migrate --demo-users``, ``mpp sandbox``, one or more ``mpp worker`` and ``mpp api``, each
configured only through environment variables, as a deployment would be. Each process writes to
its own log file (restarts append to it). Processes are stopped by their own pid; under Linux
each one also gets SIGKILL from the kernel if this process dies first (``setpriv --pdeathsig``),
so a crashed run leaves no orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from wallet import search_attributes
from wallet.settings import Settings
from wallet.temporal import temporal_cli

from .stack import SQLITE_PRAGMAS

START_TIMEOUT = 90.0  # seconds for one process to become ready (a loaded 2-core machine is slow)
STOP_TIMEOUT = 30.0  # seconds for a SIGTERM to end a process before it gets SIGKILL
WORKER_READY = b"worker on "  # ``mpp worker`` prints this once its worker is polling

# Settings passed to every MPP process, as the environment variables Settings reads.
_ENV_FIELDS = (
    "temporal_address",
    "database_url",
    "alipayplus_base_url",
    "sms_gateway_url",
    "code_service_url",
    "mastercard_base_url",
    "api_host",
    "api_port",
    "public_base_url",
    "mpp_private_key_file",
    "mpp_public_key_file",
    "alipayplus_public_key_file",
    "secret_key_file",
    "payload_key_file",
    # as the embedded stack (``dev_settings``): the blocklist, so MPM's sandbox codes reach Alipay+;
    # fast NFC polls; room for every test's new phone
    "code_solution",
    "code_blocklist",
    "nfc_poll_interval",
    "nfc_max_devices",
)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (bound together, so never the same one twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``Settings()`` in a child process equal ``settings`` where it matters
    (each value as pydantic writes it: durations in ISO 8601, lists in JSON)."""
    values = settings.model_dump(mode="json", include=set(_ENV_FIELDS))
    return {
        ("DATABASE_URL" if name == "database_url" else f"MPP_{name.upper()}"): (
            value if isinstance(value, str) else json.dumps(value)
        )
        for name, value in values.items()
    }


def search_attribute_flags() -> list[str]:
    """``--search-attribute Name=Type`` for every attribute the project declares (added ones too)."""
    flags: list[str] = []
    for key in search_attributes.ALL:
        kind = "".join(part.capitalize() for part in key.indexed_value_type.name.split("_"))  # KEYWORD_LIST
        flags += ["--search-attribute", f"{key.name}={kind}"]
    return flags


def mpp_command(*args: str) -> list[str]:
    """``python -m devstack.cli …`` (the installed ``mpp``: production commands and ``sandbox``) with this
    interpreter (so ``PYTHONPATH`` picks the code under test)."""
    return [sys.executable, "-m", "devstack.cli", *args]


def _orphan_guard() -> list[str]:
    """A prefix that makes the kernel SIGKILL the child when this process dies (Linux, util-linux)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv and sys.platform.startswith("linux") else []


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def http_ok(url: str) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


class StartupError(RuntimeError):
    pass


@dataclass
class Exit:
    service: str
    pid: int
    returncode: int
    expected: bool  # we killed or stopped it
    at: float  # time.monotonic()


@dataclass
class Service:
    """One OS process of the stack, restartable; its output appended to ``log``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    ready: Callable[[Service], Awaitable[bool]]
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    exits: list[Exit] = field(default_factory=list)
    _expected: set[int] = field(default_factory=set)
    _watchers: list[asyncio.Task[None]] = field(default_factory=list)
    log_mark: int = 0  # the log's size when the current process started (readiness looks after it)
    ready_now: bool = False  # the current process finished starting

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until it is ready; ``StartupError`` (with the log's path) otherwise."""
        self.starts += 1
        self.ready_now = False
        with self.log.open("ab") as log:
            log.write(f"\n--- start #{self.starts} at {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            self.log_mark = log.tell()
            self.process = await asyncio.create_subprocess_exec(
                *_orphan_guard(),
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )
        process = self.process
        self._watchers.append(asyncio.create_task(self._watch(process)))
        deadline = time.monotonic() + timeout
        while True:
            if process.returncode is not None:
                raise StartupError(f"{self.name} exited with {process.returncode} while starting; see {self.log}")
            if await self.ready(self):
                self.ready_now = True
                return
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name} not ready after {timeout:.0f} s; see {self.log}")
            await asyncio.sleep(0.1)

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        returncode = await process.wait()
        self.exits.append(Exit(self.name, process.pid, returncode, process.pid in self._expected, time.monotonic()))

    async def kill(self) -> None:
        """SIGKILL, by pid, and wait for it to be gone."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        self._expected.add(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        await process.wait()

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; the exit code, or None if it had to be killed (or never ran)."""
        process = self.process
        if process is None:
            return None
        if process.returncode is not None:
            return process.returncode
        self._expected.add(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await process.wait()
            return None

    async def settle_watchers(self) -> None:
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def unexpected_exits(self) -> list[Exit]:
        return [exit_ for exit_ in self.exits if not exit_.expected]

    def log_since_start(self) -> bytes:
        try:
            with self.log.open("rb") as log:
                log.seek(self.log_mark)
                return log.read()
        except OSError:
            return b""


def _ready_on_port(port: int) -> Callable[[Service], Awaitable[bool]]:
    async def ready(_: Service) -> bool:
        return await port_open(port)

    return ready


def _ready_on_http(url: str) -> Callable[[Service], Awaitable[bool]]:
    check = http_ok(url)

    async def ready(_: Service) -> bool:
        return await check()

    return ready


async def _worker_ready(service: Service) -> bool:
    return WORKER_READY in service.log_since_start()


@dataclass
class Stack:
    """The processes, in start order; ``stop_all`` stops them in reverse."""

    directory: Path
    settings: Settings
    sandbox_url: str
    temporal: Service
    sandbox: Service
    workers: list[Service]
    api: Service
    migrate_log: Path
    stop_codes: dict[str, int | None] = field(default_factory=dict)
    stopped_while_starting: set[str] = field(default_factory=set)  # an aborted run stopped it mid-start

    @property
    def worker(self) -> Service:
        """The first worker (the only one, unless built with ``workers=N``)."""
        return self.workers[0]

    @property
    def services(self) -> list[Service]:
        return [self.temporal, self.sandbox, *self.workers, self.api]

    @classmethod
    def build(
        cls,
        directory: Path,
        settings: Settings,
        sandbox_port: int,
        worker_env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> Stack:
        logs = directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        base = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **settings_env(settings)}
        temporal_port = int(settings.temporal_address.rsplit(":", 1)[1])
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        temporal = Service(
            "temporal",
            [
                str(temporal_cli()),
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                str(temporal_port),
                "--db-filename",
                str(directory / "temporal.sqlite"),
                "--log-level",
                "warn",
                *SQLITE_PRAGMAS,
                *search_attribute_flags(),
            ],
            base,
            directory,
            logs / "temporal.log",
            _ready_on_port(temporal_port),
        )
        sandbox = Service(
            "sandbox",
            mpp_command(
                "sandbox",
                "--port",
                str(sandbox_port),
                "--alipayplus-private-key-file",
                str(settings.mpp_private_key_file.parent / "alipayplus_private.pem"),
            ),
            base,
            directory,
            logs / "sandbox.log",
            _ready_on_http(f"{sandbox_url}/sandbox/notifications?paymentRequestId=ready"),
        )
        worker_services = [
            Service(
                name,
                mpp_command("worker"),
                {**base, **(worker_env or {})},
                directory,
                logs / f"{name}.log",
                _worker_ready,
            )
            for name in ("worker", *(f"worker-{index}" for index in range(2, workers + 1)))
        ]
        api = Service(
            "api",
            mpp_command("api"),
            base,
            directory,
            logs / "api.log",
            _ready_on_http(f"{settings.public_base_url}/healthz"),
        )
        return cls(directory, settings, sandbox_url, temporal, sandbox, worker_services, api, logs / "migrate.log")

    async def migrate(self) -> None:
        """``mpp migrate --demo-users`` once, before the services that need the schema."""
        with self.migrate_log.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *mpp_command("migrate", "--demo-users"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.temporal.env,
                cwd=self.directory,
            )
        try:
            returncode = await asyncio.wait_for(process.wait(), START_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await process.wait()
            raise StartupError(f"mpp migrate did not finish; see {self.migrate_log}") from None
        if returncode != 0:
            raise StartupError(f"mpp migrate exited with {returncode}; see {self.migrate_log}")

    async def stop_all(self) -> None:
        """SIGTERM each running process by its pid, the API first and Temporal last; remember the codes."""
        for service in reversed(self.services):
            if service.process is not None:
                if service.running and not service.ready_now:
                    self.stopped_while_starting.add(service.name)
                self.stop_codes[service.name] = await service.stop()
        for service in self.services:
            await service.settle_watchers()

    def logs(self) -> list[Path]:
        return [self.migrate_log, *(service.log for service in self.services)]
