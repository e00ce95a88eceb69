"""The NFC SDK's phone side against a fake of our API's activation endpoints (a small state
machine walking the workflow's 11 steps and asking the phone for its three device actions, and
checking the wallet PIN that binds the card to the phone as our API does)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hce_device.nfc_sdk import (
    ActivationProgress,
    ActivationResult,
    AlipayPlusNfcSdk,
    ApplyCardActivity,
    NfcDevice,
    NFCRequestProxy,
    NfcResultCode,
    NfcSdkError,
    PinProblem,
    SettingsRequired,
    TokenStatus,
)
from hce_device.secure_store import DeviceKeystore, SecureStore

API = "http://mpp.test"
SESSION = "session-1"
PIN = "246810"  # the demo users' wallet PIN (wallet.users.DEMO_PIN)
WRONG_PIN = "135790"
MAX_WRONG_PINS = 3  # the fake's guessing limit: then 429 with Retry-After
QUOTA_FULL = "Too many devices: delete the token on another device first."
FINGERPRINT = hashlib.sha256(b"android-id:com.mpp.wallet").hexdigest()
MANUAL_START = {"deviceId": FINGERPRINT, "silent": False, "pin": PIN}  # what the user's apply posts
PAN = "5204731600001234"
SUK = "00112233445566778899aabbccddeeff"
TOKEN_REF = "DWSPMC000000000132d72d4fcb2f4136"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
STEPS_TOTAL = 11
STORE_TOKEN_AT, ACTIVATE_AT, STORE_CREDENTIALS_AT, NTU_AT = 6, 9, 11, 8


@dataclass
class FakeActivation:
    """One activation workflow as the phone sees it through our API."""

    silent: bool
    fail_at: int | None = None
    step: int = 1
    phase: str = "RUNNING"
    status: int = 11
    failure: str | None = None
    action: dict[str, Any] | None = None
    confirmed: bool = False

    def progress(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "phase": self.phase,
            "step": self.step,
            "stepsTotal": STEPS_TOTAL,
            "stepName": f"step {self.step}",
            "failure": self.failure,
            "tokenReferenceId": TOKEN_REF if self.step >= 5 else None,
            "deviceAction": self.action,
        }

    def advance(self) -> None:
        """One poll's worth of server work: the next step, unless waiting on the phone or the user."""
        if self.phase != "RUNNING":
            return
        self.step += 1
        if self.step == self.fail_at:
            self.phase, self.status, self.failure = "FAILED", 0, f"step {self.step}: refused (DECLINED)"
        elif self.step == STORE_TOKEN_AT:
            self._ask("STORE_TOKEN", {"tokenReferenceId": TOKEN_REF, "cardProfile": card_profile()})
        elif self.step == NTU_AT and self.silent and not self.confirmed:
            self.phase, self.status = "WAITING_FOR_CONFIRMATION", 21
        elif self.step == ACTIVATE_AT:
            self._ask("ACTIVATE_LOCAL_TOKEN", {"tokenReferenceId": TOKEN_REF})
        elif self.step == STORE_CREDENTIALS_AT:
            self._ask("STORE_CREDENTIALS", {"credentials": credentials(3)})

    def _ask(self, step: str, payload: dict[str, Any]) -> None:
        self.phase, self.action = "WAITING_FOR_DEVICE", {"step": step, "payload": payload}

    def device(self, step: str, ok: bool) -> None:
        if self.action is None or self.action["step"] != step:
            return
        self.action = None
        if not ok:
            self.phase, self.status, self.failure = "FAILED", 0, f"{step}: the phone could not do it"
        elif step == "STORE_CREDENTIALS":
            self.phase, self.status = "DONE", 2
        else:
            self.phase = "RUNNING"

    def confirm(self) -> None:
        if self.phase == "WAITING_FOR_CONFIRMATION":
            self.confirmed, self.phase, self.status = True, "RUNNING", 11
            self.advance()


def card_profile() -> dict[str, Any]:
    return {
        "tokenPan": PAN,
        "panSequenceNumber": "00",
        "expiryDate": "2912",
        "aid": "A0000000041010",
        "issuerMasterKeyId": "imk-1",
    }


