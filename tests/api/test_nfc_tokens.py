"""The phone's token endpoints end to end: our API, the token workflow (time-skipping server) and its
proxy activity through Alipay+'s signed sdkProxy to the sandbox Ant server and Mastercard. Lock,
unlock and delete reach Mastercard first; tap reports duplicated and reordered count each credential
once; and the phone's SDK, tapping through ``process_apdu``, agrees with the server's count."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.nfc_proxy import NfcActivities
from alipayplus import SignedClient
from api.main import create_app
from api.services import Services
from hce_device.nfc_sdk import AlipayPlusNfcSdk, NfcDevice, NfcResultCode, TokenStatus
from hce_device.secure_store import DeviceKeystore, SecureStore
from sandbox.alipayplus.app import create_app as create_sandbox_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.code_service import CodeService
from sandbox.nfc import SandboxAntNfc, SandboxMastercard, TokenState
from tests.hce_device.test_nfc_sdk_taps import pos_tap
from wallet.ledger import Ledger
from wallet.nfc_proxy import NfcProxy
from wallet.nfc_tokens import TokenOwnerRecord
from wallet.settings import Settings
from workflows.token import TokenActivated, TokenWorkflow

from .conftest import code_service_transport
from .test_nfc import PIN, session

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

CUSTOMER = "2160220037535021"  # the PIN user's customerId
DEVICE = "cd" * 32


@dataclass
class Stack:
    api: httpx.AsyncClient
    app: FastAPI
    ant: SandboxAntNfc
    client: Client


@pytest.fixture(scope="module")
async def stack(
    settings: Settings, client: Client, database: Ledger, alipayplus: SandboxAlipayPlus
) -> AsyncIterator[Stack]:
    """Our API and a worker for token workflows whose proxy activity reaches the sandbox Ant server."""
    ant = SandboxAntNfc(SandboxMastercard(key_size=1024))
    peers = httpx.ASGITransport(app=create_sandbox_app(alipayplus, ant_nfc=ant, mastercard=ant.mastercard))
    own = settings.model_copy(update={"temporal_task_queue": f"tokens-{uuid.uuid4().hex[:8]}"})
    to_alipayplus = SignedClient("http://alipayplus.test", own.signer, own.verifier, transport=peers)
    to_mastercard = httpx.AsyncClient(base_url="http://mastercard.test", transport=peers)
    nfc = NfcActivities(NfcProxy(to_alipayplus, to_mastercard))
    app = create_app(own, client, code_service_transport=code_service_transport(CodeService()), nfc_transport=peers)
    async with (
        Worker(client, task_queue=own.temporal_task_queue, workflows=[TokenWorkflow], activities=[nfc.sdk_request]),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=own.public_base_url) as http,
    ):
        yield Stack(http, app, ant, client)
    await to_alipayplus.aclose()
    await to_mastercard.aclose()


@dataclass
class Token:
    reference: str
    card_profile: dict[str, Any]
    credentials: list[dict[str, Any]]
    path: str


async def ant_call(ant: SandboxAntNfc, api: str, **data: Any) -> dict[str, Any]:
    answer = await ant.call(api, CUSTOMER, json.dumps(data))
    assert answer.code == "SUCCESS", answer
    return answer.data


def own_token(stack: Stack, reference: str, customer_id: str = CUSTOMER) -> None:
    """What the activation workflow records once queryToken approves: whose the token is."""
    services: Services = stack.app.state.services
    owner = TokenOwnerRecord(token_reference_id=reference, customer_id=customer_id, device_id=DEVICE)
    assert services.nfc_tokens.record_owner(owner)


async def activated_token(stack: Stack, headers: dict[str, str], credentials: int = 20) -> Token:
    """A token as activation leaves it: active at the Ant server and Mastercard, its first credentials
    stored by the phone (which starts its workflow), and Alipay+'s activation notice received."""
    ant = stack.ant
    applied = await ant_call(ant, "applyNfcToken", deviceFingerprint=DEVICE, publicKeyId=ant.mastercard.public_key_id)
    status: dict[str, Any] = {}
    for _ in range(ant.approve_after_polls + 1):
        status = await ant_call(ant, "queryToken", tokenRequestId=applied["tokenRequestId"])
    reference = str(status["tokenReferenceId"])
    own_token(stack, reference)
    provisioned = await ant_call(ant, "provision", tokenReferenceId=reference)
    await ant_call(ant, "notifyProvisionResult", tokenReferenceId=reference, result="SUCCESS")
    fresh = (await ant_call(ant, "replenish", tokenReferenceId=reference, count=credentials))["credentials"]
    path = f"/app/v1/nfc/tokens/{reference}"
    stored = await stack.api.post(f"{path}/credentials", json={"credentials": fresh}, headers=headers)
    assert stored.status_code == 200, stored.text
    notice = TokenActivated(
        customer_id=CUSTOMER,
        wallet_id="216",
        token_requestor_id="50110030273",
        account_source=None,
        service_request_time=datetime.now(UTC),
        token_activated_time=datetime.now(UTC),
    )
    await stack.client.get_workflow_handle(f"token/{reference}").signal(TokenWorkflow.activation_notified, notice)
    return Token(reference, provisioned["cardProfile"], fresh, path)


