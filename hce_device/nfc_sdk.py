"""The Alipay+ NFC SDK's role inside the wallet app, in Python (spec alipayplus-nfc.md §3, §6, §7).

The real SDK talks to Mastercard and the Ant server through the app's ``NFCRequestProxy``; here the
tokenization runs as our server's activation workflow, and this SDK is the phone's half of it:
it checks the preconditions (connected, NFC on, default payment app, a SHA-256 device fingerprint),
starts the activation through our API, shows its progress, does what the workflow asks of the phone
(store the token, activate it locally, store the credentials) in the ``SecureStore``, and answers
``isPaymentAvailable()`` from what is stored (seed 000's token status table).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any, Protocol

import httpx

from .secure_store import SecureStore, SecureStoreError

_TIMEOUT = 15.0  # above Alipay+'s 10 s answer time for proxied requests
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

# the records this SDK keeps in the secure store
TOKEN, CREDENTIALS, ACTIVATION, LOCK = "token", "credentials", "activation", "lock"


class NfcResultCode(IntEnum):
    """The SDK's result codes (spec §17)."""

    SUCCESS = 10000
    PROVISION_FAILED = 10001
    DEVICE_UNSAFE = 10002
    INNER_EXCEPTION = 10004
    NETWORK_EXCEPTION = 10005
    SDK_NOT_CONNECTED = 10006
    INSUFFICIENT_CREDENTIALS = 10007
    ACTIVATION_IN_PROGRESS = 10010
    INVALID_INPUT_PARAMETERS = 10011
    PARAMS_ERROR = 10011  # seed 000's name for a bad parameter (e.g. a fingerprint that is not SHA-256)


class TokenStatus(IntEnum):
    """``isPaymentAvailable()``'s answer (seed 000's table)."""

    DISCONNECTED = -2
    QUERY_FAILED = -1
    NO_CARD = 0
    NO_CREDENTIALS = 1
    PAYMENT_ALLOWED = 2
    LOCKED = 3
    LOCKED_LOCALLY = 4
    IN_ACTIVATION = 11
    AWAITING_CONFIRMATION = 21


class SettingsRequired(StrEnum):
    """What the SDK's NFC configuration page asks of the user before an activation can start."""

    TURN_ON_NFC = "TURN_ON_NFC"
    SET_DEFAULT_PAYMENT_APP = "SET_DEFAULT_PAYMENT_APP"


class NfcSdkError(RuntimeError):
    """An SDK call that cannot give an answer, with the SDK's result code (e.g. 10006)."""

    def __init__(self, code: NfcResultCode, message: str) -> None:
        super().__init__(f"{code.value} {code.name}: {message}")
        self.code = code


@dataclass
class NfcDevice:
    """The phone's NFC facts the configuration page checks (mutable: the user changes settings)."""

    nfc_enabled: bool = True
    default_payment_app: bool = True
    online: bool = True


class DeviceFingerPrintService(Protocol):
    """The app's SPI: a SHA-256 (64 hex) digest of a stable, app-scoped device identifier (§7.4)."""

    def get_device_fingerprint(self) -> str: ...


class ActivateCardListener(Protocol):
    """Told the token status when an activation the user started ends (seed 000, step 3)."""

    def on_result(self, status: int, request_code: int) -> None: ...


@dataclass(frozen=True)
class ActivationProgress:
    """One tick of the progress bar: step i of n (the tokenization takes 20-30 s)."""

    step: int
    steps_total: int
    step_name: str
    status: int


ProgressCallback = Callable[[ActivationProgress], None]


@dataclass(frozen=True)
class ActivationResult:
    """How an activation call ended: the token status now, the SDK result code, and why not if not."""

    status: int
    code: NfcResultCode
    settings_required: SettingsRequired | None = None
    failure: str | None = None