def credentials(count: int, expires: datetime = NOW + timedelta(days=30)) -> list[dict[str, Any]]:
    return [{"atc": atc, "singleUseKey": SUK, "expiresAt": expires.isoformat()} for atc in range(1, count + 1)]


@dataclass
class FakeApi:
    """Our API's phone endpoints for NFC: activations (the manual start and a confirmation need the
    user's wallet PIN) and the SDK proxy."""

    fail_at: list[int | None] = field(default_factory=list)  # per started activation, in order
    proxy_status: int = 200
    wallet_pin: str | None = PIN  # None: the user has no wallet PIN (403)
    device_quota_full: bool = False  # 409 on every start: the customer has too many devices
    activations: dict[str, FakeActivation] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    started: int = 0
    wrong_pins: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body: Any = json.loads(request.content) if request.content else {}
        path = request.url.path
        self.requests.append((request.method, path, body))
        if request.headers.get("Authorization") != f"Bearer {SESSION}":  # as our API: with WWW-Authenticate
            return httpx.Response(401, json={"detail": "Sign in first."}, headers={"WWW-Authenticate": "Bearer"})
        if path == "/app/v1/nfc/proxy":
            if self.proxy_status != 200:
                return httpx.Response(self.proxy_status, json={"detail": "upstream failed"})
            header = json.loads(body["sdkRequestHeader"])
            return httpx.Response(
                200,
                json={
                    "sdkResponseHeader": json.dumps({**header, "code": "SUCCESS"}),
                    "sdkResponseData": json.dumps({"echo": json.loads(body["sdkRequestData"])}),
                },
            )
        if request.method == "POST" and path == "/app/v1/nfc/activations":
            refused = None if body["silent"] else self._step_up(body)
            if refused is not None:
                return refused
            if self.device_quota_full:
                return httpx.Response(409, json={"detail": QUOTA_FULL})
            existing = self.activations.get(body["deviceId"])
            if existing is None or existing.phase in ("DONE", "FAILED"):
                fail_at = self.fail_at[self.started] if self.started < len(self.fail_at) else None
                self.started += 1
                existing = self.activations[body["deviceId"]] = FakeActivation(bool(body["silent"]), fail_at)
            return httpx.Response(200, json=existing.progress())
        parts = path.removeprefix("/app/v1/nfc/activations/").split("/")
        activation = self.activations.get(parts[0])
        if activation is None:
            return httpx.Response(404, json={"detail": "no activation"})
        if request.method == "GET" and len(parts) == 1:
            activation.advance()
        elif parts[1:] == ["device"]:
            activation.device(body["step"], body["ok"])
            activation.advance()
        elif parts[1:] == ["confirm"]:
            if not isinstance(body, dict) or set(body) != {"pin"}:
                return httpx.Response(422, json={"detail": "body.pin: Field required"})
            refused = self._step_up(body)
            if refused is not None:
                return refused
            activation.confirm()
        else:
            return httpx.Response(404)
        return httpx.Response(200, json=activation.progress())

    def _step_up(self, body: dict[str, Any]) -> httpx.Response | None:
        """Our API's wallet PIN check (no WWW-Authenticate on its 401: the session is fine)."""
        if body.get("pin") is None:
            return httpx.Response(401, json={"detail": "Binding a device needs your wallet PIN (pin)."})
        if self.wallet_pin is None:
            return httpx.Response(403, json={"detail": "Set a wallet PIN first: binding a device needs it."})
        if self.wrong_pins >= MAX_WRONG_PINS:
            detail = "Too many wrong PINs. Try again in 300 seconds."
            return httpx.Response(429, json={"detail": detail}, headers={"Retry-After": "300"})
        if body["pin"] != self.wallet_pin:
            self.wrong_pins += 1
            return httpx.Response(401, json={"detail": "Wrong PIN."})
        self.wrong_pins = 0
        return None

    def calls(self, method: str, suffix: str) -> list[Any]:
        return [body for m, path, body in self.requests if m == method and path.endswith(suffix)]


class Fingerprints:
    def __init__(self, value: str = FINGERPRINT) -> None:
        self.value = value

    def get_device_fingerprint(self) -> str:
        return self.value


DEFAULT_FINGERPRINTS = Fingerprints()


