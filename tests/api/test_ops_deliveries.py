"""Issue 17, item 4: the operator's view of deliveries on the operator listener, and ``mpp ops``.

Real deliveries (the real activities against the in-process sandbox Alipay+, recording their
attempts in the session's database) run on a Temporal dev server of this module's own: listing by
``DeliveryStatus`` needs Temporal's visibility, which the time-skipping test server does not have
(``ListWorkflowExecutions`` is unimplemented there). The listener is ``create_ops_app`` with its
lifespan, called in process; ``mpp ops`` is run against it served on a real port, and against a
mock transport for its refusals.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from alipayplus import Amount, NotifyPaymentRequest, Result
from api.main import create_ops_app
from devstack.stack import _serving
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.conftest import real_activities
from wallet import search_attributes
from wallet.deliveries import (
    AuthNotifyInput,
    AuthorizationGrant,
    Delivery,
    DeliveryReport,
    DeliverySchedule,
    NotifyPaymentInput,
)
from wallet.delivery_starts import DeliveryStarts
from wallet.ledger import Ledger
from wallet.records import DeliveryAttempt
from wallet.settings import Settings
from wallet.temporal import data_converter, temporal_cli
from workers.ops_cli import ops_app
from workers.worker import build_worker

pytestmark = pytest.mark.timeout(90)

TOKEN = "ops-deliveries-token-" + "d" * 40
PRICE = Amount(currency="IDR", value=5000)
QUICK = DeliverySchedule(delays=[timedelta(seconds=1)])


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ops-deliveries") / "ops.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def ops_settings(settings: Settings, token_file: Path) -> Settings:
    return settings.model_copy(update={"ops_token_file": token_file})


@pytest.fixture(scope="module")
async def temporal(
    settings: Settings, database: Ledger, alipayplus: SandboxAlipayPlus
) -> AsyncIterator[WorkflowEnvironment]:
    """A dev server (it has visibility) with our search attributes, and the worker with the real activities."""
    environment = await WorkflowEnvironment.start_local(
        data_converter=data_converter(settings),
        search_attributes=search_attributes.ALL,
        dev_server_existing_path=str(temporal_cli()),
        ui=False,
    )
    try:
        async with (
            real_activities(environment.client, settings, alipayplus) as activities,
            build_worker(environment.client, settings, activities),
        ):
            yield environment
    finally:
        await environment.shutdown()


@pytest.fixture(scope="module")
async def ops_listener(ops_settings: Settings, temporal: WorkflowEnvironment) -> AsyncIterator[FastAPI]:
    app = create_ops_app(ops_settings, temporal=temporal.client)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
async def ops(ops_listener: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ops_listener),
        base_url="http://ops.test",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30.0,
    ) as http:
        yield http


def payment_notice(payment_request_id: str, schedule: DeliverySchedule = QUICK) -> NotifyPaymentInput:
    request = NotifyPaymentRequest(
        payment_result=Result.success(),
        payment_request_id=payment_request_id,
        payment_id=uuid.uuid4().hex,
        payment_amount=PRICE,
        pay_to_amount=PRICE,
    )
    return NotifyPaymentInput(request=request, schedule=schedule)


async def deliver(client: Client, settings: Settings, notice: NotifyPaymentInput | AuthNotifyInput) -> str:
    """Start the delivery as a paid order does, and wait for it to end."""
    starts = DeliveryStarts(client, settings.temporal_task_queue, notice.schedule)
    if isinstance(notice, NotifyPaymentInput):
        delivery_id = await starts.start_payment_notification(notice)
    else:
        delivery_id = await starts.start_auth_notification(notice)
    await client.get_workflow_handle(delivery_id, result_type=DeliveryReport).result()
    return delivery_id


async def listed(
    ops: httpx.AsyncClient, params: dict[str, Any], delivery_id: str, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The delivery's row in the list once it shows ``until`` (visibility catches up within moments)."""
    for _ in range(100):
        response = await ops.get("/ops/deliveries", params=params)
        assert response.status_code == 200, response.text
        rows = {row["delivery_id"]: row for row in response.json()["deliveries"]}
        if delivery_id in rows and until(rows[delivery_id]):
            return rows[delivery_id]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{delivery_id} never listed with {params}: {rows}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the credential ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ops/deliveries"),
        ("GET", "/ops/deliveries/notify/anything"),
        ("POST", "/ops/deliveries/notify/anything/redeliver"),
    ],
)
async def test_every_route_needs_the_operator_token(ops_listener: FastAPI, method: str, path: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ops_listener), base_url="http://ops.test") as http:
        without = await http.request(method, path)
        wrong = await http.request(method, path, headers={"Authorization": "Bearer " + "x" * 40})
    for answer in (without, wrong):
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "deliveries" not in answer.text


