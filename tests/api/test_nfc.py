"""The phone's NFC calls on our API: the session rule, the fingerprint rule, the proxy's limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from api.main import create_app
from sandbox.alipayplus.app import create_app as create_sandbox_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.code_service import CodeService
from sandbox.nfc import SandboxAntNfc, SandboxMastercard
from wallet.nfc_tokens import NfcTokens, TokenOwnerRecord
from wallet.settings import Settings

from .conftest import code_service_transport

PIN_USER, PIN = "852-11112222", "246810"
PIN_CUSTOMER = "2160220037535021"
DEVICE = "ab" * 32  # a SHA-256 digest in hex


async def session(api: httpx.AsyncClient) -> dict[str, str]:
    response = await api.post("/app/v1/login", json={"loginId": PIN_USER, "pin": PIN})
    assert response.status_code == 200, response.text
    api.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['sessionToken']}"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        # the binding calls with the right wallet PIN: the session alone is missing
        ("POST", "/app/v1/nfc/activations", {"deviceId": DEVICE, "pin": PIN}),
        ("GET", f"/app/v1/nfc/activations/{DEVICE}", {}),
        ("POST", f"/app/v1/nfc/activations/{DEVICE}/confirm", {"pin": PIN}),
        ("POST", "/app/v1/nfc/proxy", {}),
    ],
)
async def test_every_nfc_call_needs_the_apps_session(
    api: httpx.AsyncClient, method: str, path: str, body: dict[str, str]
) -> None:
    api.cookies.clear()
    response = await api.request(method, path, json=body)
    assert response.status_code == 401


@pytest.mark.parametrize("device_id", ["not-a-digest", "AB" * 32, "ab" * 31, "ab" * 33])
async def test_a_fingerprint_that_is_not_sha256_is_refused(api: httpx.AsyncClient, device_id: str) -> None:
    body = {"deviceId": device_id, "pin": PIN}  # with the PIN: the fingerprint alone is wrong
    response = await api.post("/app/v1/nfc/activations", json=body, headers=await session(api))
    assert response.status_code == 422 and "deviceId" in response.text


async def test_an_activation_never_started_is_not_found(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/app/v1/nfc/activations/{'cd' * 32}", headers=await session(api))
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (json.dumps({"api": "transferAllMoney", "requestId": "1"}), 400),
        ("not json", 400),
    ],
    ids=["unknown api", "header not JSON"],
)
async def test_the_proxy_forwards_only_sdk_requests(api: httpx.AsyncClient, header: str, status: int) -> None:
    body = {"deviceId": DEVICE, "sdkRequestHeader": header, "sdkRequestData": "{}"}
    response = await api.post("/app/v1/nfc/proxy", json=body, headers=await session(api))
    assert response.status_code == status and "sdkRequestHeader" in response.json()["detail"]


async def test_the_proxy_limits_request_size(api: httpx.AsyncClient, settings: Settings) -> None:
    header = json.dumps({"api": "queryToken", "requestId": "1"})
    data = "x" * (settings.nfc_max_proxy_bytes + 1)
    body = {"deviceId": DEVICE, "sdkRequestHeader": header, "sdkRequestData": data}
    response = await api.post("/app/v1/nfc/proxy", json=body, headers=await session(api))
    assert response.status_code == 413


async def test_a_malformed_proxy_request_names_the_field(api: httpx.AsyncClient) -> None:
    response = await api.post("/app/v1/nfc/proxy", json={"deviceId": DEVICE}, headers=await session(api))
    assert response.status_code == 422 and "sdkRequestHeader" in response.json()["detail"]


@pytest.fixture(scope="module")
async def nfc_api(
    settings: Settings, client: Client, worker: Worker, alipayplus: SandboxAlipayPlus
) -> AsyncIterator[tuple[httpx.AsyncClient, SandboxAntNfc]]:
    """Our API whose NFC proxy reaches the sandbox Ant server (through sdkProxy) and Mastercard."""
    ant = SandboxAntNfc(SandboxMastercard(key_size=1024))
    peers = create_sandbox_app(alipayplus, ant_nfc=ant, mastercard=ant.mastercard)
    app = create_app(
        settings,
        client,
        code_service_transport=code_service_transport(CodeService()),
        nfc_transport=httpx.ASGITransport(app=peers),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url) as http,
    ):
        yield http, ant


async def test_the_proxy_forwards_sdk_requests_unchanged_with_our_customer(
    nfc_api: tuple[httpx.AsyncClient, SandboxAntNfc],
) -> None:
    api, ant = nfc_api
    headers = await session(api)
    key = await api.post(
        "/app/v1/nfc/proxy",
        json={"deviceId": DEVICE, "sdkRequestHeader": json.dumps({"api": "getPublicKey", "requestId": "r1"})},
        headers=headers,
    )
    public_key = json.loads(key.json()["sdkResponseData"])
    data = json.dumps({"deviceFingerprint": DEVICE, "publicKeyId": public_key["publicKeyId"]})
    applied = await api.post(
        "/app/v1/nfc/proxy",
        json={
            "deviceId": DEVICE,
            "sdkRequestHeader": json.dumps({"api": "applyNfcToken", "requestId": "r2", "sdkVersion": "1.0.0"}),
            "sdkRequestData": data,
        },
        headers=headers,
    )

    assert key.status_code == 200 and "BEGIN PUBLIC KEY" in public_key["certificate"]
    assert applied.status_code == 200, applied.text
    assert json.loads(applied.json()["sdkResponseHeader"])["requestId"] == "r2"
    assert json.loads(applied.json()["sdkResponseData"])["status"] == "PENDING"
    assert [call.customer_id for call in ant.calls] == [PIN_CUSTOMER]  # added by us, from the session


async def test_tap_reports_count_once_and_only_for_the_tokens_owner(api: httpx.AsyncClient, engine: Engine) -> None:
    reference = "DAPLMC" + "0" * 20 + "tapstest"
    # what the activation workflow records once queryToken approves
    NfcTokens(engine).record_owner(TokenOwnerRecord(token_reference_id=reference, customer_id=PIN_CUSTOMER))
    owner = await session(api)
    stored = await api.post(
        f"/app/v1/nfc/tokens/{reference}/credentials",
        json={"credentials": [{"atc": atc, "singleUseKey": "00" * 16} for atc in range(1, 21)]},
        headers=owner,
    )
    for atc in (2, 1, 2):
        tap = {"atc": atc, "tappedAt": "2026-11-22T13:00:00+08:00"}
        assert (await api.post(f"/app/v1/nfc/tokens/{reference}/taps", json=tap, headers=owner)).status_code == 202
    login = await api.post("/app/v1/login", json={"loginId": "82-1012345678", "pin": PIN})
    api.cookies.clear()
    stranger = {"Authorization": f"Bearer {login.json()['sessionToken']}"}

    state = (await api.get(f"/app/v1/nfc/tokens/{reference}", headers=owner)).json()
    foreign = await api.get(f"/app/v1/nfc/tokens/{reference}", headers=stranger)

    assert stored.status_code == 200 and state["usedAtcs"] == [1, 2] and state["taps"] == 2
    assert foreign.status_code == 404