class PinPad:
    """The app's PinPad: the user types ``typed`` in turn, then the last again (None: cancels)."""

    def __init__(self, *typed: str | None) -> None:
        self.typed: list[str | None] = list(typed) if typed else [PIN]
        self.asked = 0

    async def request_wallet_pin(self) -> str | None:
        self.asked += 1
        return self.typed[min(self.asked, len(self.typed)) - 1]


class Listener:
    def __init__(self) -> None:
        self.results: list[tuple[int, int]] = []

    def on_result(self, status: int, request_code: int) -> None:
        self.results.append((status, request_code))


class Clock:
    """A clock that the SDK's sleep moves on, so polling never waits for real."""

    def __init__(self) -> None:
        self.now = NOW
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


@dataclass
class Phone:
    sdk: AlipayPlusNfcSdk
    api: FakeApi
    clock: Clock
    store: SecureStore
    listener: Listener
    progress: list[ActivationProgress]
    activity: ApplyCardActivity
    pin_pad: PinPad | None


def make_phone(
    api: FakeApi | None = None,
    *,
    directory: Path | None = None,
    device: NfcDevice | None = None,
    fingerprints: Fingerprints | None = DEFAULT_FINGERPRINTS,
    pin_pad: PinPad | None = None,
    with_pin_pad: bool = True,
    connect: bool = True,
) -> Phone:
    api = api or FakeApi()
    pin_pad = pin_pad or (PinPad() if with_pin_pad else None)
    clock = Clock()
    keystore = DeviceKeystore(directory / "device.key" if directory else None)
    store = SecureStore(keystore, directory / "records" if directory else None)
    sdk = AlipayPlusNfcSdk(
        API,
        device=device or NfcDevice(),
        fingerprint_service=fingerprints,
        store=store,
        pin_pad=pin_pad,
        transport=httpx.MockTransport(api),
        clock=clock,
        sleep=clock.sleep,
    )
    assert sdk.init() is NfcResultCode.SUCCESS
    if connect:
        assert sdk.connect(SESSION) is NfcResultCode.SUCCESS
    listener, progress = Listener(), list[ActivationProgress]()
    activity = ApplyCardActivity(sdk, listener, progress.append)
    return Phone(sdk, api, clock, store, listener, progress, activity, pin_pad)


async def apply(phone: Phone, request_code: int = 7) -> ActivationResult:
    return await phone.activity.apply(object(), request_code, "com.mpp.wallet.HceService")


# --- connected state ---------------------------------------------------------------------------


async def test_nothing_works_before_connect() -> None:
    phone = make_phone(connect=False)
    assert phone.sdk.is_payment_available() == -2
    result = await apply(phone)
    assert (result.code, result.status) == (NfcResultCode.SDK_NOT_CONNECTED, -2)
    assert result.code == 10006
    assert (await phone.sdk.activate_silently()).code is NfcResultCode.SDK_NOT_CONNECTED
    assert (await phone.sdk.confirm_activation()).code is NfcResultCode.SDK_NOT_CONNECTED
    with pytest.raises(NfcSdkError) as raised:
        await NFCRequestProxy(phone.sdk).proxy("{}", "{}")
    assert raised.value.code is NfcResultCode.SDK_NOT_CONNECTED
    assert phone.api.requests == [] and phone.listener.results == []


async def test_connect_needs_init_and_a_session() -> None:
    sdk = AlipayPlusNfcSdk(
        API, device=NfcDevice(), fingerprint_service=Fingerprints(), store=SecureStore(DeviceKeystore())
    )
    assert sdk.connect(SESSION) is NfcResultCode.INNER_EXCEPTION
    sdk.init()
    assert sdk.connect("") is NfcResultCode.INVALID_INPUT_PARAMETERS
    assert sdk.is_payment_available() == -2
    assert sdk.connect(SESSION) is NfcResultCode.SUCCESS
    assert sdk.is_payment_available() == 0


async def test_after_disconnect_the_sdk_is_closed_again() -> None:
    phone = make_phone()
    assert (await apply(phone)).status == 2
    assert phone.sdk.disconnect() is NfcResultCode.SUCCESS
    assert phone.sdk.is_payment_available() == -2
    sent = len(phone.api.requests)
    assert (await apply(phone)).code is NfcResultCode.SDK_NOT_CONNECTED
    with pytest.raises(NfcSdkError):
        await NFCRequestProxy(phone.sdk).proxy("{}", "{}")
    assert len(phone.api.requests) == sent
    phone.sdk.connect(SESSION)  # the token stayed on the phone
    assert phone.sdk.is_payment_available() == 2