# --- list, detail, redeliver ------------------------------------------------------------------------


async def test_a_rejected_delivery_is_listed_shown_with_its_attempts_and_redelivered(
    ops: httpx.AsyncClient,
    temporal: WorkflowEnvironment,
    settings: Settings,
    alipayplus: SandboxAlipayPlus,
) -> None:
    payment_request_id = f"ops-{uuid.uuid4().hex}"
    alipayplus.script("notifyPayment", ["U", "F"], subject=payment_request_id)
    delivery_id = await deliver(temporal.client, settings, payment_notice(payment_request_id))
    assert delivery_id == f"notify/{payment_request_id}"

    row = await listed(
        ops, {"state": "REJECTED", "kind": "notifyPayment"}, delivery_id, lambda row: row["attempts"] == 2
    )
    assert row["kind"] == "notifyPayment"
    assert row["state"] == "REJECTED"
    assert row["workflow_status"] == "COMPLETED"
    assert row["last_answer"] == "F"
    acknowledged = (await ops.get("/ops/deliveries", params={"state": "ACKNOWLEDGED", "limit": 500})).json()
    assert delivery_id not in {row["delivery_id"] for row in acknowledged["deliveries"]}

    shown = await ops.get(f"/ops/deliveries/{delivery_id}")
    assert shown.status_code == 200, shown.text
    detail = shown.json()
    assert (detail["delivery_id"], detail["kind"], detail["state"]) == (delivery_id, "notifyPayment", "REJECTED")
    assert detail["progress"]["status"] == "REJECTED"
    assert detail["progress"]["attempts"] == 2
    assert [(a["answer"], a["result_code"]) for a in detail["attempts"]] == [
        ("U", "UNKNOWN_EXCEPTION"),
        ("F", "PROCESS_FAIL"),
    ]
    first, second = detail["attempts"]
    assert first["attempted_at"] < second["attempted_at"]
    assert all(attempt["latency_ms"] >= 0 for attempt in detail["attempts"])
    assert len(alipayplus.notifications(payment_request_id)) == 2

    again = await ops.post(f"/ops/deliveries/{delivery_id}/redeliver")
    assert again.status_code == 200, again.text
    assert again.json()["delivery_id"] == delivery_id
    new_run = again.json()["run_id"]
    assert new_run and new_run != detail["run_id"]
    report = await temporal.client.get_workflow_handle(delivery_id, result_type=DeliveryReport).result()
    assert report.delivery is Delivery.ACKNOWLEDGED

    row = await listed(ops, {"state": "ACKNOWLEDGED"}, delivery_id, lambda row: row["last_answer"] == "S")
    assert row["attempts"] == 3
    assert row["run_id"] == new_run
    detail = (await ops.get(f"/ops/deliveries/{delivery_id}")).json()
    assert [a["answer"] for a in detail["attempts"]] == ["U", "F", "S"]
    assert detail["attempts"][-1]["run_id"] == new_run

    refused = await ops.post(f"/ops/deliveries/{delivery_id}/redeliver")
    assert refused.status_code == 409
    assert "already acknowledged" in refused.json()["detail"]


