"""The production topology: every service its own OS process on free ports, the records on PostgreSQL.

Temporal's dev server, ``mpp migrate --demo-users``, ``mpp sandbox``, two ``mpp worker`` and
``mpp api`` (``devstack.processes``, configured only by environment variables, as a deployment
is), then an Easy Pay payment (pay #1, pay #2, the PIN on our page, notifyPayment), an MPM
payment (the wallet app scans a merchant's order code and confirms) and an NFC tap (a phone
activated through our API taps a POS terminal; the sandbox Mastercard turns it into our NFC pay),
each through HTTP alone. Then every process gets SIGTERM, by its pid, and must exit 0.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from alipayplus import Amount, PayRequest, ResultStatus
from api.pages import form_fields
from devstack.demo.mpm import ANDROID, SMALL_ORDER
from devstack.demo.nfc import PIN, PIN_USER, phone_activated_at
from devstack.demo.nfc_pay import DEMO_TERMINAL, TAP
from devstack.processes import Stack, free_ports
from devstack.stack import Ports, dev_settings
from hce_device.wallet_app import WalletApp
from sandbox.alipayplus.driver import AlipayPlusDriver, easy_pay_evaluation, easy_pay_order
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.pos import HttpCardNetwork, PosTerminal
from tests.postgres import new_database
from wallet.db import create_engine_for
from wallet.keys import ensure_dev_keys
from wallet.records import PaymentRecord
from wallet.settings import Settings
from wallet.states import PaymentStatus
from wallet.temporal import connect

pytestmark = pytest.mark.timeout(420)

PRICE = Amount(currency="IDR", value=5000)
WORKERS = 2


@dataclass(frozen=True)
class Topology:
    stack: Stack
    settings: Settings
    keys: Path


@pytest.fixture
async def topology(postgres: str, tmp_path: Path) -> AsyncIterator[Topology]:
    """The stack, started in a deployment's order (the API last: it needs the code service up)."""
    keys = tmp_path / "keys"
    ensure_dev_keys(keys)
    temporal_port, api_port, sandbox_port = free_ports(3)
    database_url = new_database(postgres, f"topology_{uuid.uuid4().hex[:8]}")
    ports = Ports(temporal=temporal_port, web_ui=0, api=api_port, sandbox=sandbox_port)
    settings = dev_settings(tmp_path, ports, database_url)
    stack = Stack.build(tmp_path, settings, sandbox_port, workers=WORKERS)
    try:
        await stack.temporal.start()
        await stack.migrate()
        await stack.sandbox.start()
        await asyncio.gather(*(worker.start() for worker in stack.workers))
        await stack.api.start()
        yield Topology(stack, settings, keys)
    finally:
        await stack.stop_all()


async def _final_result(driver: AlipayPlusDriver, payment_request_id: str) -> str:
    """The payment's result as Alipay+ learns it by inquiryPayment, once final."""
    for _ in range(300):
        answer = await driver.inquire(payment_request_id)
        result = answer.payment_result
        if result is not None and result.is_final:
            return f"{result.result_status}/{result.result_code}"
        await asyncio.sleep(0.1)
    return "U/PAYMENT_IN_PROCESS"


async def _notified(sandbox_url: str, payment_request_id: str) -> list[dict[str, object]]:
    """The notifyPayment bodies the sandbox process received for the payment (waits for the first)."""
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=10.0) as http:
        for _ in range(300):
            bodies: list[dict[str, object]] = (
                (await http.get("/sandbox/notifications", params={"paymentRequestId": payment_request_id}))
                .raise_for_status()
                .json()
            )
            if bodies:
                return bodies
            await asyncio.sleep(0.1)
    return []