async def test_a_session_our_api_refuses_disconnects_the_sdk() -> None:
    phone = make_phone()
    phone.sdk.connect("revoked-session")
    result = await apply(phone)
    assert result.code is NfcResultCode.SDK_NOT_CONNECTED
    assert phone.sdk.connected is False
    assert phone.sdk.is_payment_available() == -2


# --- fingerprint and preconditions -------------------------------------------------------------


@pytest.mark.parametrize(
    "fingerprint",
    [
        hashlib.md5(b"x").hexdigest(),  # 32 hex: not SHA-256
        "android-id-1234",
        "z" * 64,
        FINGERPRINT + "0",
        "",
    ],
)
async def test_a_fingerprint_that_is_not_sha256_is_a_params_error(fingerprint: str) -> None:
    phone = make_phone(fingerprints=Fingerprints(fingerprint))
    result = await apply(phone)
    assert result.code is NfcResultCode.PARAMS_ERROR
    assert result.code == 10011
    assert phone.api.requests == [] and phone.listener.results == []
    assert phone.sdk.is_payment_available() == 0


async def test_no_fingerprint_service_is_a_params_error() -> None:
    phone = make_phone(fingerprints=None)
    assert (await apply(phone)).code is NfcResultCode.PARAMS_ERROR
    assert (await phone.sdk.activate_silently()).code is NfcResultCode.PARAMS_ERROR
    assert phone.api.requests == []


async def test_an_uppercase_sha256_is_sent_lowercase() -> None:
    phone = make_phone(fingerprints=Fingerprints(FINGERPRINT.upper()))
    assert (await apply(phone)).status == 2
    assert phone.api.calls("POST", "/app/v1/nfc/activations") == [MANUAL_START]


@pytest.mark.parametrize(
    ("device", "required"),
    [
        (NfcDevice(nfc_enabled=False), SettingsRequired.TURN_ON_NFC),
        (NfcDevice(default_payment_app=False), SettingsRequired.SET_DEFAULT_PAYMENT_APP),
    ],
)
async def test_the_configuration_page_comes_first(device: NfcDevice, required: SettingsRequired) -> None:
    phone = make_phone(device=device)
    result = await apply(phone)
    assert result.settings_required is required
    assert result.status == 0 and result.code is not NfcResultCode.SUCCESS
    assert phone.api.requests == [] and phone.listener.results == []
    # the user fixes the settings on the page; applying again runs the activation
    device.nfc_enabled = device.default_payment_app = True
    assert (await apply(phone)).status == 2


async def test_offline_phone_does_not_start() -> None:
    phone = make_phone(device=NfcDevice(online=False))
    result = await apply(phone)
    assert result.code is NfcResultCode.NETWORK_EXCEPTION
    assert phone.api.requests == []


# --- manual activation -------------------------------------------------------------------------


async def test_manual_activation_end_to_end(tmp_path: Path) -> None:
    phone = make_phone(directory=tmp_path)
    assert phone.sdk.is_payment_available() == 0
    result = await apply(phone, request_code=42)

    assert result.code is NfcResultCode.SUCCESS and result.status == 2
    assert phone.listener.results == [(2, 42)]
    assert phone.sdk.is_payment_available() == 2
    steps = [p.step for p in phone.progress]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == STEPS_TOTAL
    assert set(steps) == set(range(1, STEPS_TOTAL + 1))  # every step shown, none backwards
    assert {p.steps_total for p in phone.progress} == {STEPS_TOTAL}
    assert phone.progress[-1].status == 2
    assert phone.api.calls("POST", "/app/v1/nfc/activations") == [MANUAL_START]
    assert phone.api.calls("POST", "/device") == [
        {"step": "STORE_TOKEN", "ok": True},
        {"step": "ACTIVATE_LOCAL_TOKEN", "ok": True},
        {"step": "STORE_CREDENTIALS", "ok": True},
    ]
    assert phone.clock.sleeps and set(phone.clock.sleeps) == {0.2}
    # the token, its profile and the credentials are on the phone, encrypted at rest
    token = phone.store.get("token")
    assert token is not None and token["active"] is True and token["cardProfile"]["tokenPan"] == PAN
    assert len((phone.store.get("credentials") or {})["credentials"]) == 3
    files = sorted((tmp_path / "records").iterdir())
    assert [f.name for f in files] == ["credentials.sealed", "token.sealed"]
    for file in files:
        raw = file.read_bytes()
        assert PAN.encode() not in raw and SUK.encode() not in raw and TOKEN_REF.encode() not in raw


