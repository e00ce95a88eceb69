"""NFC activation under faults, on the time-skipping server: a proxied step that times out, and a
worker that goes away mid-step, are tried again within the step's deadline and the activation
completes; past the deadline it ends at status 0 with its reason, never stuck."""

from __future__ import annotations

import concurrent.futures
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.nfc_tokens import NfcTokenActivities
from tests.conftest import save_history
from tests.workflows.test_nfc_activation import CUSTOMER, DEVICE, POLL, Phone, ScriptedNetwork, Texts
from wallet.nfc_proxy import SdkCall
from wallet.nfc_tokens import NfcTokens
from wallet.settings import Settings
from wallet.users import UserStore
from workflows.nfc_activation import ActivationRequest, NfcActivationWorkflow, Phase

from .conftest import Stall, assert_replays

pytestmark = pytest.mark.timeout(60)
QUICK_STEPS = {"step_timeout": timedelta(seconds=1)}  # a call that hangs costs 1 s of real time


def at(api: str) -> object:
    return lambda call: isinstance(call, SdkCall) and call.api == api


@pytest.fixture
def devices(engine: Engine) -> NfcTokenActivities:
    """The token's owner recorded, the new-device SMS sent, a failed activation's slot given back."""
    return NfcTokenActivities(NfcTokens(engine), UserStore(engine), Texts())


def worker(
    client: Client, task_queue: str, network: ScriptedNetwork, devices: NfcTokenActivities, stall: Stall | None = None
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[NfcActivationWorkflow],
        activities=[
            stall.activity() if stall else network.sdk_request,
            devices.record_token_owner,
            devices.notify_new_device,
            devices.release_device,
        ],
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=4),  # the database activities
        max_cached_workflows=0,  # no sticky queue: a restarted worker takes over at once
        graceful_shutdown_timeout=timedelta(0),  # a stalled call dies with its worker
    )


async def start(client: Client, task_queue: str, **options: object):  # type: ignore[no-untyped-def]
    request = ActivationRequest(customer_id=CUSTOMER, device_id=DEVICE, poll_interval=POLL, **options)  # type: ignore[arg-type]
    return await client.start_workflow(
        NfcActivationWorkflow.run, request, id=f"activation/{CUSTOMER}/{uuid.uuid4().hex}", task_queue=task_queue
    )


async def test_a_step_that_times_out_is_tried_again_and_the_activation_completes(
    env: WorkflowEnvironment, client: Client, settings: Settings, devices: NfcTokenActivities
) -> None:
    network, task_queue = ScriptedNetwork(), f"nfc-faults-{uuid.uuid4().hex[:8]}"
    stall = Stall(network.sdk_request, when=at("provision"), hang=1.5)  # Ant provisions; the answer never comes back
    async with worker(client, task_queue, network, devices, stall):
        handle = await start(client, task_queue, **QUICK_STEPS)
        final = await Phone().run(env, handle)

    assert final.phase is Phase.DONE and final.status_code == 2 and stall.stalls == 1
    assert network.calls.count("provision") == 2  # the same request again (the Ant server dedupes by its id)
    await assert_replays(handle, settings)
    await save_history(handle, "nfc_activation_after_timeout")


async def test_a_worker_that_dies_mid_step_loses_nothing(
    env: WorkflowEnvironment, client: Client, settings: Settings, devices: NfcTokenActivities
) -> None:
    network, task_queue = ScriptedNetwork(), f"nfc-faults-{uuid.uuid4().hex[:8]}"
    stall = Stall(network.sdk_request, when=at("replenish"))
    async with worker(client, task_queue, network, devices, stall):
        handle = await start(client, task_queue, **QUICK_STEPS)
        phone = Phone()
        while not stall.stalled.is_set():  # the phone answers device steps until the 10th step stalls
            progress = await handle.query(NfcActivationWorkflow.progress)
            if progress.device_action:
                await handle.execute_update(NfcActivationWorkflow.device_step, args=[progress.device_action.step, True])
            else:
                await env.sleep(POLL)
    async with worker(client, task_queue, network, devices):  # a new worker carries on
        final = await phone.run(env, handle)

    assert final.phase is Phase.DONE and final.status_code == 2
    assert network.calls.count("replenish") == 2
    await assert_replays(handle, settings)
    await save_history(handle, "nfc_activation_after_worker_restart")


async def test_a_step_that_never_answers_ends_at_status_0_with_its_reason_after_its_deadline(
    env: WorkflowEnvironment, client: Client, devices: NfcTokenActivities
) -> None:
    network, task_queue = ScriptedNetwork(), f"nfc-faults-{uuid.uuid4().hex[:8]}"
    stall = Stall(network.sdk_request, times=99, when=at("getPublicKey"))
    async with worker(client, task_queue, network, devices, stall):
        handle = await start(client, task_queue, step_deadline=timedelta(seconds=3), **QUICK_STEPS)
        final = await Phone().run(env, handle)
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    assert final.phase is Phase.FAILED and final.status_code == 0
    assert final.failure and final.failure.startswith("getPublicKey: the proxy failed")
    assert stall.stalls >= 2  # tried again before giving up
