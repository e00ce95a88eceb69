"""NFC activation on the time-skipping server: every path, with a scripted Ant/Mastercard behind the
proxy activity and a scripted phone answering the device steps. Polling runs in milliseconds."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.nfc_tokens import NfcTokenActivities
from tests.conftest import save_history
from wallet.nfc_proxy import SdkAnswer, SdkCall
from wallet.nfc_tokens import NfcTokens, TokenOwnerRecord
from wallet.records import NfcDevice
from wallet.users import UserStore
from workflows.nfc_activation import (
    STEPS,
    ActivationRequest,
    DeviceStep,
    NfcActivationWorkflow,
    Phase,
    Progress,
)

CUSTOMER = "2160220037535021"
DEVICE = "a" * 64
POLL = timedelta(seconds=2)


@dataclass
class ScriptedNetwork:
    """Mastercard and the Ant server as the proxy activity reaches them."""

    approve_after_polls: int = 2
    token_reference_id: str = "DAPLMC0001"
    reject: bool = False
    fail_api: str | None = None
    calls: list[str] = field(default_factory=list)
    _polls: int = 0

    @activity.defn(name="sdk_request")
    async def sdk_request(self, call: SdkCall) -> SdkAnswer:
        api = call.api
        self.calls.append(api)
        if api == self.fail_api:
            raise ApplicationError(f"{api} unreachable", non_retryable=True)
        payload = json.loads(call.sdk_request_data or "{}")
        return self._answer(call, self._respond(api, payload))

    def _respond(self, api: str, payload: dict[str, object]) -> dict[str, object]:
        if api == "getPublicKey":
            return {"publicKeyId": "MC-KEY-1", "certificate": "-----BEGIN PUBLIC KEY-----"}
        if api == "applyNfcToken":
            return {"status": "PENDING", "tokenRequestId": "TR-1"}
        if api == "queryToken":
            self._polls += 1
            if self.reject:
                return {"status": "REJECTED", "reason": "issuer declined"}
            if self._polls >= self.approve_after_polls:
                return {"status": "APPROVED", "tokenReferenceId": self.token_reference_id}
            return {"status": "PENDING"}
        if api == "provision":
            return {"tokenReferenceId": payload["tokenReferenceId"], "cardProfile": {"tokenPan": "5413000000000001"}}
        if api == "notifyProvisionResult":
            return {"acknowledged": True}
        if api == "queryNTUResult":
            return {"status": "UPDATED"}
        if api == "replenish":
            return {"credentials": [{"atc": atc, "singleUseKey": "00" * 16} for atc in range(1, 11)]}
        raise AssertionError(api)

    @staticmethod
    def _answer(call: SdkCall, payload: dict[str, object]) -> SdkAnswer:
        header = json.loads(call.sdk_request_header) | {"code": "SUCCESS"}
        return SdkAnswer(sdk_response_header=json.dumps(header), sdk_response_data=json.dumps(payload))


@dataclass
class Phone:
    """Answers device steps as a phone would; ``offline`` never answers."""

    offline: bool = False
    storage_fails: bool = False
    seen: list[Progress] = field(default_factory=list)

    async def run(self, env: WorkflowEnvironment, handle: WorkflowHandle[NfcActivationWorkflow, Progress]) -> Progress:
        for _ in range(200):
            progress = await handle.query(NfcActivationWorkflow.progress)
            self.seen.append(progress)
            if progress.phase in (Phase.DONE, Phase.FAILED, Phase.WAITING_FOR_CONFIRMATION):
                return progress
            action = progress.device_action
            if action is not None and not self.offline:
                ok = not (self.storage_fails and action.step is DeviceStep.STORE_TOKEN)
                await handle.execute_update(NfcActivationWorkflow.device_step, args=[action.step, ok])
            else:
                await env.sleep(POLL)  # time-skipping: a poll interval passes at once
        raise AssertionError("the activation never ended")


@dataclass
class Texts:
    """The SMS gateway: what the user was told."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, to: str, text: str, reference: str) -> None:
        self.sent.append((to, text))