@pytest.mark.parametrize("fail_at", [4, 7, 10])  # before the token, after storing it, after activating it
async def test_a_failed_activation_leaves_no_card(fail_at: int) -> None:
    phone = make_phone(FakeApi(fail_at=[fail_at]))
    result = await apply(phone, request_code=3)
    assert result.code is NfcResultCode.PROVISION_FAILED
    assert result.status == 0 and result.failure == f"step {fail_at}: refused (DECLINED)"
    assert phone.listener.results == [(0, 3)]
    assert phone.sdk.is_payment_available() == 0
    assert phone.store.get("token") is None and phone.store.get("credentials") is None
    assert [p.step for p in phone.progress][-1] == fail_at


async def test_a_token_the_phone_cannot_store_is_reported_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    phone = make_phone(api)
    original = FakeActivation._ask

    def broken_profile(self: FakeActivation, step: str, payload: dict[str, Any]) -> None:
        if step == "STORE_TOKEN":
            payload = {"tokenReferenceId": TOKEN_REF, "cardProfile": {}}
        original(self, step, payload)

    monkeypatch.setattr(FakeActivation, "_ask", broken_profile)
    result = await apply(phone)
    assert api.calls("POST", "/device") == [{"step": "STORE_TOKEN", "ok": False}]
    assert phone.listener.results == [(0, 7)]
    assert result.status == 0 and phone.sdk.is_payment_available() == 0


async def test_the_network_failing_mid_activation_is_a_network_exception() -> None:
    api = FakeApi()
    polls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        if request.method == "GET":
            polls += 1
            if polls == 3:
                raise httpx.ConnectError("no route", request=request)
        return api(request)

    phone = make_phone(api)
    phone.sdk._api._transport = httpx.MockTransport(flaky)  # the phone loses its network once
    result = await apply(phone)
    assert result.code is NfcResultCode.NETWORK_EXCEPTION
    assert result.status == 11  # the workflow goes on at our server; applying again joins it
    assert phone.listener.results == [(11, 7)]
    assert (await apply(phone)).status == 2
    assert api.started == 1


# --- silent activation -------------------------------------------------------------------------


async def test_silent_activation_waits_for_confirmation_then_completes() -> None:
    phone = make_phone()
    result = await phone.sdk.activate_silently()
    assert (result.status, result.code) == (21, NfcResultCode.SUCCESS)
    assert phone.sdk.is_payment_available() == 21
    assert phone.listener.results == []
    assert phone.api.calls("POST", "/app/v1/nfc/activations") == [{"deviceId": FINGERPRINT, "silent": True}]
    assert phone.api.calls("POST", "/device") == [{"step": "STORE_TOKEN", "ok": True}]
    # running it again changes nothing until the user confirms
    assert (await phone.sdk.activate_silently()).status == 21

    confirmed = await phone.sdk.confirm_activation()
    assert (confirmed.status, confirmed.code) == (2, NfcResultCode.SUCCESS)
    assert phone.sdk.is_payment_available() == 2
    assert phone.api.calls("POST", "/confirm") == [{"pin": PIN}]
    assert [b["step"] for b in phone.api.calls("POST", "/device")] == [
        "STORE_TOKEN",
        "ACTIVATE_LOCAL_TOKEN",
        "STORE_CREDENTIALS",
    ]


async def test_apply_after_a_silent_run_is_the_users_confirmation() -> None:
    phone = make_phone()
    assert (await phone.sdk.activate_silently()).status == 21
    result = await apply(phone, request_code=9)
    assert result.status == 2 and phone.listener.results == [(2, 9)]
    assert phone.api.started == 1 and phone.api.calls("POST", "/confirm") == [{"pin": PIN}]