class _Stop(Exception):
    """Ends an activation run early with a result (not connected, offline, ...)."""

    def __init__(self, result: ActivationResult) -> None:
        super().__init__(result.failure)
        self.result = result


class AlipayPlusNfcSdk:
    """``init()`` once, ``connect(session)`` after login, ``disconnect()`` at logout (spec §3)."""

    def __init__(
        self,
        api_url: str,
        *,
        device: NfcDevice,
        fingerprint_service: DeviceFingerPrintService | None,
        store: SecureStore,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        poll_interval: float = 0.2,
        activation_timeout: timedelta = timedelta(seconds=120),
    ) -> None:
        self.device = device
        self._fingerprints = fingerprint_service
        self._store = store
        self._api = httpx.AsyncClient(base_url=api_url, transport=transport, timeout=_TIMEOUT)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep or asyncio.sleep
        self._poll_interval = poll_interval
        self._activation_timeout = activation_timeout
        self._initialized = False
        self._connected = False
        self._running = False

    async def aclose(self) -> None:
        await self._api.aclose()

    # --- lifecycle (spec §3) ------------------------------------------------------------------

    def init(self) -> NfcResultCode:
        self._initialized = True
        return NfcResultCode.SUCCESS

    def connect(self, session_token: str) -> NfcResultCode:
        """Bind the SDK to the logged-in user's app session (needs ``init`` first)."""
        if not self._initialized:
            return NfcResultCode.INNER_EXCEPTION
        if not session_token:
            return NfcResultCode.INVALID_INPUT_PARAMETERS
        self._api.headers["Authorization"] = f"Bearer {session_token}"
        self._connected = True
        return NfcResultCode.SUCCESS

    def disconnect(self) -> NfcResultCode:
        self._api.headers.pop("Authorization", None)
        self._connected = False
        return NfcResultCode.SUCCESS

    @property
    def connected(self) -> bool:
        return self._connected

    # --- token status (spec §6) ----------------------------------------------------------------

    def is_payment_available(self) -> int:
        """The token status from what is stored; -1 when the store cannot be trusted or read."""
        if not self._connected:
            return TokenStatus.DISCONNECTED
        try:
            return self._local_status()
        except (SecureStoreError, ValueError, TypeError, KeyError):
            return TokenStatus.QUERY_FAILED

    def _local_status(self) -> TokenStatus:
        activation = self._store.get(ACTIVATION)
        if activation is not None and activation.get("phase") == "WAITING_FOR_CONFIRMATION":
            return TokenStatus.AWAITING_CONFIRMATION
        if activation is not None:
            return TokenStatus.IN_ACTIVATION
        token = self._store.get(TOKEN)
        if token is None:
            return TokenStatus.NO_CARD
        if not token.get("active"):
            return TokenStatus.QUERY_FAILED  # a stored token nobody is activating: inconsistent
        lock = self._store.get(LOCK) or {}
        if lock.get("server"):
            return TokenStatus.LOCKED
        if lock.get("local"):
            return TokenStatus.LOCKED_LOCALLY
        return TokenStatus.PAYMENT_ALLOWED if self._unused_credentials() else TokenStatus.NO_CREDENTIALS

    def _unused_credentials(self) -> int:
        record = self._store.get(CREDENTIALS) or {}
        now = self._clock()
        count = 0
        for credential in record.get("credentials", []):
            try:
                expires = datetime.fromisoformat(str(credential["expiresAt"]))
            except (KeyError, ValueError, TypeError):
                continue
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            if expires > now and not credential.get("used"):
                count += 1
        return count

    # --- activation (spec §7) ------------------------------------------------------------------

    async def apply_card(
        self,
        request_code: int,
        apdu_service_name: str,
        listener: ActivateCardListener | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ActivationResult:
        """The user asked for the NFC service: configuration page, then the activation to the end.

        Status 21 (a silent run waits for the user) is confirmed; 11 joins the running one; 0 (never
        activated, or an earlier run failed) starts a manual activation.
        """
        if not apdu_service_name:
            return self._result(NfcResultCode.PARAMS_ERROR, "no APDU service name")
        if not self._connected:
            return self._result(NfcResultCode.SDK_NOT_CONNECTED, "connect after login")
        settings = self._settings_required()
        if settings is not None:  # the configuration page stays open: nothing started
            status = self.is_payment_available()
            return ActivationResult(status, NfcResultCode.PROVISION_FAILED, settings, f"NFC settings: {settings}")
        result = await self._activate(silent=False, on_progress=on_progress)
        if listener is not None and result.code is not NfcResultCode.PARAMS_ERROR:
            listener.on_result(result.status, request_code)
        return result

    async def activate_silently(self) -> ActivationResult:
        """The background part on login (spec §7.2): ends at 21 (waits for the user's confirmation),
        11 (still running when the time budget ran out) or 0 (failed: manual activation next)."""
        if not self._connected:
            return self._result(NfcResultCode.SDK_NOT_CONNECTED, "connect after login")
        return await self._activate(silent=True, on_progress=None)

    async def confirm_activation(self, on_progress: ProgressCallback | None = None) -> ActivationResult:
        """The user's secondary confirmation of a silent activation: 21 → 2."""
        if not self._connected:
            return self._result(NfcResultCode.SDK_NOT_CONNECTED, "connect after login")
        if self.is_payment_available() != TokenStatus.AWAITING_CONFIRMATION:
            return self._result(NfcResultCode.INVALID_INPUT_PARAMETERS, "no activation awaits confirmation")
        return await self._activate(silent=False, on_progress=on_progress)

    def _settings_required(self) -> SettingsRequired | None:
        if not self.device.nfc_enabled:
            return SettingsRequired.TURN_ON_NFC
        if not self.device.default_payment_app:
            return SettingsRequired.SET_DEFAULT_PAYMENT_APP
        return None

    def device_id(self) -> str:
        """The fingerprint from the app's SPI, checked: SHA-256 hex, else ``PARAMS_ERROR``."""
        if self._fingerprints is None:
            raise NfcSdkError(NfcResultCode.PARAMS_ERROR, "no DeviceFingerPrintService")
        try:
            fingerprint = self._fingerprints.get_device_fingerprint()
        except Exception as exc:  # the app's SPI failed: the SDK reports it, it does not crash
            raise NfcSdkError(NfcResultCode.PARAMS_ERROR, f"the fingerprint service failed: {exc}") from exc
        if not isinstance(fingerprint, str) or not _SHA256_HEX.fullmatch(fingerprint):
            raise NfcSdkError(NfcResultCode.PARAMS_ERROR, "the device fingerprint is not a SHA-256 digest")
        return fingerprint.lower()

    async def _activate(self, *, silent: bool, on_progress: ProgressCallback | None) -> ActivationResult:
        try:
            device_id = self.device_id()
        except NfcSdkError as exc:
            return self._result(exc.code, str(exc))
        if not self.device.online:
            return self._result(NfcResultCode.NETWORK_EXCEPTION, "the phone is offline")
        if self._running:
            return self._result(NfcResultCode.ACTIVATION_IN_PROGRESS, "an activation is already running")
        status = self.is_payment_available()
        if status == TokenStatus.QUERY_FAILED:
            return self._result(NfcResultCode.INNER_EXCEPTION, "the secure store cannot be read")
        self._running = True
        try:
            return await self._run(device_id, status, silent, _Bar(on_progress))
        except _Stop as stop:
            return stop.result
        except SecureStoreError as exc:  # the store cannot keep the activation's state
            return self._result(NfcResultCode.INNER_EXCEPTION, str(exc))
        finally:
            self._running = False

    async def _run(self, device_id: str, status: int, silent: bool, bar: _Bar) -> ActivationResult:
        base = f"/app/v1/nfc/activations/{device_id}"
        if status == TokenStatus.AWAITING_CONFIRMATION and not silent:
            progress = await self._call("POST", f"{base}/confirm")
        elif status == TokenStatus.AWAITING_CONFIRMATION:
            return ActivationResult(status, NfcResultCode.SUCCESS)  # nothing to do until the user confirms
        elif status not in (TokenStatus.NO_CARD, TokenStatus.IN_ACTIVATION):
            return ActivationResult(status, NfcResultCode.SUCCESS)  # a card exists already
        else:
            progress = await self._call("POST", "/app/v1/nfc/activations", {"deviceId": device_id, "silent": silent})
        deadline = self._clock() + self._activation_timeout
        while True:
            self._remember(progress)
            bar.report(progress)
            phase = progress.get("phase")
            if phase == "DONE":
                self._store.delete(ACTIVATION)
                return ActivationResult(self.is_payment_available(), NfcResultCode.SUCCESS)
            if phase == "FAILED":
                self._forget_token()
                failure = str(progress.get("failure") or "the activation failed")
                return ActivationResult(self.is_payment_available(), NfcResultCode.PROVISION_FAILED, failure=failure)
            if phase == "WAITING_FOR_CONFIRMATION":
                if silent:
                    return ActivationResult(TokenStatus.AWAITING_CONFIRMATION, NfcResultCode.SUCCESS)
                progress = await self._call("POST", f"{base}/confirm")  # the user already agreed
                continue
            action = progress.get("deviceAction")
            if isinstance(action, dict):
                step = str(action.get("step"))
                ok = self._perform(step, action.get("payload") or {})
                progress = await self._call("POST", f"{base}/device", {"step": step, "ok": ok})
                continue
            if self._clock() >= deadline:
                code = NfcResultCode.ACTIVATION_IN_PROGRESS
                return ActivationResult(TokenStatus.IN_ACTIVATION, code, failure="still running; ask again later")
            await self._sleep(self._poll_interval)
            progress = await self._call("GET", base)

    def _perform(self, step: str, payload: dict[str, Any]) -> bool:
        """What the workflow asks of the phone; False (reported as ok=false) when it cannot."""
        try:
            if step == "STORE_TOKEN":
                reference, profile = payload["tokenReferenceId"], payload["cardProfile"]
                if not reference or not isinstance(profile, dict) or not profile.get("tokenPan"):
                    return False
                self._store.put(TOKEN, {"tokenReferenceId": reference, "cardProfile": profile, "active": False})
                return True
            if step == "ACTIVATE_LOCAL_TOKEN":
                token = self._store.get(TOKEN)
                if token is None or token.get("tokenReferenceId") != payload.get("tokenReferenceId"):
                    return False
                self._store.put(TOKEN, {**token, "active": True})
                return True
            if step == "STORE_CREDENTIALS":
                credentials = payload["credentials"]
                if not isinstance(credentials, list) or not credentials:
                    return False
                self._store.put(CREDENTIALS, {"credentials": credentials})
                return True
        except (KeyError, TypeError, OSError, SecureStoreError):
            return False
        return False  # a step this SDK does not know

    def _remember(self, progress: dict[str, Any]) -> None:
        """Keep the running activation's phase, so ``isPaymentAvailable`` says 11/21 across restarts."""
        if progress.get("phase") in ("RUNNING", "WAITING_FOR_DEVICE", "WAITING_FOR_CONFIRMATION"):
            self._store.put(ACTIVATION, {"phase": progress["phase"], "statusCode": progress.get("statusCode")})

    def _forget_token(self) -> None:
        """A failed activation leaves no card (status 0), so the next apply starts afresh."""
        for name in (ACTIVATION, TOKEN, CREDENTIALS):
            self._store.delete(name)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Our API's JSON answer; a 401 disconnects the SDK, a network failure stops the run."""
        return await self._request(method, path, body, stop=True)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, stop: bool = False
    ) -> dict[str, Any]:
        def fail(code: NfcResultCode, message: str) -> Exception:
            if stop:
                return _Stop(self._result(code, message))
            return NfcSdkError(code, message)

        if not self.device.online:
            raise fail(NfcResultCode.NETWORK_EXCEPTION, "the phone is offline")
        try:
            response = await self._api.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise fail(NfcResultCode.NETWORK_EXCEPTION, f"{path}: {exc}") from exc
        if response.status_code == 401:
            self.disconnect()
            raise fail(NfcResultCode.SDK_NOT_CONNECTED, "our API no longer accepts the session")
        if response.is_error:
            code = NfcResultCode.NETWORK_EXCEPTION if response.status_code >= 500 else NfcResultCode.INNER_EXCEPTION
            raise fail(code, f"{path}: HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise fail(NfcResultCode.INNER_EXCEPTION, f"{path}: not a JSON object")
        return answer

    def _result(self, code: NfcResultCode, failure: str) -> ActivationResult:
        return ActivationResult(self.is_payment_available(), code, failure=failure)


class _Bar:
    """The progress bar: only forward, one tick per step (and one more when its status changes)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last = (0, 0)

    def report(self, progress: dict[str, Any]) -> None:
        try:
            step, total = int(progress["step"]), int(progress["stepsTotal"])
        except (KeyError, TypeError, ValueError):
            return
        status = int(progress.get("statusCode", TokenStatus.IN_ACTIVATION))
        if self._callback is None or (step, status) == self._last or step < self._last[0]:
            return
        self._last = (step, status)
        self._callback(ActivationProgress(step, total, str(progress.get("stepName", "")), status))


class ApplyCardActivity:
    """``ApplyCardActivity.apply()``: the SDK's configuration and processing pages (seed 000, step 1)."""

    def __init__(
        self, sdk: AlipayPlusNfcSdk, listener: ActivateCardListener, on_progress: ProgressCallback | None = None
    ) -> None:
        self._sdk = sdk
        self._listener = listener
        self._on_progress = on_progress

    async def apply(self, activity: object, request_code: int, apdu_service_name: str) -> ActivationResult:
        """``activity`` is the app's page (unused here); the listener gets the final status."""
        return await self._sdk.apply_card(request_code, apdu_service_name, self._listener, self._on_progress)


class NFCRequestProxy:
    """The app's proxy SPI: an SDK request goes to our server, which forwards it (spec §4)."""

    def __init__(self, sdk: AlipayPlusNfcSdk) -> None:
        self._sdk = sdk

    async def proxy(self, sdk_request_header: str, sdk_request_data: str) -> tuple[str, str]:
        """``(sdkResponseHeader, sdkResponseData)``; ``NfcSdkError`` (10006, 10005, ...) otherwise."""
        if not self._sdk.connected:
            raise NfcSdkError(NfcResultCode.SDK_NOT_CONNECTED, "connect after login")
        body = {
            "deviceId": self._sdk.device_id(),
            "sdkRequestHeader": sdk_request_header,
            "sdkRequestData": sdk_request_data,
        }
        answer = await self._sdk._request("POST", "/app/v1/nfc/proxy", body)
        header, data = answer.get("sdkResponseHeader"), answer.get("sdkResponseData")
        if not isinstance(header, str) or not isinstance(data, str):
            raise NfcSdkError(NfcResultCode.INNER_EXCEPTION, "the proxy answered without the SDK's response")
        return header, data


__all__ = [
    "ActivateCardListener",
    "ActivationProgress",
    "ActivationResult",
    "AlipayPlusNfcSdk",
    "ApplyCardActivity",
    "DeviceFingerPrintService",
    "NFCRequestProxy",
    "NfcDevice",
    "NfcResultCode",
    "NfcSdkError",
    "ProgressCallback",
    "SettingsRequired",
    "TokenStatus",
]
