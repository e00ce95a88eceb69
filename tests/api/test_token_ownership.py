"""Issue 13, items 4 and 5: a token is its activation's customer's, and binding one to a device needs the PIN.

The reproductions replayed, and what they must get now:

* ``GET /app/v1/nfc/tokens/<anything>`` started a ``token/<anything>`` workflow that ran forever:
  every token endpoint answers 404 for a reference no activation recorded, and starts nothing;
* a token with no owner (a notice without ``customerId``) could be read, tap-reported and have its
  credentials fetched by every signed-in user: a token is served only to the customer recorded as its
  owner (a legacy workflow without one is nobody's);
* the lock or delete of an unknown token answered 502: 404;
* NFC activation bound a payment token to a new device with the session alone: a manual start and a
  silent run's confirmation need the wallet PIN in the same request;
* nothing bounded how many devices one customer activates: a quota (``MPP_NFC_MAX_DEVICES``), 409 past it;
* a tap's pay was trusted whatever the token: its owner, state and ATC are cross-checked (F with
  RISK_REJECT or UNAVAILABLE_PAYMENT_METHOD) and no money moves.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.service import RPCError

from alipayplus import Amount, PayRequest
from api.services import Services
from sandbox.alipayplus.driver import nfc_pay_request
from tests.conftest import new_user
from wallet.ledger import Ledger
from wallet.nfc_tokens import TokenOwnerRecord
from wallet.records import AppSession, NfcTokenStatus
from wallet.secrets import token_digest
from wallet.settings import Settings
from workflows.token import TokenStart, TokenWorkflow

from .conftest import AlipayPlusCaller, new_id, result_of
from .test_nfc import PIN, session

pytestmark = pytest.mark.timeout(60)

PIN_CUSTOMER = "2160220037535021"  # the demo PIN user, whom ``session`` signs in
KRW_LOGIN = "82-1012345678"  # another demo user with the same PIN
OTP_CUSTOMER = "2160220037535020"  # seed 004's sample user: no PIN
PRICE = Amount(currency="IDR", value=8_000)
TOKEN_PATHS = ["", "/taps", "/credentials", "/replenish", "/lock", "/unlock"]


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def a_reference() -> str:
    return f"DAPLMC{uuid.uuid4().hex[:24]}"


async def signed_in(api: httpx.AsyncClient, login_id: str) -> dict[str, str]:
    answer = await api.post("/app/v1/login", json={"loginId": login_id, "pin": PIN})
    api.cookies.clear()
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['sessionToken']}"}


async def every_token_call(api: httpx.AsyncClient, reference: str, headers: dict[str, str]) -> list[int]:
    path = f"/app/v1/nfc/tokens/{reference}"
    body: dict[str, Any] = {"credentials": [{"atc": 1, "singleUseKey": "00" * 16}]}
    tap = {"atc": 1, "tappedAt": "2026-11-22T13:00:00+08:00"}
    answers = [
        await api.get(path, headers=headers),
        await api.post(f"{path}/taps", json=tap, headers=headers),
        await api.post(f"{path}/credentials", json=body, headers=headers),
        await api.post(f"{path}/replenish", headers=headers),
        await api.post(f"{path}/lock", headers=headers),
        await api.post(f"{path}/unlock", headers=headers),
        await api.delete(path, headers=headers),
    ]
    return [answer.status_code for answer in answers]


async def assert_no_workflow(client: Client, reference: str) -> None:
    with pytest.raises(RPCError):
        await client.get_workflow_handle(f"token/{reference}").describe()


# --- item 4: ownership ---------------------------------------------------------------------------


async def test_an_unknown_token_is_not_found_and_starts_no_workflow(api: httpx.AsyncClient, client: Client) -> None:
    reference = a_reference()
    assert await every_token_call(api, reference, await session(api)) == [404] * 7  # lock/delete: not 502
    await assert_no_workflow(client, reference)


async def test_another_customers_token_is_not_found(app: FastAPI, api: httpx.AsyncClient, client: Client) -> None:
    reference = a_reference()
    assert services_of(app).nfc_tokens.record_owner(
        TokenOwnerRecord(token_reference_id=reference, customer_id=PIN_CUSTOMER, device_id="ab" * 32)
    )
    stranger = await signed_in(api, KRW_LOGIN)
    assert await every_token_call(api, reference, stranger) == [404] * 7
    await assert_no_workflow(client, reference)
    owner = await session(api)
    shown = await api.get(f"/app/v1/nfc/tokens/{reference}", headers=owner)
    assert shown.status_code == 200 and shown.json()["customerId"] == PIN_CUSTOMER


async def test_a_token_workflow_without_an_owner_is_nobodys(
    api: httpx.AsyncClient, client: Client, settings: Settings
) -> None:
    """A workflow started before owners were recorded, from a notice without customerId."""
    reference = a_reference()
    await client.start_workflow(
        TokenWorkflow.run,
        TokenStart(token_reference_id=reference),
        id=f"token/{reference}",
        task_queue=settings.temporal_task_queue,
    )
    assert await every_token_call(api, reference, await session(api)) == [404] * 7


# --- item 5: the PIN binds a device ---------------------------------------------------------------


def device() -> str:
    return uuid.uuid4().hex * 2


async def test_a_manual_activation_needs_the_wallet_pin(api: httpx.AsyncClient, client: Client) -> None:
    headers = await session(api)
    fingerprint = device()
    missing = await api.post("/app/v1/nfc/activations", json={"deviceId": fingerprint}, headers=headers)
    wrong = await api.post("/app/v1/nfc/activations", json={"deviceId": fingerprint, "pin": "135791"}, headers=headers)
    assert (missing.status_code, wrong.status_code) == (401, 401), (missing.text, wrong.text)
    assert "PIN" in missing.json()["detail"] and wrong.json()["detail"] == "Wrong PIN."
    with pytest.raises(RPCError):  # nothing started
        await client.get_workflow_handle(f"activation/{PIN_CUSTOMER}/{fingerprint}").describe()


async def test_a_wrong_pins_401_is_told_apart_from_a_lost_sessions(api: httpx.AsyncClient) -> None:
    """The phone's SDK asks for the PIN again on the first, signs in again on the second: only a
    refused session carries WWW-Authenticate."""
    body = {"deviceId": device(), "pin": "135791"}
    wrong_pin = await api.post("/app/v1/nfc/activations", json=body, headers=await session(api))
    no_session = await api.post("/app/v1/nfc/activations", json=body, headers={"Authorization": "Bearer gone"})
    assert (wrong_pin.status_code, no_session.status_code) == (401, 401)
    assert "www-authenticate" not in wrong_pin.headers and no_session.headers["www-authenticate"] == "Bearer"


async def test_a_silent_activations_confirmation_needs_the_wallet_pin(api: httpx.AsyncClient) -> None:
    headers = await session(api)
    path = f"/app/v1/nfc/activations/{device()}/confirm"
    assert (await api.post(path, headers=headers)).status_code == 422  # no body: the PIN is required
    wrong = await api.post(path, json={"pin": "135791"}, headers=headers)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Wrong PIN."


async def test_a_user_without_a_pin_cannot_bind_a_device(api: httpx.AsyncClient, engine: Engine) -> None:
    """Seed 004's sample user pays by SMS OTP and has no PIN; signed in some other way (a session row)."""
    token = secrets.token_urlsafe(32)
    with Session(engine) as db:
        expires = datetime.now(UTC) + timedelta(hours=1)
        db.add(AppSession(token_digest=token_digest(token), customer_id=OTP_CUSTOMER, expires_at=expires))
        db.commit()
    answer = await api.post(
        "/app/v1/nfc/activations",
        json={"deviceId": device(), "pin": PIN},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 403 and "PIN" in answer.json()["detail"]


async def test_devices_past_the_quota_are_refused_and_a_deleted_token_frees_one(
    app: FastAPI, api: httpx.AsyncClient, client: Client, settings: Settings
) -> None:
    tokens = services_of(app).nfc_tokens
    headers = await signed_in(api, KRW_LOGIN)
    krw = "2160220037535031"
    used = [device() for _ in range(settings.nfc_max_devices)]
    assert all(tokens.start_device(krw, fingerprint) for fingerprint in used)  # earlier activations
    extra = device()

    refused = await api.post("/app/v1/nfc/activations", json={"deviceId": extra, "silent": True}, headers=headers)

    assert refused.status_code == 409 and "devices" in refused.json()["detail"]
    with pytest.raises(RPCError):
        await client.get_workflow_handle(f"activation/{krw}/{extra}").describe()
    assert tokens.start_device(krw, used[0])  # a device already counted starts again
    reference = a_reference()
    assert tokens.record_owner(TokenOwnerRecord(token_reference_id=reference, customer_id=krw, device_id=used[0]))
    tokens.mirror_status(reference, NfcTokenStatus.DELETED)
    assert tokens.start_device(krw, extra)


# --- item 4: a tap's pay, cross-checked ------------------------------------------------------------


async def test_a_taps_pay_is_cross_checked_against_the_token_record(
    app: FastAPI, alipay: AlipayPlusCaller, engine: Engine, database: Ledger, client: Client
) -> None:
    tokens = services_of(app).nfc_tokens
    payer, other = new_user(engine, database, 100_000), new_user(engine, database, 100_000)
    reference = a_reference()
    assert tokens.record_owner(TokenOwnerRecord(token_reference_id=reference, customer_id=payer))

    async def pay(customer_id: str, atc: int, request_id: str | None = None) -> tuple[str, str]:
        request = nfc_pay_request(request_id or new_id("nfc"), customer_id, reference, PRICE, atc=atc)
        return result_of(await alipay.call(PayRequest.PATH, request.to_wire()))

    balances = (database.balance(Ledger.user_account_id(payer)), database.balance(Ledger.user_account_id(other)))
    assert await pay(other, 1) == ("F", "RISK_REJECT")  # the acquirer named someone else for our token
    first = new_id("nfc")
    assert await pay(payer, 2, first) == ("S", "SUCCESS")
    assert await pay(payer, 2, first) == ("S", "SUCCESS")  # Alipay+ resends the same pay: the same answer
    assert await pay(payer, 2) == ("F", "RISK_REJECT")  # a replayed tap: ATC 2 paid already
    tokens.mirror_status(reference, NfcTokenStatus.LOCKED)
    assert await pay(payer, 3) == ("F", "UNAVAILABLE_PAYMENT_METHOD")  # locked: the SDK's 10008

    assert database.balance(Ledger.user_account_id(payer)) == balances[0] - PRICE.value  # the one good tap
    assert database.balance(Ledger.user_account_id(other)) == balances[1]