async def test_a_delivery_still_trying_is_delivering_with_its_unanswered_attempt(
    ops: httpx.AsyncClient,
    temporal: WorkflowEnvironment,
    settings: Settings,
    alipayplus: SandboxAlipayPlus,
) -> None:
    payment_request_id = f"ops-{uuid.uuid4().hex}"
    alipayplus.script("notifyPayment", ["SILENT"], subject=payment_request_id)  # past the client's 1 s
    notice = payment_notice(payment_request_id, DeliverySchedule(delays=[timedelta(minutes=10)]))
    delivery_id = await DeliveryStarts(
        temporal.client, settings.temporal_task_queue, notice.schedule
    ).start_payment_notification(notice)
    try:
        row = await listed(ops, {"state": "DELIVERING"}, delivery_id, lambda row: row["attempts"] == 1)
        assert (row["workflow_status"], row["last_answer"]) == ("RUNNING", "NO_ANSWER")
        detail = (await ops.get(f"/ops/deliveries/{delivery_id}")).json()
        [attempt] = detail["attempts"]
        assert attempt["answer"] == "NO_ANSWER" and attempt["result_code"] is None
        assert attempt["latency_ms"] >= 900  # the client's 1 s timeout, give or take the clock
        assert "no complete answer" in attempt["detail"] or "Timeout" in attempt["detail"]
        assert detail["progress"]["gives_up_at"] is not None

        running = await ops.post(f"/ops/deliveries/{delivery_id}/redeliver")
        assert running.status_code == 409
        assert "RUNNING" in running.json()["detail"]
    finally:
        await temporal.client.get_workflow_handle(delivery_id).terminate("test over")


async def test_auth_notify_attempts_are_recorded_without_its_tokens(
    ops: httpx.AsyncClient,
    temporal: WorkflowEnvironment,
    settings: Settings,
    alipayplus: SandboxAlipayPlus,
    engine: Engine,
) -> None:
    agreement = f"ops-agreement-{uuid.uuid4().hex}"
    grant = AuthorizationGrant(
        reference_agreement_id=agreement,
        auth_client_id="2188120040699147",
        customer_id="2160220037535021",
        acquirer_id="1022188000000000001",
        psp_id="1022160000000000000",
    )
    delivery_id = await deliver(temporal.client, settings, AuthNotifyInput(grant=grant, schedule=QUICK))

    row = await listed(ops, {"kind": "authNotify", "state": "ACKNOWLEDGED"}, delivery_id, lambda r: r["attempts"])
    assert row["kind"] == "authNotify" and row["last_answer"] == "S"
    [sent] = [received.body for received in alipayplus.auth_notifications(agreement)]
    tokens = [sent["accessToken"], sent["refreshToken"]]
    with Session(engine) as session:
        stored = session.exec(select(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id) == delivery_id)).all()
    assert [(attempt.kind, attempt.answer, attempt.result_code) for attempt in stored] == [
        ("authNotify", "S", "SUCCESS")
    ]
    dumped = " ".join(str(value) for attempt in stored for value in attempt.model_dump().values())
    assert not any(token in dumped for token in tokens)
    detail = (await ops.get(f"/ops/deliveries/{delivery_id}")).text
    assert not any(token in detail for token in tokens)


async def test_bad_questions_are_answered_with_their_reason(ops: httpx.AsyncClient) -> None:
    for params in ({"state": "DELIVERED"}, {"kind": "refund"}, {"limit": 0}, {"limit": 501}, {"limit": "many"}):
        answer = await ops.get("/ops/deliveries", params=params)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.json()["detail"], params
    assert (await ops.get("/ops/deliveries/pay/123")).status_code == 404
    missing = await ops.get(f"/ops/deliveries/notify/never-{uuid.uuid4().hex}")
    assert missing.status_code == 404 and "no such delivery" in missing.json()["detail"]
    nothing = await ops.post(f"/ops/deliveries/notify/never-{uuid.uuid4().hex}/redeliver")
    assert nothing.status_code == 409 and nothing.json()["detail"]
    not_ours = await ops.post("/ops/deliveries/pay/123/redeliver")
    assert not_ours.status_code == 409 and "not a delivery" in not_ours.json()["detail"]


# --- mpp ops ----------------------------------------------------------------------------------------