async def test_confirm_without_a_waiting_activation_is_refused() -> None:
    phone = make_phone()
    result = await phone.sdk.confirm_activation()
    assert result.code is NfcResultCode.INVALID_INPUT_PARAMETERS and result.status == 0
    assert phone.api.requests == []


async def test_silent_failure_then_manual_activation_succeeds() -> None:
    phone = make_phone(FakeApi(fail_at=[5, None]))
    failed = await phone.sdk.activate_silently()
    assert (failed.status, failed.code) == (0, NfcResultCode.PROVISION_FAILED)
    assert phone.listener.results == []
    assert phone.sdk.is_payment_available() == 0

    result = await apply(phone)
    assert result.status == 2 and phone.listener.results == [(2, 7)]
    assert phone.api.calls("POST", "/app/v1/nfc/activations") == [
        {"deviceId": FINGERPRINT, "silent": True},
        MANUAL_START,
    ]
    assert phone.api.started == 2


async def test_a_silent_run_out_of_time_is_still_in_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    phone = make_phone(api)
    with monkeypatch.context() as slow:  # the server makes no progress for a while
        slow.setattr(FakeActivation, "advance", lambda self: None)
        result = await phone.sdk.activate_silently()
    assert (result.status, result.code) == (11, NfcResultCode.ACTIVATION_IN_PROGRESS)
    assert phone.clock.now - NOW >= timedelta(seconds=120)
    assert phone.sdk.is_payment_available() == 11
    # the user opens the NFC page and applies: the SDK waits for the running activation
    assert (await apply(phone)).status == 2
    assert api.started == 1


# --- status from the store ---------------------------------------------------------------------


async def test_status_follows_locks_and_credentials() -> None:
    phone = make_phone()
    await apply(phone)
    assert phone.sdk.is_payment_available() == 2
    phone.store.put("lock", {"local": True})
    assert phone.sdk.is_payment_available() == 4
    phone.store.put("lock", {"server": True, "local": True})
    assert phone.sdk.is_payment_available() == 3
    phone.store.delete("lock")
    phone.store.put("credentials", {"credentials": credentials(2, expires=NOW - timedelta(seconds=1))})
    assert phone.sdk.is_payment_available() == 1
    phone.store.put("credentials", {"credentials": [{**c, "used": True} for c in credentials(2)]})
    assert phone.sdk.is_payment_available() == 1
    assert (await apply(phone)).status == 1  # a card exists: apply does not start another activation
    assert phone.api.started == 1


async def test_a_tampered_store_cannot_answer(tmp_path: Path) -> None:
    phone = make_phone(directory=tmp_path)
    await apply(phone)
    path = tmp_path / "records" / "token.sealed"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert phone.sdk.is_payment_available() == TokenStatus.QUERY_FAILED == -1
    result = await apply(phone)
    assert result.code is NfcResultCode.INNER_EXCEPTION and result.status == -1


# --- the request proxy -------------------------------------------------------------------------


async def test_the_proxy_forwards_the_sdk_envelope() -> None:
    phone = make_phone()
    header = json.dumps({"api": "queryToken", "requestId": "r-1", "sdkVersion": "1.0.0"})
    data = json.dumps({"tokenRequestId": "tr-1"})
    response_header, response_data = await NFCRequestProxy(phone.sdk).proxy(header, data)
    assert json.loads(response_header) == {
        "api": "queryToken",
        "requestId": "r-1",
        "sdkVersion": "1.0.0",
        "code": "SUCCESS",
    }
    assert json.loads(response_data) == {"echo": {"tokenRequestId": "tr-1"}}
    assert phone.api.calls("POST", "/app/v1/nfc/proxy") == [
        {"deviceId": FINGERPRINT, "sdkRequestHeader": header, "sdkRequestData": data}
    ]


async def test_an_upstream_failure_is_a_network_exception() -> None:
    phone = make_phone(FakeApi(proxy_status=502))
    with pytest.raises(NfcSdkError) as raised:
        await NFCRequestProxy(phone.sdk).proxy("{}", "{}")
    assert raised.value.code is NfcResultCode.NETWORK_EXCEPTION


# --- the wallet PIN step-up for binding the card (issue 13) ------------------------------------


def stored_records(store: SecureStore) -> str:
    """Every record the SDK keeps, decrypted, as one text to search."""
    names = ("token", "credentials", "activation", "lock", "taps")
    return json.dumps({name: store.get(name) for name in names})


