"""``make demo``'s NFC activation scenarios (seeds 000–002): a phone activates its Mastercard token.

The phone is ``hce_device.nfc_sdk.AlipayPlusNfcSdk`` (the Alipay+ NFC SDK's role) on our real
API; behind our proxy, the sandbox Ant server and Mastercard. Each scenario reports
isPaymentAvailable() along the way and the final status. ``activated_phone`` gives the NFC payment
scenarios (``devstack.demo.nfc_pay``) and ``bench.nfc_payments`` a phone ready to tap.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlmodel import Session, col, select

from hce_device.nfc_sdk import (
    CREDENTIALS,
    TOKEN,
    ActivationProgress,
    AlipayPlusNfcSdk,
    ApplyCardActivity,
    NfcDevice,
    TokenStatus,
)
from hce_device.secure_store import DeviceKeystore, SecureStore
from wallet.records import TokenActivation
from wallet.users import DEMO_PIN

from .session import Demo, Outcome, Scenario

PIN = DEMO_PIN  # the demo users' login and wallet PIN
PIN_USER, FROZEN_USER, KRW_USER = "852-11112222", "852-33334444", "82-1012345678"
KRW_CUSTOMER, FROZEN_CUSTOMER = "2160220037535031", "2160220037535022"
APDU_SERVICE = "com.mppwallet.hce.PaymentService"


@dataclass
class Fingerprint:
    """DeviceFingerPrintService: SHA-256 of an app-scoped device id."""

    device_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def get_device_fingerprint(self) -> str:
        return hashlib.sha256(f"mppwallet:{self.device_id}".encode()).hexdigest()


@dataclass
class WalletPin:
    """PinPad: the user types the wallet PIN that binds the card to the phone (``pin``; None cancels)."""

    pin: str | None = PIN

    async def request_wallet_pin(self) -> str | None:
        return self.pin


@dataclass
class Listener:
    """ActivateCardListener: status 2 would switch the app to its payment page."""

    results: list[int] = field(default_factory=list)

    def on_result(self, status: int, request_code: int) -> None:
        self.results.append(status)


def _new_sdk(api_url: str, store: SecureStore) -> AlipayPlusNfcSdk:
    return AlipayPlusNfcSdk(
        api_url,
        device=NfcDevice(nfc_enabled=True, default_payment_app=True, online=True),
        fingerprint_service=Fingerprint(),
        store=store,
        pin_pad=WalletPin(),
    )


async def _login(api_url: str, user: httpx.AsyncClient, login_id: str) -> str:
    """The wallet app's login: its session token (the shared client keeps no cookie of it)."""
    login = await user.post(f"{api_url}/app/v1/login", json={"loginId": login_id, "pin": PIN})
    login.raise_for_status()
    user.cookies.clear()
    return str(login.json()["sessionToken"])


@asynccontextmanager
async def _phone(demo: Demo, login_id: str) -> AsyncIterator[tuple[AlipayPlusNfcSdk, list[int]]]:
    """A new phone: the SDK initialised; ``statuses`` collects isPaymentAvailable() as it goes."""
    sdk = _new_sdk(demo.stack.api_url, SecureStore(DeviceKeystore()))
    statuses: list[int] = []
    try:
        sdk.init()
        statuses.append(sdk.is_payment_available())  # -2: not connected yet
        sdk.connect(await _login(demo.stack.api_url, demo.user, login_id))
        statuses.append(sdk.is_payment_available())
        yield sdk, statuses
    finally:
        await sdk.aclose()


@dataclass
class ActivatedPhone:
    """A phone whose card is active (status 2): its SDK, its secure store and its token."""

    sdk: AlipayPlusNfcSdk
    store: SecureStore
    session_token: str
    token_reference_id: str

    def unused_credentials(self) -> int:
        """Credentials on the phone no tap has used (none of the demo's expire)."""
        record = self.store.get(CREDENTIALS) or {}
        return sum(1 for credential in record.get("credentials", []) if not credential.get("used"))

    async def token_state(self, demo: Demo) -> dict[str, Any]:
        """The token as our server counts it (``GET /app/v1/nfc/tokens/{ref}``)."""
        response = await demo.user.get(
            f"{demo.stack.api_url}/app/v1/nfc/tokens/{self.token_reference_id}",
            headers={"Authorization": f"Bearer {self.session_token}"},
        )
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state


def credentials_left(state: dict[str, Any]) -> int:
    """The server's count: credentials the phone holds or held, less those a tap used."""
    return len(set(state["issuedAtcs"]) - set(state["usedAtcs"]))


@asynccontextmanager
async def activated_phone(demo: Demo, login_id: str = PIN_USER) -> AsyncIterator[ActivatedPhone]:
    """A new phone of ``login_id``, its card activated manually to status 2, ready to tap."""
    async with phone_activated_at(demo.stack.api_url, demo.user, login_id) as phone:
        yield phone


