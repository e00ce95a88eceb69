"""Session fixtures: test keys, a migrated database, the time-skipping Temporal server,
the sandbox Alipay+ in process, and a worker with the real activities."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import Amount, SignedClient
from sandbox.alipayplus.app import create_app as create_sandbox_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.alipayplus.transport import TimeoutASGITransport
from sandbox.nfc import SandboxAntNfc, SandboxMastercard
from wallet import search_attributes
from wallet.credentials import GuessPolicy
from wallet.db import create_engine_for, migrate
from wallet.ledger import Ledger
from wallet.records import WalletUser
from wallet.settings import Settings
from wallet.states import UserStatus, VerificationMethod
from wallet.temporal import data_converter, temporal_test_server
from wallet.users import UserStore
from workers.worker import activities_for, build_worker

from .postgres import postgres_server

FIXTURES = Path(__file__).parent / "fixtures"
LENIENT_GUESSING = GuessPolicy(
    free_failures=10_000,
    backoff=timedelta(seconds=1),
    backoff_max=timedelta(seconds=1),
    lockout_after=100_000,
    lockout_for=timedelta(seconds=1),
    forget_after=timedelta(hours=1),
)
HISTORIES = Path(__file__).parent / "histories"


async def save_history(handle: WorkflowHandle, name: str) -> None:
    """Keep a recorded history for the replay test, when asked: ``RECORD_HISTORIES=1 make test``."""
    if os.environ.get("RECORD_HISTORIES"):
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def update_unless_closed(handle: WorkflowHandle, update: Any, *args: Any) -> Any | None:
    """``update``'s result, or None once the workflow has closed and takes no more updates (a page
    or a retried pay then answers from the records: the API's business, not the workflow's)."""
    try:
        return await handle.execute_update(update, args=args)
    except (RPCError, WorkflowUpdateFailedError):
        return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="where the session's records live (API, workflow, fault and end-to-end tests); the persistence "
        "tests in tests/wallet run on both either way",
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of the session's own (tests/postgres.py), started on first use: its URL."""
    with postgres_server() as url:
        yield url


def on_postgresql(config: pytest.Config) -> bool:
    return bool(config.getoption("--database") == "postgresql")


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    if on_postgresql(request.config):
        database_url = request.getfixturevalue("postgres")
    else:
        database_url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'mpp.sqlite'}"
    return Settings(
        database_url=database_url,
        temporal_task_queue=f"test-{uuid.uuid4().hex[:8]}",
        mpp_private_key_file=FIXTURES / "test_mpp_private.pem",
        mpp_public_key_file=FIXTURES / "test_mpp_public.pem",
        alipayplus_public_key_file=FIXTURES / "test_alipayplus_public.pem",
        secret_key_file=FIXTURES / "test_secret.key",
        payload_key_file=FIXTURES / "test_payload.key",
        key_file_mode_check=False,  # git keeps the fixture keys 0644; production keys must be 0600
        public_base_url="http://testserver",
        # The session's demo users and test client address are shared by every test: one test's wrong
        # PINs must not make the next one wait. tests/security/test_guessing.py checks the real limits.
        account_guessing=LENIENT_GUESSING,
        address_guessing=LENIENT_GUESSING,
        pin_scrypt_cost=10,  # seeding and checks in milliseconds; the cost is in the stored verifier
    )


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Ledger]:
    """The migrated database with the demo users; yields its ledger."""
    migrate(settings.database_url)
    engine = create_engine_for(settings.database_url)
    ledger = Ledger(engine)
    UserStore(engine).seed_demo_users(ledger, settings.secret_key, settings.pin_scrypt_cost)
    yield ledger
    engine.dispose()


@pytest.fixture(scope="session")
def engine(settings: Settings, database: Ledger) -> Iterator[Engine]:
    """The migrated database's records (``database`` seeds the demo users first)."""
    records = create_engine_for(settings.database_url)
    yield records
    records.dispose()