@pytest.fixture
def texts() -> Texts:
    return Texts()


@pytest.fixture
async def network(client: Client, engine: Engine, texts: Texts) -> AsyncIterator[tuple[ScriptedNetwork, str]]:
    scripted = ScriptedNetwork()
    task_queue = f"nfc-{uuid.uuid4().hex[:8]}"
    devices = NfcTokenActivities(NfcTokens(engine), UserStore(engine), texts)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[NfcActivationWorkflow],
        activities=[
            scripted.sdk_request,
            devices.record_token_owner,
            devices.notify_new_device,
            devices.release_device,
        ],
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=4),
    ):
        yield scripted, task_queue


async def start(
    client: Client, task_queue: str, *, silent: bool = False, **options: object
) -> WorkflowHandle[NfcActivationWorkflow, Progress]:
    request = ActivationRequest(customer_id=CUSTOMER, device_id=DEVICE, silent=silent, poll_interval=POLL, **options)  # type: ignore[arg-type]
    return await client.start_workflow(
        NfcActivationWorkflow.run, request, id=f"activation/{CUSTOMER}/{uuid.uuid4().hex}", task_queue=task_queue
    )


async def test_manual_activation_walks_the_seed_steps_to_status_2(
    env: WorkflowEnvironment, client: Client, network: tuple[ScriptedNetwork, str]
) -> None:
    scripted, task_queue = network
    handle = await start(client, task_queue)
    phone = Phone()

    final = await phone.run(env, handle)

    assert final.phase is Phase.DONE and final.status_code == 2 and final.step == len(STEPS)
    assert final.token_reference_id == "DAPLMC0001"
    assert scripted.calls == [
        "getPublicKey",
        "applyNfcToken",
        "queryToken",
        "queryToken",
        "provision",
        "notifyProvisionResult",
        "queryNTUResult",
        "replenish",
    ]
    steps = [p.step for p in phone.seen]
    assert steps == sorted(steps) and all(p.steps_total == len(STEPS) for p in phone.seen)  # a progress bar
    asked = [p.device_action.step for p in phone.seen if p.device_action]
    assert asked == [DeviceStep.STORE_TOKEN, DeviceStep.ACTIVATE_LOCAL_TOKEN, DeviceStep.STORE_CREDENTIALS]
    assert all(p.status_code == 11 for p in phone.seen if p.phase is not Phase.DONE)
    assert (await handle.result()).status_code == 2
    await save_history(handle, "nfc_activation_device_bound")


async def test_an_activation_records_the_tokens_owner_and_tells_the_user(
    env: WorkflowEnvironment, client: Client, engine: Engine, network: tuple[ScriptedNetwork, str], texts: Texts
) -> None:
    scripted, task_queue = network
    scripted.token_reference_id = f"DAPLMC{uuid.uuid4().hex[:20]}"
    handle = await start(client, task_queue)
    assert (await Phone().run(env, handle)).phase is Phase.DONE
    await handle.result()

    owner = NfcTokens(engine).owner_of(scripted.token_reference_id)
    assert owner is not None and (owner.customer_id, owner.device_id) == (CUSTOMER, DEVICE)
    [(to, text)] = texts.sent
    assert to == "+85211112222" and "new phone" in text and DEVICE[-6:] in text
    assert scripted.token_reference_id not in text  # no token data in an SMS


async def test_a_token_recorded_as_another_customers_ends_the_activation(
    env: WorkflowEnvironment, client: Client, engine: Engine, network: tuple[ScriptedNetwork, str], texts: Texts
) -> None:
    scripted, task_queue = network
    scripted.token_reference_id = f"DAPLMC{uuid.uuid4().hex[:20]}"
    taken = TokenOwnerRecord(token_reference_id=scripted.token_reference_id, customer_id="2160220037535031")
    assert NfcTokens(engine).record_owner(taken)
    handle = await start(client, task_queue)

    final = await Phone().run(env, handle)

    assert final.phase is Phase.FAILED and final.status_code == 0 and "another customer" in (final.failure or "")
    assert "provision" not in scripted.calls and texts.sent == []