async def test_the_pin_goes_with_the_manual_start_and_the_confirmation_never_the_silent_start() -> None:
    phone = make_phone()
    assert phone.pin_pad is not None
    assert (await phone.sdk.activate_silently()).status == 21
    assert phone.pin_pad.asked == 0  # the background run on login asks the user nothing
    assert phone.api.calls("POST", "/app/v1/nfc/activations") == [{"deviceId": FINGERPRINT, "silent": True}]

    assert (await phone.sdk.confirm_activation()).status == 2
    assert phone.pin_pad.asked == 1
    assert phone.api.calls("POST", "/confirm") == [{"pin": PIN}]
    # the phone's device steps and status polls never carry it
    others = [body for method, path, body in phone.api.requests if not path.endswith(("/activations", "/confirm"))]
    assert others and all("pin" not in body for body in others)


async def test_joining_a_silent_run_confirms_with_the_pin_typed_for_the_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    phone = make_phone()
    assert phone.pin_pad is not None
    with monkeypatch.context() as slow:  # the silent run on login runs out of time before its NTU
        slow.setattr(FakeActivation, "advance", lambda self: None)
        assert (await phone.sdk.activate_silently()).status == 11
    result = await apply(phone)
    assert (result.code, result.status) == (NfcResultCode.SUCCESS, 2)
    assert phone.pin_pad.asked == 1  # one apply, one PIN: the start and the confirmation both use it
    assert phone.api.calls("POST", "/app/v1/nfc/activations") == [
        {"deviceId": FINGERPRINT, "silent": True},
        MANUAL_START,
    ]
    assert phone.api.calls("POST", "/confirm") == [{"pin": PIN}]
    assert phone.api.started == 1


async def test_a_card_on_the_phone_asks_no_pin() -> None:
    phone = make_phone()
    assert phone.pin_pad is not None
    assert (await apply(phone)).status == 2
    sent = len(phone.api.requests)
    assert (await apply(phone)).status == 2
    assert phone.pin_pad.asked == 1 and len(phone.api.requests) == sent


async def test_a_wrong_pin_binds_nothing_and_keeps_the_session() -> None:
    phone = make_phone(pin_pad=PinPad(WRONG_PIN, PIN))
    result = await apply(phone, request_code=5)
    assert (result.code, result.status) == (NfcResultCode.PROVISION_FAILED, 0)
    assert (result.pin_problem, result.failure) == (PinProblem.WRONG, "Wrong PIN.")  # our API's message
    assert phone.listener.results == [(0, 5)]
    assert phone.sdk.connected is True  # a wrong PIN is not a lost session
    assert phone.store.get("token") is None and phone.store.get("credentials") is None
    assert phone.sdk.is_payment_available() == 0 and phone.api.started == 0
    # the user types it right: the activation runs
    assert (await apply(phone)).status == 2


async def test_a_cancelled_pin_pad_sends_nothing() -> None:
    phone = make_phone(pin_pad=PinPad(None))
    result = await apply(phone, request_code=6)
    assert (result.code, result.status) == (NfcResultCode.PROVISION_FAILED, 0)
    assert result.pin_problem is PinProblem.CANCELLED and result.failure == "the user cancelled the wallet PIN"
    assert phone.listener.results == [(0, 6)]
    assert phone.api.requests == []
    assert phone.store.get("token") is None and phone.sdk.is_payment_available() == 0


@pytest.mark.parametrize("typed", [None, WRONG_PIN], ids=["cancelled", "wrong"])
async def test_a_confirmation_without_the_right_pin_leaves_the_card_unusable(typed: str | None) -> None:
    phone = make_phone(pin_pad=PinPad(typed, PIN))
    assert (await phone.sdk.activate_silently()).status == 21
    result = await phone.sdk.confirm_activation()
    assert (result.code, result.status) == (NfcResultCode.PROVISION_FAILED, 21)
    assert result.pin_problem is (PinProblem.CANCELLED if typed is None else PinProblem.WRONG)
    # the silent run's token stays inactive (it cannot pay), so the user can confirm again
    token = phone.store.get("token")
    assert token is not None and token["active"] is False and phone.store.get("credentials") is None
    assert phone.sdk.is_payment_available() == 21 and phone.sdk.connected is True
    assert phone.api.calls("POST", "/confirm") == ([] if typed is None else [{"pin": WRONG_PIN}])
    assert (await phone.sdk.confirm_activation()).status == 2