def new_user(
    engine: Engine,
    ledger: Ledger,
    balance: int,
    *,
    currency: str = "IDR",
    status: UserStatus = UserStatus.ACTIVE,
    single_payment_limit: int = 5_000_000,
    daily_limit: int = 20_000_000,
) -> str:
    """A user of our own with ``balance`` minor units, so a test owns its balance and limits."""
    customer_id = f"2161{uuid.uuid4().int % 10**12:012d}"
    account_id = ledger.open_user(customer_id, currency)
    with Session(engine) as session:
        session.add(
            WalletUser(
                customer_id=customer_id,
                login_id=f"852-{customer_id[-8:]}",
                login_id_type="MOBILE",
                status=status,
                phone=f"+852{customer_id[-8:]}",
                verification_method=VerificationMethod.PIN,
                currency=currency,
                single_payment_limit=single_payment_limit,
                daily_limit=daily_limit,
                account_id=account_id,
            )
        )
        session.commit()
    if balance:
        ledger.fund_user(f"seed/{customer_id}", account_id, Amount(currency=currency, value=balance))
    return customer_id


@pytest.fixture(scope="session")
def alipayplus(settings: Settings) -> SandboxAlipayPlus:
    return SandboxAlipayPlus(
        client_id=settings.client_id,
        alipayplus_private_key_pem=(FIXTURES / "test_alipayplus_private.pem").read_bytes(),
        mpp_public_key_pem=(FIXTURES / "test_mpp_public.pem").read_bytes(),
        silence_seconds=1.5,
    )


class SandboxSms:
    """The OTP activity's SMS gateway, delivering straight into the sandbox's inbox."""

    def __init__(self, peer: SandboxAlipayPlus) -> None:
        self._peer = peer

    def send(self, to: str, text: str, reference: str) -> None:
        self._peer.record_sms(to, text, reference)


@asynccontextmanager
async def time_skipping_server(settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with our converter and search attributes."""
    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(settings), test_server_existing_path=str(temporal_test_server())
    )
    await environment.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=environment.client.namespace,
            search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in search_attributes.ALL},
        )
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture(scope="session")
async def env(settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server(settings) as environment:
        yield environment


@pytest.fixture(scope="session")
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@asynccontextmanager
async def real_activities(
    client: Client, settings: Settings, alipayplus: SandboxAlipayPlus
) -> AsyncIterator[list[Any]]:
    """The real activities, talking to the in-process sandbox Alipay+ (with the Ant NFC server and
    Mastercard behind it: an activation some API test starts finds its peers, rather than retrying
    against nothing, and a running activity holds the time-skipping server's clock for every test)."""
    ant = SandboxAntNfc(SandboxMastercard(key_size=1024))
    peers = create_sandbox_app(alipayplus, ant_nfc=ant, mastercard=ant.mastercard)
    mpp_to_alipayplus = SignedClient(
        "http://alipayplus.test",
        settings.signer,
        settings.verifier,
        timeout=1.0,  # below the sandbox's scripted silence, far above a loaded machine's answer
        transport=TimeoutASGITransport(app=peers),
    )
    to_mastercard = httpx.AsyncClient(base_url=settings.mastercard_base_url, transport=httpx.ASGITransport(app=peers))
    yield activities_for(
        client, settings, alipayplus=mpp_to_alipayplus, sms=SandboxSms(alipayplus), mastercard=to_mastercard
    )
    await mpp_to_alipayplus.aclose()
    await to_mastercard.aclose()


@pytest.fixture(scope="session")
async def activities(
    client: Client, settings: Settings, database: Ledger, alipayplus: SandboxAlipayPlus
) -> AsyncIterator[list[Any]]:
    async with real_activities(client, settings, alipayplus) as found:
        yield found


@pytest.fixture(scope="session")
async def worker(client: Client, settings: Settings, activities: list[Any]) -> AsyncIterator[Worker]:
    async with build_worker(client, settings, activities) as worker:
        yield worker