async def test_polling_waits_on_durable_timers(
    env: WorkflowEnvironment, client: Client, network: tuple[ScriptedNetwork, str]
) -> None:
    scripted, task_queue = network
    scripted.approve_after_polls = 5
    started = await env.get_current_time()
    handle = await start(client, task_queue)

    final = await Phone().run(env, handle)

    assert final.phase is Phase.DONE
    assert scripted.calls.count("queryToken") == 5
    assert await env.get_current_time() - started >= 4 * POLL  # four intervals between five polls


async def test_silent_activation_waits_at_21_for_the_users_confirmation(
    env: WorkflowEnvironment, client: Client, network: tuple[ScriptedNetwork, str]
) -> None:
    _, task_queue = network
    handle = await start(client, task_queue, silent=True)
    phone = Phone()

    waiting = await phone.run(env, handle)
    confirming = await handle.execute_update(NfcActivationWorkflow.confirm)
    final = await phone.run(env, handle)

    assert waiting.phase is Phase.WAITING_FOR_CONFIRMATION and waiting.status_code == 21
    assert confirming.phase is not Phase.WAITING_FOR_CONFIRMATION and confirming.status_code == 11
    assert final.phase is Phase.DONE and final.status_code == 2
    await save_history(handle, "nfc_activation_silent")


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"reject": True}, "rejected"),
        ({"approve_after_polls": 99}, "after 10 polls"),
        ({"fail_api": "provision"}, "proxy failed"),
    ],
    ids=["application rejected", "poll limit reached", "proxy error"],
)
async def test_network_failures_end_in_status_0_with_the_reason(
    env: WorkflowEnvironment,
    client: Client,
    network: tuple[ScriptedNetwork, str],
    setup: dict[str, object],
    reason: str,
) -> None:
    scripted, task_queue = network
    for name, value in setup.items():
        setattr(scripted, name, value)
    handle = await start(client, task_queue)

    final = await Phone().run(env, handle)

    assert final.phase is Phase.FAILED and final.status_code == 0 and reason in (final.failure or "")
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, ApplicationError) and failed.value.cause.type == "ActivationFailed"
    if setup.get("reject"):
        await save_history(handle, "nfc_activation_rejected_slot_released")


async def test_a_failed_activation_gives_its_device_slot_back(
    env: WorkflowEnvironment, client: Client, engine: Engine, network: tuple[ScriptedNetwork, str]
) -> None:
    scripted, task_queue = network
    scripted.reject = True
    device = f"{uuid.uuid4().hex}{uuid.uuid4().hex}"
    assert NfcTokens(engine).start_device(CUSTOMER, device)  # what the API does before starting
    handle = await client.start_workflow(
        NfcActivationWorkflow.run,
        ActivationRequest(customer_id=CUSTOMER, device_id=device, poll_interval=POLL),
        id=f"activation/{CUSTOMER}/{device}",
        task_queue=task_queue,
    )

    assert (await Phone().run(env, handle)).phase is Phase.FAILED
    with pytest.raises(WorkflowFailureError):
        await handle.result()

    with Session(engine) as session:
        slot = session.get(NfcDevice, (CUSTOMER, device))
    assert slot is not None and slot.released_at is not None


@pytest.mark.parametrize(
    ("phone", "reason"),
    [(Phone(offline=True), "did not answer"), (Phone(storage_fails=True), "could not")],
    ids=["phone offline", "secure storage failed"],
)
async def test_device_failures_end_in_status_0(
    env: WorkflowEnvironment, client: Client, network: tuple[ScriptedNetwork, str], phone: Phone, reason: str
) -> None:
    _, task_queue = network
    handle = await start(client, task_queue, device_timeout=timedelta(seconds=30))

    final = await phone.run(env, handle)

    assert final.phase is Phase.FAILED and final.status_code == 0 and reason in (final.failure or "")
    assert final.device_action is None
