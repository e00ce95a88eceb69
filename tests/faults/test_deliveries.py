"""notifyPayment and authNotify under faults, on the time-skipping server: an attempt that times out,
a worker that goes away mid-call, a slow peer, a peer that never says S, one that says F. Every
fault is an unanswered attempt on the schedule; only S, F or the horizon end a delivery, and
``mpp redeliver`` starts one again."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from alipayplus import Amount, NotifyPaymentRequest, Result
from sandbox.alipayplus.peer import Received, SandboxAlipayPlus
from tests.conftest import save_history
from wallet import search_attributes
from wallet.deliveries import (
    AuthNotifyInput,
    AuthorizationGrant,
    Delivery,
    DeliveryInput,
    DeliveryProgress,
    DeliveryReport,
    DeliverySchedule,
    NotifyPaymentInput,
)
from wallet.delivery_starts import NotRedeliverable, redeliver
from wallet.settings import Settings
from workers.worker import build_worker
from workflows.auth_notify import AuthNotifyWorkflow
from workflows.notify_payment import NotifyPaymentWorkflow

from .conftest import Stall, assert_replays, named, replacing

pytestmark = pytest.mark.timeout(60)
QUICK = DeliverySchedule(attempt_timeout=timedelta(seconds=1))  # an attempt that hangs costs 1 s of real time
PRICE = Amount(currency="IDR", value=5000)


@dataclass(frozen=True)
class Kind:
    """One kind of delivery: its workflow, its activity, its message and what the peer received."""

    name: str
    activity: str
    activity_api: str  # as the sandbox's scripts name it
    run: Any
    notice: Callable[[str, DeliverySchedule], DeliveryInput]
    received: Callable[[SandboxAlipayPlus, str], list[Received]]


def payment_notice(subject: str, schedule: DeliverySchedule) -> DeliveryInput:
    request = NotifyPaymentRequest(
        payment_result=Result.success(),
        payment_request_id=subject,
        payment_id=uuid.uuid4().hex,
        payment_amount=PRICE,
        pay_to_amount=PRICE,
    )
    return NotifyPaymentInput(request=request, schedule=schedule)


def auth_notice(subject: str, schedule: DeliverySchedule) -> DeliveryInput:
    grant = AuthorizationGrant(
        reference_agreement_id=subject,
        auth_client_id="2188120040699147",
        customer_id="2160220037535021",
        acquirer_id="1022188000000000001",
        psp_id="1022160000000000000",
    )
    return AuthNotifyInput(grant=grant, schedule=schedule)


NOTIFY = Kind(
    "notify",
    "notify_payment",
    "notifyPayment",
    NotifyPaymentWorkflow.run,
    payment_notice,
    SandboxAlipayPlus.notifications,
)
AUTH = Kind(
    "auth", "auth_notify", "authNotify", AuthNotifyWorkflow.run, auth_notice, SandboxAlipayPlus.auth_notifications
)
KINDS = [NOTIFY, AUTH]


@pytest.fixture
def queue(settings: Settings) -> Settings:
    """Settings with a task queue of the test's own, so its workers are the only ones."""
    return settings.model_copy(update={"temporal_task_queue": f"faults-{uuid.uuid4().hex[:8]}"})


def worker(client: Client, queue: Settings, activities: list[Any]) -> Any:
    # no workflow cache, so no sticky queue: a restarted worker takes over at once; no grace at
    # shutdown, so a stalled call dies with its worker
    return build_worker(client, queue, activities, max_cached_workflows=0, graceful_shutdown_timeout=timedelta(0))


async def start(client: Client, queue: Settings, kind: Kind, notice: DeliveryInput, subject: str) -> WorkflowHandle:
    return await client.start_workflow(
        kind.run, notice, id=f"{kind.name}/{subject}", task_queue=queue.temporal_task_queue
    )


async def delivery_status(handle: WorkflowHandle) -> str | None:
    return (await handle.describe()).typed_search_attributes.get(search_attributes.DELIVERY_STATUS)