async def test_mpp_ops_lists_shows_and_redelivers_over_the_served_listener(
    ops_settings: Settings,
    temporal: WorkflowEnvironment,
    settings: Settings,
    alipayplus: SandboxAlipayPlus,
    token_file: Path,
    ops: httpx.AsyncClient,
) -> None:
    payment_request_id = f"ops-cli-{uuid.uuid4().hex}"
    alipayplus.script("notifyPayment", ["F"], subject=payment_request_id)
    delivery_id = await deliver(temporal.client, settings, payment_notice(payment_request_id))
    await listed(ops, {"state": "REJECTED"}, delivery_id, lambda row: row["attempts"] == 1)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    runner = CliRunner()
    environment = {"MPP_OPS_TOKEN_FILE": str(token_file), "COLUMNS": "200"}

    async def mpp_ops(*arguments: str) -> Any:
        return await asyncio.to_thread(runner.invoke, ops_app, [*arguments, "--url", url], env=environment)

    async with _serving(create_ops_app(ops_settings, temporal=temporal.client), port):
        listing = await mpp_ops("deliveries", "--state", "REJECTED", "--kind", "notifyPayment", "--limit", "500")
        shown = await mpp_ops("delivery", delivery_id)
        again = await mpp_ops("redeliver", delivery_id)
        await temporal.client.get_workflow_handle(delivery_id).result()
        refused = await mpp_ops("redeliver", delivery_id)
        bad = await mpp_ops("deliveries", "--state", "LOST")

    assert listing.exit_code == 0, listing.output
    assert "Deliveries REJECTED (notifyPayment)" in listing.output
    [line] = [line for line in listing.output.splitlines() if delivery_id in line]
    assert "notifyPayment" in line and "REJECTED" in line and "COMPLETED" in line and " F " in line
    assert shown.exit_code == 0, shown.output
    assert f"{delivery_id}  notifyPayment  REJECTED" in shown.output
    assert "PROCESS_FAIL" in shown.output
    assert again.exit_code == 0, again.output
    assert f"{delivery_id} delivering again (run " in again.output
    assert refused.exit_code == 1 and "HTTP 409" in refused.output and "already acknowledged" in refused.output
    assert bad.exit_code == 1 and "HTTP 422: state: Input should be 'DELIVERING'" in bad.output


def test_mpp_ops_sends_the_token_and_reports_refusals(token_file: Path) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/redeliver"):
            return httpx.Response(409, json={"detail": "notify/p-1 is RUNNING"})
        if request.url.path == "/ops/deliveries":
            row = {
                "delivery_id": "notify/p-1",
                "kind": "notifyPayment",
                "state": "GAVE_UP",
                "workflow_status": "COMPLETED",
                "run_id": "r",
                "started_at": "2026-12-05T10:00:00Z",
                "closed_at": "2026-12-08T10:00:00Z",
                "attempts": 80,
                "last_attempt_at": "2026-12-08T09:00:00.123456Z",
                "last_answer": "NO_ANSWER",
            }
            return httpx.Response(200, json={"deliveries": [row], "limit": 10})
        return httpx.Response(404, json={"detail": "notify/p 2: no such delivery"})

    runner = CliRunner()
    environment = {"MPP_OPS_TOKEN_FILE": str(token_file), "MPP_OPS_PORT": "9123", "COLUMNS": "200"}
    transport = httpx.MockTransport(answer)

    listing = runner.invoke(
        ops_app, ["deliveries", "--state", "GAVE_UP", "--limit", "10"], env=environment, obj=transport
    )
    assert listing.exit_code == 0, listing.output
    assert "notify/p-1" in listing.output and "GAVE_UP" in listing.output and "NO_ANSWER" in listing.output
    assert "2026-12-08 09:00:00" in listing.output and "80" in listing.output
    first = seen[0]
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert str(first.url) == "http://127.0.0.1:9123/ops/deliveries?state=GAVE_UP&limit=10"

    missing = runner.invoke(ops_app, ["delivery", "notify/p 2"], env=environment, obj=transport)
    assert missing.exit_code == 1 and "HTTP 404" in missing.output
    assert seen[-1].url.raw_path == b"/ops/deliveries/notify/p%202"
    running = runner.invoke(ops_app, ["redeliver", "notify/p-1"], env=environment, obj=transport)
    assert running.exit_code == 1 and "RUNNING" in running.output
    assert seen[-1].method == "POST"

    no_token = runner.invoke(
        ops_app, ["deliveries"], env={**environment, "MPP_OPS_TOKEN_FILE": str(token_file) + ".missing"}, obj=transport
    )
    assert no_token.exit_code == 1 and "MPP_OPS_TOKEN_FILE" in no_token.output


async def test_a_listener_started_without_temporal_says_it_serves_no_deliveries(ops_settings: Settings) -> None:
    bare = create_ops_app(ops_settings)  # its lifespan never runs: no Temporal client, no records
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=bare),
        base_url="http://ops.test",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as http:
        answer = await http.get("/ops/deliveries")
    assert answer.status_code == 404
    assert "started without Temporal" in answer.json()["detail"]