@asynccontextmanager
async def phone_activated_at(
    api_url: str, user: httpx.AsyncClient, login_id: str = PIN_USER
) -> AsyncIterator[ActivatedPhone]:
    """``activated_phone`` against any API (a stack of separate processes too): ``user`` logs in."""
    store = SecureStore(DeviceKeystore())
    sdk = _new_sdk(api_url, store)
    try:
        sdk.init()
        session_token = await _login(api_url, user, login_id)
        sdk.connect(session_token)
        result = await sdk.apply_card(11, APDU_SERVICE, Listener())
        token = store.get(TOKEN)
        if result.status != TokenStatus.PAYMENT_ALLOWED or token is None:
            raise AssertionError(f"activation ended at status {result.status}: {result.failure}")
        yield ActivatedPhone(sdk, store, session_token, str(token["tokenReferenceId"]))
    finally:
        await sdk.aclose()


def _statuses(statuses: list[int]) -> str:
    return " → ".join(str(status) for status in statuses)


def _notified(demo: Demo, fingerprint: str) -> bool:
    """Did Alipay+'s tokenActivationNotification for this phone's token reach us?"""
    with Session(demo.records) as session:
        rows = session.exec(select(TokenActivation).where(col(TokenActivation.token_data).contains(fingerprint)))
        return rows.first() is not None


# --- the scenarios --------------------------------------------------------------------------


async def manual_activation(demo: Demo) -> Outcome:
    async with _phone(demo, PIN_USER) as (sdk, statuses):
        ticks: list[ActivationProgress] = []
        listener = Listener()
        result = await ApplyCardActivity(sdk, listener, ticks.append).apply(None, 7, APDU_SERVICE)
        statuses.append(sdk.is_payment_available())
        fingerprint = sdk.device_id()
    bar = f"{max(t.step for t in ticks)}/{ticks[-1].steps_total} steps" if ticks else "no progress"
    notified = "notified" if _notified(demo, fingerprint) else "NOT notified"
    workflow_id = f"activation/…/{fingerprint[:12]}…"
    listened = f"listener {listener.results}" if listener.results != [result.status] else "listener got it"
    return Outcome(workflow_id, f"{_statuses(statuses)}, {bar}, {listened}, {notified}")


async def silent_then_confirmed(demo: Demo) -> Outcome:
    async with _phone(demo, PIN_USER) as (sdk, statuses):
        silent = await sdk.activate_silently()
        statuses.append(sdk.is_payment_available())
        confirmed = await sdk.confirm_activation()
        statuses.append(sdk.is_payment_available())
    return Outcome("—", f"{_statuses(statuses)} (silent {silent.status}, confirmed {confirmed.status})")


async def silent_failure_falls_back_to_manual(demo: Demo) -> Outcome:
    ant = demo.stack.ant_nfc
    ant.reject_customer(KRW_CUSTOMER, "issuer declined the silent attempt")
    async with _phone(demo, KRW_USER) as (sdk, statuses):
        silent = await sdk.activate_silently()
        statuses.append(sdk.is_payment_available())
        ant.accept_customer(KRW_CUSTOMER)
        manual = await sdk.apply_card(8, APDU_SERVICE, Listener())
        statuses.append(sdk.is_payment_available())
    return Outcome("—", f"{_statuses(statuses)} (silent {silent.status}, manual {manual.status})")


async def rejected_application(demo: Demo) -> Outcome:
    demo.stack.ant_nfc.reject_customer(FROZEN_CUSTOMER, "issuer declined")
    async with _phone(demo, FROZEN_USER) as (sdk, statuses):
        result = await sdk.apply_card(9, APDU_SERVICE, Listener())
        statuses.append(sdk.is_payment_available())
    reason = "rejected" if result.failure and "rejected" in result.failure else result.failure
    return Outcome("—", f"{_statuses(statuses)} ({reason})")


async def phone_without_nfc(demo: Demo) -> Outcome:
    async with _phone(demo, PIN_USER) as (sdk, statuses):
        sdk.device = NfcDevice(nfc_enabled=False, default_payment_app=True, online=True)
        result = await sdk.apply_card(10, APDU_SERVICE, Listener())
        statuses.append(sdk.is_payment_available())
    return Outcome("—", f"{_statuses(statuses)} ({result.settings_required})")


NFC_SCENARIOS = [
    Scenario(
        "NFC: manual activation (progress bar)",
        "-2 → 0 → 2, 11/11 steps, listener got it, notified",
        manual_activation,
    ),
    Scenario(
        "NFC: silent activation, then confirmation", "-2 → 0 → 21 → 2 (silent 21, confirmed 2)", silent_then_confirmed
    ),
    Scenario(
        "NFC: silent failure falls back to manual",
        "-2 → 0 → 0 → 2 (silent 0, manual 2)",
        silent_failure_falls_back_to_manual,
    ),
    Scenario("NFC: application rejected", "-2 → 0 → 0 (rejected)", rejected_application),
    Scenario("NFC: NFC switched off", "-2 → 0 → 0 (TURN_ON_NFC)", phone_without_nfc),
]