async def _easy_pay(driver: AlipayPlusDriver, settings: Settings, sandbox_url: str) -> PayRequest:
    evaluation = await driver.pay(easy_pay_evaluation(f"e{uuid.uuid4().hex}", PIN_USER, PRICE, settings.psp_id))
    assert evaluation.result.result_status is ResultStatus.SUCCESS, evaluation.result
    request = easy_pay_order(f"p{uuid.uuid4().hex}", PIN_USER, PRICE, settings.psp_id)
    answer = await driver.pay(request)
    assert answer.result.result_status is ResultStatus.UNKNOWN and answer.payment_url, answer.result
    async with httpx.AsyncClient(timeout=30.0) as user:
        page = (await user.get(answer.payment_url)).raise_for_status()
        posted = await user.post(answer.payment_url, data={"code": PIN, **form_fields(page.text)})
    assert posted.status_code == 303, posted.text[:300]
    assert await _final_result(driver, request.payment_request_id) == "S/SUCCESS"
    notices = await _notified(sandbox_url, request.payment_request_id)
    assert notices and all(notice["paymentResult"]["resultStatus"] == "S" for notice in notices), notices  # type: ignore[index]
    return request


async def _mpm(driver: AlipayPlusDriver, settings: Settings, sandbox_url: str) -> str:
    order = {"amount": SMALL_ORDER, "description": "Kopi and kaya toast"}
    async with httpx.AsyncClient(timeout=30.0) as merchant:
        issued = await merchant.post(f"{sandbox_url}/sandbox/merchant/orderCodes", json=order)
        code = str(issued.raise_for_status().json()["codeValue"])
    app = WalletApp(settings.public_base_url, sandbox_url, settings.psp_id, ANDROID)
    try:
        await app.login(PIN_USER, PIN)
        scanned = await app.scan(code)
        assert scanned.page is not None and scanned.decoded is not None, scanned.message
        await scanned.page.confirm()
        payment_request_id = scanned.decoded.payment_request_id
    finally:
        await app.aclose()
    assert payment_request_id
    assert await _final_result(driver, payment_request_id) == "S/SUCCESS"
    return payment_request_id


async def _nfc_tap(settings: Settings, sandbox_url: str) -> None:
    network = HttpCardNetwork(sandbox_url)
    try:
        async with (
            httpx.AsyncClient(timeout=30.0) as user,
            phone_activated_at(settings.public_base_url, user, PIN_USER) as phone,
        ):
            outcome = await PosTerminal(DEMO_TERMINAL, network).tap(phone.sdk, TAP)
    finally:
        await network.aclose()
    assert outcome.approved, outcome


async def _poller_identities(client: Client, settings: Settings) -> set[str]:
    request = DescribeTaskQueueRequest(
        namespace=settings.temporal_namespace,
        task_queue=TaskQueue(name=settings.temporal_task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    response = await client.workflow_service.describe_task_queue(request)
    return {poller.identity for poller in response.pollers}


def _successes(database_url: str) -> dict[str, int]:
    """Payments that ended SUCCESS, by product, as the records on PostgreSQL hold them."""
    engine = create_engine_for(database_url)
    try:
        with Session(engine) as session:
            records = session.exec(select(PaymentRecord).where(col(PaymentRecord.status) == PaymentStatus.SUCCESS))
            counts: dict[str, int] = {}
            for record in records:
                counts[str(record.product)] = counts.get(str(record.product), 0) + 1
            return counts
    finally:
        engine.dispose()


async def test_easy_pay_mpm_and_nfc_through_separate_processes(topology: Topology) -> None:
    stack, settings = topology.stack, topology.settings
    assert settings.database_url.startswith("postgresql")
    peer = SandboxAlipayPlus.from_settings(settings, topology.keys / "alipayplus_private.pem")
    async with AlipayPlusDriver.for_peer(peer, settings.public_base_url) as driver:
        await _easy_pay(driver, settings, stack.sandbox_url)
        await _mpm(driver, settings, stack.sandbox_url)
        await _nfc_tap(settings, stack.sandbox_url)

    assert _successes(settings.database_url) == {"EASY_PAY": 1, "MPM": 1, "NFC": 1}
    client = await connect(settings)
    identities = await _poller_identities(client, settings)
    worker_pids = {str(worker.pid) for worker in stack.workers}
    assert worker_pids <= {identity.split("@", 1)[0] for identity in identities}, identities

    await stack.stop_all()
    assert stack.stop_codes == {service.name: 0 for service in stack.services}, [str(log) for log in stack.logs()]
    for service in stack.services:
        assert not service.unexpected_exits(), service.log