def assert_same_message_each_time(received: list[Received], count: int) -> None:
    assert len(received) == count
    assert all(message.body == received[0].body for message in received)


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
async def test_an_attempt_that_times_out_is_counted_and_retried_until_s(
    client: Client, queue: Settings, activities: list[Any], alipayplus: SandboxAlipayPlus, kind: Kind
) -> None:
    subject = f"to-{uuid.uuid4().hex}"
    stall = Stall(named(activities, kind.activity))  # Alipay+ gets attempt 1; its answer never comes back
    async with worker(client, queue, replacing(activities, stall.activity())):
        handle = await start(client, queue, kind, kind.notice(subject, QUICK), subject)
        report: DeliveryReport = await handle.result()
        progress = await handle.query("delivery", result_type=DeliveryProgress)

    assert report.delivery is Delivery.ACKNOWLEDGED and stall.stalls == 1
    assert (progress.status, progress.attempts) == ("ACKNOWLEDGED", 2)
    assert await delivery_status(handle) == "ACKNOWLEDGED"
    assert_same_message_each_time(kind.received(alipayplus, subject), 2)  # harmless: the same bytes again
    await assert_replays(handle, queue)
    await save_history(handle, f"{kind.activity}_after_timeout")


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
async def test_a_worker_that_dies_mid_call_loses_nothing(
    client: Client, queue: Settings, activities: list[Any], alipayplus: SandboxAlipayPlus, kind: Kind
) -> None:
    subject = f"rs-{uuid.uuid4().hex}"
    stall = Stall(named(activities, kind.activity))
    async with worker(client, queue, replacing(activities, stall.activity())):
        handle = await start(client, queue, kind, kind.notice(subject, QUICK), subject)
        await stall.stalled.wait()  # Alipay+ has the message; the worker goes away before the answer
    async with worker(client, queue, activities):  # a new worker carries on
        report: DeliveryReport = await handle.result()
        progress = await handle.query("delivery", result_type=DeliveryProgress)

    assert report.delivery is Delivery.ACKNOWLEDGED
    assert (progress.status, progress.attempts) == ("ACKNOWLEDGED", 2)
    assert_same_message_each_time(kind.received(alipayplus, subject), 2)
    await assert_replays(handle, queue)
    await save_history(handle, f"{kind.activity}_after_worker_restart")


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
async def test_a_peer_that_never_says_s_is_given_up_visibly_at_the_horizon_and_can_be_redelivered(
    env: WorkflowEnvironment,
    client: Client,
    queue: Settings,
    activities: list[Any],
    alipayplus: SandboxAlipayPlus,
    kind: Kind,
) -> None:
    subject = f"gu-{uuid.uuid4().hex}"
    alipayplus.script(kind.activity_api, ["U"] * 6, subject=subject)  # type: ignore[arg-type]
    schedule = DeliverySchedule(delays=[timedelta(minutes=1)], horizon=timedelta(minutes=5, seconds=30))
    async with worker(client, queue, activities):
        handle = await start(client, queue, kind, kind.notice(subject, schedule), subject)
        report: DeliveryReport = await handle.result()
        progress = await handle.query("delivery", result_type=DeliveryProgress)
        assert await delivery_status(handle) == "GAVE_UP"
        await save_history(handle, f"{kind.activity}_gave_up")

        run_id = await redeliver(client, handle.id, queue.temporal_task_queue, schedule)  # Alipay+ is back
        again: DeliveryReport = await client.get_workflow_handle(
            handle.id, run_id=run_id, result_type=DeliveryReport
        ).result()
        assert await delivery_status(client.get_workflow_handle(handle.id)) == "ACKNOWLEDGED"
        with pytest.raises(NotRedeliverable, match="already acknowledged"):
            await redeliver(client, handle.id, queue.temporal_task_queue, schedule)

    assert report.delivery is Delivery.GAVE_UP and "6 attempts" in report.detail
    assert progress.status == "GAVE_UP" and progress.attempts == 6  # at 0, 1, 2, 3, 4 and 5 minutes
    assert progress.gives_up_at == progress.first_attempt_at + schedule.horizon  # type: ignore[operator]
    assert again.delivery is Delivery.ACKNOWLEDGED
    assert_same_message_each_time(kind.received(alipayplus, subject), 7)


async def test_an_f_answer_stops_at_once_with_its_reason_and_can_be_redelivered(
    client: Client, queue: Settings, activities: list[Any], alipayplus: SandboxAlipayPlus
) -> None:
    subject = f"f-{uuid.uuid4().hex}"
    alipayplus.script("notifyPayment", ["F"], subject=subject)
    async with worker(client, queue, activities):
        handle = await start(client, queue, NOTIFY, payment_notice(subject, QUICK), subject)
        report: DeliveryReport = await handle.result()
        assert await delivery_status(handle) == "REJECTED"
        run_id = await redeliver(client, handle.id, queue.temporal_task_queue, QUICK)  # configuration fixed
        again: DeliveryReport = await client.get_workflow_handle(
            handle.id, run_id=run_id, result_type=DeliveryReport
        ).result()

    assert report.delivery is Delivery.REJECTED and report.detail == "F/PROCESS_FAIL"
    assert again.delivery is Delivery.ACKNOWLEDGED
    assert_same_message_each_time(alipayplus.notifications(subject), 2)


async def test_only_a_finished_delivery_can_be_redelivered(client: Client, settings: Settings) -> None:
    with pytest.raises(NotRedeliverable, match="not a delivery"):
        await redeliver(client, "pay/123", settings.temporal_task_queue, QUICK)
    with pytest.raises(NotRedeliverable, match="notify/nowhere"):
        await redeliver(client, "notify/nowhere", settings.temporal_task_queue, QUICK)