async def until(
    stack: Stack, token: Token, headers: dict[str, str], done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for _ in range(200):
        state = (await stack.api.get(token.path, headers=headers)).json()
        if done(state):
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached: {state}")


def credentials_left(state: dict[str, Any]) -> int:
    return len(set(state["issuedAtcs"]) - set(state["usedAtcs"]))


def tap(atc: int) -> dict[str, Any]:
    return {"atc": atc, "customData": f"{atc:04x}", "tappedAt": "2026-11-22T13:00:00+08:00"}


# --- lock, unlock, delete ------------------------------------------------------------------------


async def test_lock_unlock_and_delete_reach_mastercard_and_the_token(stack: Stack) -> None:
    headers = await session(stack.api)
    token = await activated_token(stack, headers)
    mastercard = stack.ant.mastercard

    locked = await stack.api.post(f"{token.path}/lock", headers=headers)
    at_mastercard_locked = mastercard.token(token.reference)
    assert at_mastercard_locked is not None and at_mastercard_locked.state is TokenState.SUSPENDED
    tapped = await stack.api.post(f"{token.path}/taps", json=tap(1), headers=headers)  # before the lock
    replenish = await stack.api.post(f"{token.path}/replenish", headers=headers)
    unlocked = await stack.api.post(f"{token.path}/unlock", headers=headers)
    at_mastercard_unlocked = mastercard.token(token.reference)
    assert at_mastercard_unlocked is not None and at_mastercard_unlocked.state is TokenState.ACTIVE
    deleted = await stack.api.delete(token.path, headers=headers)
    await stack.client.get_workflow_handle(f"token/{token.reference}").result()  # its workflow ended
    again = await stack.api.delete(token.path, headers=headers)
    late_tap = await stack.api.post(f"{token.path}/taps", json=tap(2), headers=headers)
    late_lock = await stack.api.post(f"{token.path}/lock", headers=headers)
    final = await stack.api.get(token.path, headers=headers)

    assert locked.status_code == 200 and locked.json()["lifecycle"] == "LOCKED"
    assert tapped.status_code == 202  # a locked token's taps count
    assert replenish.status_code == 409 and "locked" in replenish.json()["detail"]
    assert unlocked.status_code == 200 and unlocked.json()["lifecycle"] == "ACTIVE"
    assert unlocked.json()["usedAtcs"] == [1]
    assert deleted.status_code == 200 and deleted.json()["lifecycle"] == "DELETED"
    at_mastercard_deleted = mastercard.token(token.reference)
    assert at_mastercard_deleted is not None and at_mastercard_deleted.state is TokenState.DELETED
    assert again.status_code == 200 and again.json()["lifecycle"] == "DELETED"
    assert late_tap.status_code == 410 and late_lock.status_code == 410
    assert final.status_code == 200 and final.json()["lifecycle"] == "DELETED"
    calls = [call.api for call in stack.ant.calls if call.api.endswith("Token") and call.api != "queryToken"]
    assert calls[-3:] == ["lockToken", "unlockToken", "deleteToken"]


@pytest.mark.parametrize(("method", "action", "api"), [("POST", "/lock", "lockToken"), ("DELETE", "", "deleteToken")])
@pytest.mark.parametrize("how", ["fail", "reject"])
async def test_an_ant_failure_answers_502_and_changes_nothing(
    stack: Stack, method: str, action: str, api: str, how: str
) -> None:
    headers = await session(stack.api)
    token = await activated_token(stack, headers)
    stack.ant.script(api, fail=how == "fail", reject=how == "reject")  # type: ignore[arg-type]

    response = await stack.api.request(method, f"{token.path}{action}", headers=headers)
    state = (await stack.api.get(token.path, headers=headers)).json()

    assert response.status_code == 502
    assert api in response.json()["detail"] and ("SYSTEM_ERROR" if how == "fail" else "REJECTED") in response.text
    assert state["lifecycle"] == "ACTIVE"
    at_mastercard = stack.ant.mastercard.token(token.reference)
    assert at_mastercard is not None and at_mastercard.state is TokenState.ACTIVE
    assert (await stack.api.request(method, f"{token.path}{action}", headers=headers)).status_code == 200


async def test_only_the_owner_manages_a_token_and_an_unknown_one_is_not_created(stack: Stack) -> None:
    owner = await session(stack.api)
    token = await activated_token(stack, owner)
    login = await stack.api.post("/app/v1/login", json={"loginId": "82-1012345678", "pin": PIN})
    stack.api.cookies.clear()
    stranger = {"Authorization": f"Bearer {login.json()['sessionToken']}"}
    unknown = "/app/v1/nfc/tokens/DAPLMC00000000000000000000unknown"

    answers = [
        await stack.api.post(f"{token.path}/lock", headers=stranger),
        await stack.api.delete(token.path, headers=stranger),
        await stack.api.post(f"{unknown}/lock", headers=owner),
        await stack.api.post(f"{unknown}/unlock", headers=owner),
        await stack.api.delete(unknown, headers=owner),
    ]
    anonymous = await stack.api.post(f"{token.path}/lock")

    assert [answer.status_code for answer in answers] == [404] * 5
    assert anonymous.status_code == 401
    with pytest.raises(RPCError):
        await stack.client.get_workflow_handle("token/DAPLMC00000000000000000000unknown").describe()
    assert (await stack.api.get(token.path, headers=owner)).json()["lifecycle"] == "ACTIVE"


async def test_the_proxy_does_not_forward_token_management(stack: Stack) -> None:
    headers = await session(stack.api)
    token = await activated_token(stack, headers)
    body = {
        "deviceId": DEVICE,
        "sdkRequestHeader": json.dumps({"api": "lockToken", "requestId": "r1"}),
        "sdkRequestData": json.dumps({"tokenReferenceId": token.reference}),
    }
    response = await stack.api.post("/app/v1/nfc/proxy", json=body, headers=headers)
    assert response.status_code == 400 and "lockToken" in response.json()["detail"]
    assert stack.ant.token(token.reference) is not None
    assert stack.ant.token(token.reference).state is TokenState.ACTIVE  # type: ignore[union-attr]


# --- tap reports ---------------------------------------------------------------------------------


async def test_duplicated_and_reordered_tap_reports_leave_credentials_left_exact(stack: Stack) -> None:
    headers = await session(stack.api)
    token = await activated_token(stack, headers, credentials=20)
    reports = [7, 3, 7, 1, 11, 3, 2, 9, 1, 5, 11, 4, 6, 2, 8, 10, 9]  # 11 credentials, late, retried, twice
    first, second = reports[::2], reports[1::2]

    answers = [
        *await asyncio.gather(*(stack.api.post(f"{token.path}/taps", json=tap(a), headers=headers) for a in first)),
        *await asyncio.gather(*(stack.api.post(f"{token.path}/taps", json=tap(a), headers=headers) for a in second)),
    ]
    counted = await until(stack, token, headers, lambda s: s["taps"] == 11)
    replenished = await until(stack, token, headers, lambda s: s["replenishments"] == 1)  # 9 left: below 10

    assert {answer.status_code for answer in answers} == {202}
    assert counted["usedAtcs"] == list(range(1, 12)) and credentials_left(counted) == 9
    assert credentials_left(replenished) == 9 and [c["atc"] for c in replenished["undelivered"]] == list(
        range(21, 31)
    )  # Ant's next ATCs, waiting for the phone (not counted until it stores them)
    for repeat in (5, 1, 11):
        await stack.api.post(f"{token.path}/taps", json=tap(repeat), headers=headers)
    assert credentials_left((await stack.api.get(token.path, headers=headers)).json()) == 9


async def test_the_phone_taps_reports_and_replenishes_in_step_with_the_server(stack: Stack) -> None:
    headers = await session(stack.api)
    token = await activated_token(stack, headers, credentials=12)
    store = SecureStore(DeviceKeystore())
    store.put("token", {"tokenReferenceId": token.reference, "cardProfile": token.card_profile, "active": True})
    store.put("credentials", {"credentials": token.credentials})
    phone = AlipayPlusNfcSdk(
        "http://testserver",
        device=NfcDevice(),
        fingerprint_service=None,
        store=store,
        transport=httpx.ASGITransport(app=stack.app),
    )
    phone.init()
    phone.connect(headers["Authorization"].removeprefix("Bearer "))

    def unused() -> int:
        return sum(1 for c in (store.get("credentials") or {})["credentials"] if not c.get("used"))

    counts = []
    for _ in range(4):
        pos_tap(phone)
        assert await phone.report_taps() == 0
        state = (await stack.api.get(token.path, headers=headers)).json()
        counts.append((unused(), credentials_left(state)))
    locked = await phone.lock()
    suspended = stack.ant.mastercard.token(token.reference)
    assert suspended is not None and suspended.state is TokenState.SUSPENDED
    declined = pos_tap(phone)
    unlocked = await phone.unlock()
    deleted = await phone.delete_token()
    await phone.aclose()

    assert counts == [(11, 11), (10, 10), (19, 19), (18, 18)]  # phone and server agree; below 10: ten more
    assert locked.status == TokenStatus.LOCKED and declined == b"\x69\x85"
    assert unlocked.status == TokenStatus.PAYMENT_ALLOWED
    assert (deleted.code, deleted.status) == (NfcResultCode.SUCCESS, TokenStatus.NO_CARD)
    at_mastercard = stack.ant.mastercard.token(token.reference)
    assert at_mastercard is not None and at_mastercard.state is TokenState.DELETED