async def test_too_many_wrong_pins_is_a_failure_with_our_apis_wait() -> None:
    phone = make_phone(pin_pad=PinPad(WRONG_PIN))
    for _ in range(MAX_WRONG_PINS):
        assert (await apply(phone)).pin_problem is PinProblem.WRONG
    result = await apply(phone)
    assert (result.code, result.status) == (NfcResultCode.PROVISION_FAILED, 0)
    assert result.pin_problem is PinProblem.TOO_MANY_TRIES
    assert result.failure == "Too many wrong PINs. Try again in 300 seconds."
    assert phone.sdk.connected is True and phone.store.get("token") is None


async def test_a_user_without_a_wallet_pin_is_told_to_set_one() -> None:
    phone = make_phone(FakeApi(wallet_pin=None))
    result = await apply(phone)
    assert (result.code, result.pin_problem) == (NfcResultCode.PROVISION_FAILED, PinProblem.NOT_SET)
    assert result.failure == "Set a wallet PIN first: binding a device needs it."
    assert phone.store.get("token") is None


async def test_the_device_quota_is_a_failure_with_our_apis_message() -> None:
    phone = make_phone(FakeApi(device_quota_full=True))
    for result in (await apply(phone), await phone.sdk.activate_silently()):
        assert (result.code, result.status, result.pin_problem) == (NfcResultCode.PROVISION_FAILED, 0, None)
        assert result.failure == QUOTA_FULL
    assert phone.store.get("token") is None and phone.sdk.connected is True


@pytest.mark.parametrize("typed", ["12ab", "123", "1" * 13, ""])
async def test_a_pin_that_is_not_4_to_12_digits_is_not_sent(typed: str) -> None:
    phone = make_phone(pin_pad=PinPad(typed))
    result = await apply(phone)
    assert (result.code, result.pin_problem) == (NfcResultCode.PROVISION_FAILED, PinProblem.WRONG)
    assert phone.api.requests == []


async def test_without_a_pin_pad_only_the_silent_run_works() -> None:
    phone = make_phone(with_pin_pad=False)
    result = await apply(phone)
    assert result.code is NfcResultCode.PARAMS_ERROR and result.status == 0
    assert phone.api.requests == [] and phone.listener.results == []  # a params error tells no listener
    assert (await phone.sdk.activate_silently()).status == 21
    assert (await phone.sdk.confirm_activation()).code is NfcResultCode.PARAMS_ERROR
    assert phone.api.calls("POST", "/confirm") == []


async def test_a_failing_pin_pad_is_reported_not_raised() -> None:
    class BrokenPinPad(PinPad):
        async def request_wallet_pin(self) -> str | None:
            raise RuntimeError(f"keyboard crashed while holding {PIN}")

    phone = make_phone(pin_pad=BrokenPinPad())
    result = await apply(phone)
    assert result.code is NfcResultCode.PARAMS_ERROR
    assert result.failure == "the PIN pad failed: RuntimeError"  # the type only: its message may hold digits
    assert phone.api.requests == []


async def test_the_pin_is_never_logged_or_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK's, httpx's and httpcore's records, all of them
    phone = make_phone(directory=tmp_path, pin_pad=PinPad(WRONG_PIN, PIN))
    assert (await phone.sdk.activate_silently()).status == 21
    refused = await phone.sdk.confirm_activation()
    confirmed = await phone.sdk.confirm_activation()
    assert (refused.pin_problem, confirmed.status) == (PinProblem.WRONG, 2)
    assert {body["pin"] for body in phone.api.calls("POST", "/confirm")} == {WRONG_PIN, PIN}  # they were sent

    assert caplog.records  # something was logged, none of it a PIN
    for pin in (PIN, WRONG_PIN):
        assert pin not in caplog.text
        assert pin not in stored_records(phone.store)
        assert all(pin.encode() not in file.read_bytes() for file in tmp_path.rglob("*") if file.is_file())
        assert pin not in repr(vars(phone.sdk))
        assert pin not in f"{refused} {confirmed}"
