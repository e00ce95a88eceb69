"""The Alipay+ NFC SDK's role inside the wallet app, in Python (spec alipayplus-nfc.md §3, §6, §7).

The real SDK talks to Mastercard and the Ant server through the app's ``NFCRequestProxy``; here the
tokenization runs as our server's activation workflow, and this SDK is the phone's half of it:
it checks the preconditions (connected, NFC on, default payment app, a SHA-256 device fingerprint),
starts the activation through our API, shows its progress, does what the workflow asks of the phone
(store the token, activate it locally, store the credentials) in the ``SecureStore``, and answers
``isPaymentAvailable()`` from what is stored (seed 000's token status table).

Binding a token to this phone is confirmed with the user's wallet PIN (issue 13, step-up): the manual
start and every confirmation of a silent run ask the app's ``PinPad`` SPI once per user action, send
the digits in that request's body only, and never log or keep them. The silent run on login needs none.

After activation it is the card too: ``process_apdu`` (what Android's ``HostApduService`` calls) runs
the ``ContactlessCard`` of the stored profile and credentials, offline. Every ARQC tap is queued in the
secure store as a tap report and sent to our API by ``report_taps()`` (also started in the background
when an event loop runs); after that, fewer than ``replenish_below`` credentials fetch more through our
server. ``lock()``/``unlock()`` need the network and change the stored lock only once our server did;
``lock_locally()``/``local_unlock()`` are the phone's own lock (status 4); ``delete_token()`` (status 1,
2, 3) deletes at our server first, then forgets the token.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any, Protocol

import httpx

from .card import (
    INS_SELECT,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    ContactlessCard,
    PermitResult,
    StoredCredentials,
    TapFailure,
    TapResult,
    TransactionInfo,
    TransactionListener,
    TransactionPermit,
)
from .secure_store import SecureStore, SecureStoreError

logger = logging.getLogger(__name__)

_TIMEOUT = 15.0  # above Alipay+'s 10 s answer time for proxied requests
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_WALLET_PIN = re.compile(r"[0-9]{4,12}")  # what our API takes as a wallet PIN

# the records this SDK keeps in the secure store
TOKEN, CREDENTIALS, ACTIVATION, LOCK = "token", "credentials", "activation", "lock"
TAPS = "taps"  # tap reports our API has not accepted yet
REPLENISH_BELOW = 10  # seed 001: replenish when fewer than 10 credentials remain


class NfcResultCode(IntEnum):
    """The SDK's result codes (spec §17)."""

    SUCCESS = 10000
    PROVISION_FAILED = 10001
    DEVICE_UNSAFE = 10002
    INNER_EXCEPTION = 10004
    NETWORK_EXCEPTION = 10005
    SDK_NOT_CONNECTED = 10006
    INSUFFICIENT_CREDENTIALS = 10007
    TOKEN_UNAVAILABLE = 10008  # e.g. locked
    TOKEN_DOES_NOT_EXIST = 10009
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


class PinProblem(StrEnum):
    """Why binding the card to this phone was not confirmed with the wallet PIN (the result's ``pin_problem``)."""

    CANCELLED = "CANCELLED"  # the user closed the PIN pad: nothing was sent
    WRONG = "WRONG"  # our API refused the PIN (401), or it is not 4 to 12 digits
    TOO_MANY_TRIES = "TOO_MANY_TRIES"  # 429: wait (Retry-After) or the account is locked
    NOT_SET = "NOT_SET"  # 403: the user has no wallet PIN yet


class NfcSdkError(RuntimeError):
    """An SDK call that cannot give an answer, with the SDK's result code (e.g. 10006)."""

    def __init__(self, code: NfcResultCode, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code.value} {code.name}: {message}")
        self.code = code
        self.http_status = http_status  # our API's answer, when it gave one


@dataclass
class NfcDevice:
    """The phone's NFC facts the configuration page checks (mutable: the user changes settings)."""

    nfc_enabled: bool = True
    default_payment_app: bool = True
    online: bool = True


class DeviceFingerPrintService(Protocol):
    """The app's SPI: a SHA-256 (64 hex) digest of a stable, app-scoped device identifier (§7.4)."""

    def get_device_fingerprint(self) -> str: ...


class PinPad(Protocol):
    """The app's SPI: asks the user for the wallet PIN that confirms binding the card to this phone.

    Returns the digits typed, or None when the user cancels. Awaited, as it waits for the user; the
    SDK asks at most once per apply or confirmation, sends the PIN in that request only, and keeps
    it nowhere."""

    async def request_wallet_pin(self) -> str | None: ...


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
    pin_problem: PinProblem | None = None  # the wallet PIN step-up did not pass: what the app shows next


@dataclass(frozen=True)
class TokenResult:
    """How a token call (lock, unlock, localUnlock, delete, replenish) ended: the SDK result code, the
    token status now, and why not if not (``ACResultCallback``'s result, errorCode and errorMsg)."""

    code: NfcResultCode
    status: int
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is NfcResultCode.SUCCESS


# Why a token call cannot run in a status (spec §6, §9, §17).
_REFUSED_IN: dict[int, tuple[NfcResultCode, str]] = {
    TokenStatus.DISCONNECTED: (NfcResultCode.SDK_NOT_CONNECTED, "connect after login"),
    TokenStatus.QUERY_FAILED: (NfcResultCode.INNER_EXCEPTION, "the secure store cannot be read"),
    TokenStatus.NO_CARD: (NfcResultCode.TOKEN_DOES_NOT_EXIST, "there is no card on this phone"),
    TokenStatus.IN_ACTIVATION: (NfcResultCode.ACTIVATION_IN_PROGRESS, "the card is being activated"),
    TokenStatus.AWAITING_CONFIRMATION: (NfcResultCode.ACTIVATION_IN_PROGRESS, "the activation awaits confirmation"),
    TokenStatus.LOCKED: (NfcResultCode.TOKEN_UNAVAILABLE, "the card is locked: unlock first"),
    TokenStatus.LOCKED_LOCALLY: (NfcResultCode.TOKEN_UNAVAILABLE, "the card is locked locally: localUnlock first"),
}
# Our API's refusals to bind a card to this phone (a start or a confirmation), and what the
# PIN had to do with it: 409 is the device quota.
_BINDING_REFUSED: dict[int, PinProblem | None] = {
    401: PinProblem.WRONG,
    403: PinProblem.NOT_SET,
    409: None,
    429: PinProblem.TOO_MANY_TRIES,
}
_CARD_EXISTS = (
    TokenStatus.NO_CREDENTIALS,
    TokenStatus.PAYMENT_ALLOWED,
    TokenStatus.LOCKED,
    TokenStatus.LOCKED_LOCALLY,
)


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
        pin_pad: PinPad | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        poll_interval: float = 0.2,
        activation_timeout: timedelta = timedelta(seconds=120),
        replenish_below: int = REPLENISH_BELOW,
        cvm_limit: int | None = None,
    ) -> None:
        self.device = device
        self._fingerprints = fingerprint_service
        self._pin_pad = pin_pad
        self._store = store
        self._api = httpx.AsyncClient(base_url=api_url, transport=transport, timeout=_TIMEOUT)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep or asyncio.sleep
        self._poll_interval = poll_interval
        self._activation_timeout = activation_timeout
        self._replenish_below = replenish_below
        self._cvm_limit = cvm_limit  # minor units; None: the reader's CVM-limit bit decides
        self._initialized = False
        self._connected = False
        self._running = False
        self._permit: TransactionPermit | None = None
        self._listener = TransactionListener()
        self._card: tuple[str, ContactlessCard] | None = None  # (tokenReferenceId, its card)
        self._token_calls = asyncio.Lock()  # one exchange with our token API at a time
        self._background: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
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
        return StoredCredentials(self._store, self._clock, CREDENTIALS).unused()

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
        activated, or an earlier run failed) starts a manual activation. Each of these asks the
        ``PinPad`` for the wallet PIN first; a card already on the phone asks nothing.
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
        """The user's secondary confirmation of a silent activation, with the wallet PIN: 21 → 2."""
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
        if status not in (TokenStatus.NO_CARD, TokenStatus.IN_ACTIVATION, TokenStatus.AWAITING_CONFIRMATION):
            return ActivationResult(status, NfcResultCode.SUCCESS)  # a card exists already
        if status == TokenStatus.AWAITING_CONFIRMATION and silent:
            return ActivationResult(status, NfcResultCode.SUCCESS)  # nothing to do until the user confirms
        # the user's own start or confirmation binds the card to this phone: the wallet PIN, asked once
        # for this run and held only in this frame (the silent run on login has none)
        pin = None if silent else await self._wallet_pin()
        if pin is not None and status == TokenStatus.AWAITING_CONFIRMATION:
            progress = await self._call("POST", f"{base}/confirm", {"pin": pin}, binding=True)
        elif pin is not None:
            body = {"deviceId": device_id, "silent": False, "pin": pin}
            progress = await self._call("POST", "/app/v1/nfc/activations", body, binding=True)
        else:
            body = {"deviceId": device_id, "silent": True}
            progress = await self._call("POST", "/app/v1/nfc/activations", body, binding=True)
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
                if pin is None:  # silent: the user confirms later, with the PIN
                    return ActivationResult(TokenStatus.AWAITING_CONFIRMATION, NfcResultCode.SUCCESS)
                # joined a silent run: the user already agreed, with the PIN typed for this apply
                progress = await self._call("POST", f"{base}/confirm", {"pin": pin}, binding=True)
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

    async def _wallet_pin(self) -> str:
        """The PIN the user types on the app's ``PinPad``; a cancel or a failing pad ends the run
        before anything is sent. Never logged: failures name the exception's type only."""
        if self._pin_pad is None:
            raise _Stop(self._result(NfcResultCode.PARAMS_ERROR, "no PinPad: binding a card needs the wallet PIN"))
        try:
            pin = await self._pin_pad.request_wallet_pin()
        except Exception as exc:  # the app's SPI failed: the SDK reports it, it does not crash
            failure = f"the PIN pad failed: {type(exc).__name__}"
            raise _Stop(self._result(NfcResultCode.PARAMS_ERROR, failure)) from None
        if pin is None:
            raise _Stop(self._binding_refused(PinProblem.CANCELLED, "the user cancelled the wallet PIN"))
        if not isinstance(pin, str) or not _WALLET_PIN.fullmatch(pin):
            raise _Stop(self._binding_refused(PinProblem.WRONG, "the wallet PIN is 4 to 12 digits"))
        return pin

    def _binding_refused(self, problem: PinProblem | None, failure: str) -> ActivationResult:
        """Binding refused before anything changed at our server: the status stays as it was."""
        return ActivationResult(
            self.is_payment_available(), NfcResultCode.PROVISION_FAILED, failure=failure, pin_problem=problem
        )

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
        """No card (status 0) after a failed activation or a deletion, so the next apply starts afresh."""
        for name in (ACTIVATION, TOKEN, CREDENTIALS, LOCK, TAPS):
            self._store.delete(name)
        self._card = None

    async def payment_for_tap(self, custom_data: bytes) -> dict[str, Any] | None:
        """The MPP app's own query (spec §10.1, step 10): the payment our server recorded for the tap
        that carried ``custom_data``; None while Alipay+'s pay for it has not arrived."""
        try:
            return await self._request("GET", f"/app/v1/nfc/payments?customData={custom_data.hex().upper()}")
        except NfcSdkError as exc:
            if exc.http_status == 404:
                return None
            raise

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, binding: bool = False
    ) -> dict[str, Any]:
        """Our API's JSON answer; a 401 disconnects the SDK, a network failure stops the run. With
        ``binding`` (a start or a confirmation) our API's refusal to bind, with its reason, stops it too."""
        return await self._request(method, path, body, stop=True, binding=binding)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, stop: bool = False, binding: bool = False
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
        # a session our API refuses is a 401 with WWW-Authenticate; a wrong PIN's 401 has none
        refused = response.status_code in _BINDING_REFUSED and "WWW-Authenticate" not in response.headers
        if stop and binding and refused:
            failure = _detail(response) or f"{path}: HTTP {response.status_code}"
            raise _Stop(self._binding_refused(_BINDING_REFUSED[response.status_code], failure))
        if response.status_code == 401:
            self.disconnect()
            raise fail(NfcResultCode.SDK_NOT_CONNECTED, "our API no longer accepts the session")
        if response.is_error:
            code = NfcResultCode.NETWORK_EXCEPTION if response.status_code >= 500 else NfcResultCode.INNER_EXCEPTION
            if stop:
                raise _Stop(self._result(code, f"{path}: HTTP {response.status_code}"))
            detail = _detail(response)
            message = f"{path}: HTTP {response.status_code}" + (f" ({detail})" if detail else "")
            raise NfcSdkError(code, message, response.status_code)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise fail(NfcResultCode.INNER_EXCEPTION, f"{path}: not a JSON object")
        return answer

    def _result(self, code: NfcResultCode, failure: str) -> ActivationResult:
        return ActivationResult(self.is_payment_available(), code, failure=failure)

    # --- token management (spec §9) -----------------------------------------------------------

    async def lock(self) -> TokenResult:
        """``lock()``: network required. Our server locks the token (the Ant server suspends it at
        Mastercard); only then is the server lock stored (status 3)."""
        return await self._token_call(_CARD_EXISTS, lambda: self._manage_at_server("lock"))

    async def unlock(self) -> TokenResult:
        """``unlock()``: network required; the stored server lock is cleared once our server unlocked
        (3 → 2). A local lock (4) stays: ``local_unlock`` clears that."""
        return await self._token_call(_CARD_EXISTS, lambda: self._manage_at_server("unlock"))

    def lock_locally(self) -> TokenResult:
        """The app's own lock (status 4), without the network: for the app's security events, e.g. too
        many wrong app PINs, the device's screen lock removed, or the user's "pause payments" switch.
        Taps are declined (10008) until ``local_unlock()``; the server never hears of it."""
        return self._set_local_lock(True)

    def local_unlock(self) -> TokenResult:
        """``localUnlock()``: clears the local lock only (4 → 2, or 1 without credentials); a server
        lock stays (3), which only ``unlock()`` clears."""
        return self._set_local_lock(False)

    def _set_local_lock(self, locked: bool) -> TokenResult:
        refused = self._refusal(_CARD_EXISTS)
        if refused is not None:
            return refused
        try:
            self._store.put(LOCK, {**(self._store.get(LOCK) or {}), "local": locked})
        except SecureStoreError as exc:
            return self._token_result(NfcResultCode.INNER_EXCEPTION, str(exc))
        return self._token_result(NfcResultCode.SUCCESS)

    async def delete_token(self) -> TokenResult:
        """``deleteToken`` (spec §9): only in status 1, 2 or 3. Queued tap reports go first (a deleted
        token's taps can no longer count, so none may be left behind), then our server deletes the
        token (and the Ant server at Mastercard); only then does the phone forget it (status 0)."""
        deletable = (TokenStatus.NO_CREDENTIALS, TokenStatus.PAYMENT_ALLOWED, TokenStatus.LOCKED)
        return await self._token_call(deletable, self._delete_at_server)

    async def replenish(self) -> TokenResult:
        """``replenish()``: fetch credentials now (status 1, or to top up), through our server."""
        allowed = (TokenStatus.NO_CREDENTIALS, TokenStatus.PAYMENT_ALLOWED, TokenStatus.LOCKED_LOCALLY)
        return await self._token_call(allowed, self._replenish_now)

    async def _token_call(self, allowed: tuple[TokenStatus, ...], call: Callable[[], Awaitable[None]]) -> TokenResult:
        """One token call: refused outside ``allowed`` statuses, one at a time, and our API's refusal
        or the secure store's failure as the SDK's result code."""
        refused = self._refusal(allowed)
        if refused is not None:
            return refused
        async with self._token_calls:
            try:
                await call()
            except NfcSdkError as exc:
                return self._failed(exc)
            except SecureStoreError as exc:
                return self._token_result(NfcResultCode.INNER_EXCEPTION, str(exc))
        return self._token_result(NfcResultCode.SUCCESS)

    async def _manage_at_server(self, action: str) -> None:
        self._follow_server(await self._request("POST", f"{self._token_path()}/{action}"))

    async def _delete_at_server(self) -> None:
        if await self._flush_reports():
            raise NfcSdkError(NfcResultCode.NETWORK_EXCEPTION, "tap reports are not delivered yet")
        try:
            await self._request("DELETE", self._token_path())
        except NfcSdkError as exc:
            if exc.http_status != 410:  # 410: deleted already
                raise
        self._forget_token()

    async def _replenish_now(self) -> None:
        await self._flush_reports()
        await self._top_up(force=True)

    def _refusal(self, allowed: tuple[TokenStatus, ...]) -> TokenResult | None:
        status = self.is_payment_available()
        if status in allowed:
            return None
        code, why = _REFUSED_IN.get(status, (NfcResultCode.INVALID_INPUT_PARAMETERS, f"not in status {status}"))
        return TokenResult(code, status, why)

    def _failed(self, exc: NfcSdkError) -> TokenResult:
        """Our API's refusal as the SDK's code: 409 locked, 410 deleted (the phone forgets the token)."""
        if exc.http_status == 409:
            return self._token_result(NfcResultCode.TOKEN_UNAVAILABLE, str(exc))
        if exc.http_status == 410:
            self._forget_token()
            return self._token_result(NfcResultCode.TOKEN_DOES_NOT_EXIST, "the token was deleted")
        return self._token_result(exc.code, str(exc))

    def _token_result(self, code: NfcResultCode, failure: str | None = None) -> TokenResult:
        return TokenResult(code, self.is_payment_available(), failure)

    def _token_reference(self) -> str:
        token = self._store.get(TOKEN)
        if token is None or not token.get("tokenReferenceId"):
            raise NfcSdkError(NfcResultCode.TOKEN_DOES_NOT_EXIST, "there is no card on this phone")
        return str(token["tokenReferenceId"])

    def _token_path(self) -> str:
        return f"/app/v1/nfc/tokens/{self._token_reference()}"

    def _follow_server(self, state: dict[str, Any]) -> None:
        """Our server's word on the token: its lock is the stored server lock; deleted, it is gone."""
        lifecycle = state.get("lifecycle")
        if lifecycle == "DELETED":
            self._forget_token()
            return
        lock = self._store.get(LOCK) or {}
        if bool(lock.get("server")) != (lifecycle == "LOCKED"):
            self._store.put(LOCK, {**lock, "server": lifecycle == "LOCKED"})

    # --- taps (spec §10): the card, offline ----------------------------------------------------

    def set_transaction_permit(self, permit: TransactionPermit | None) -> None:
        """The app's ``TransactionPermit``; without one every tap proceeds (CDCVM rules still apply)."""
        self._permit = permit

    def set_transaction_listener(self, listener: TransactionListener | None) -> None:
        self._listener = listener or TransactionListener()

    def set_custom_data(self, data: bytes | None) -> None:
        """``setCustomData``: ≤ 14 bytes for the next ARQC (the join key to the server's payment)."""
        self._required_card().set_custom_data(data)

    def verify_consumer(self) -> None:
        """The user passed the device's CDCVM (biometric or passcode): valid for the next 30 s."""
        self._required_card().verify_consumer()

    def deactivate(self) -> None:
        """``HostApduService.onDeactivated``: the reader's field is gone; the next tap starts afresh."""
        if self._card is not None:
            self._card[1].deactivate()

    def process_apdu(self, command: bytes) -> bytes:
        """``HostApduService.processCommandApdu``: one response APDU, offline and synchronous. Without
        an activated card, SELECT answers ``6A 82`` (the listener gets 10009) and anything else ``69 85``."""
        card = self._tap_card()
        if card is not None:
            return card.process_apdu(command)
        if command[1:2] == bytes([INS_SELECT]):  # the reader looks for a card there is not
            self._tell_listener(self._listener.on_transaction_failed, TapFailure.TOKEN_DOES_NOT_EXIST.value)
            return SW_FILE_NOT_FOUND
        return SW_CONDITIONS_NOT_SATISFIED

    def _required_card(self) -> ContactlessCard:
        card = self._tap_card()
        if card is None:
            raise NfcSdkError(NfcResultCode.TOKEN_DOES_NOT_EXIST, "there is no activated card on this phone")
        return card

    def _tap_card(self) -> ContactlessCard | None:
        """The card of the stored, activated token (one instance per token: it holds the tap's state)."""
        try:
            token = self._store.get(TOKEN)
            if token is None or not token.get("active"):
                return None
            reference = str(token["tokenReferenceId"])
            if self._card is None or self._card[0] != reference:
                card = ContactlessCard(
                    token["cardProfile"],
                    StoredCredentials(self._store, self._clock, CREDENTIALS),
                    permit=_AppPermit(self),
                    listener=_TapEvents(self),
                    clock=self._clock,
                    cvm_limit=self._cvm_limit,
                    availability=self._tap_refusal,
                )
                self._card = (reference, card)
        except (SecureStoreError, KeyError, TypeError, ValueError):
            logger.exception("the stored card cannot be read")
            return None
        return self._card[1]

    def _tap_refusal(self) -> TapFailure | None:
        """Asked by the card at GENERATE AC: a locked token (3 or 4) is unavailable (10008)."""
        if not self._connected:
            return TapFailure.SDK_NOT_CONNECTED
        status = self.is_payment_available()
        if status in (TokenStatus.LOCKED, TokenStatus.LOCKED_LOCALLY, TokenStatus.QUERY_FAILED):
            return TapFailure.TOKEN_UNAVAILABLE
        return None

    def _tapped(self, atc: int, custom_data: bytes | None) -> None:
        """An ARQC left the phone: its report is queued durably before anything else, then sent."""
        reference = self._token_reference()
        reports = self._pending_reports()
        if all(report["atc"] != atc for report in reports):
            reports.append(
                {
                    "tokenReferenceId": reference,
                    "atc": atc,
                    "customData": custom_data.hex() if custom_data else None,
                    "tappedAt": self._clock().isoformat(),
                }
            )
            self._store.put(TAPS, {"reports": reports})
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop here: the next report_taps() sends it
        task = loop.create_task(self._report_in_background())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _report_in_background(self) -> None:
        try:
            await self.report_taps()
        except Exception:  # it stays queued; the next call sends it
            logger.exception("background tap report failed")

    def _tell_listener(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("TransactionListener callback failed")

    # --- tap reports and auto-replenish (spec §8) ----------------------------------------------

    def pending_tap_reports(self) -> list[dict[str, Any]]:
        """Tap reports our API has not accepted yet, oldest ATC first."""
        return sorted(self._pending_reports(), key=lambda report: int(report["atc"]))

    async def report_taps(self) -> int:
        """Send every queued tap report to our API, then replenish if fewer than ``replenish_below``
        credentials remain. Returns how many reports still wait (0: all delivered). A failed send keeps
        its report, and the later ones, for the next call; our server counts each ATC once, so a
        report sent twice (the answer lost) is harmless."""
        if not self._connected:
            return len(self._pending_reports())
        async with self._token_calls:
            try:
                waiting = await self._flush_reports()
                await self._top_up(force=False)
            except (NfcSdkError, SecureStoreError) as exc:
                logger.info("tap reports or replenishment not done: %s", exc)
                waiting = len(self._pending_reports())
        return waiting

    def _pending_reports(self) -> list[dict[str, Any]]:
        return list((self._store.get(TAPS) or {}).get("reports", []))

    async def _flush_reports(self) -> int:
        """Send the queued reports in ATC order; stop at the first failure (the network is likely
        down). A report our API can never accept (410 deleted, 422 malformed) is dropped."""
        for report in self.pending_tap_reports():
            if not self._connected or not self.device.online:
                break
            path = f"/app/v1/nfc/tokens/{report['tokenReferenceId']}/taps"
            body = {"atc": report["atc"], "customData": report.get("customData"), "tappedAt": report["tappedAt"]}
            try:
                await self._request("POST", path, body)
            except NfcSdkError as exc:
                if exc.http_status not in (410, 422):
                    break
                logger.warning("tap report for ATC %s dropped: %s", report["atc"], exc)
            remaining = [r for r in self._pending_reports() if r["atc"] != report["atc"]]
            self._store.put(TAPS, {"reports": remaining})
        return len(self._pending_reports())

    async def _top_up(self, *, force: bool) -> None:
        """Below the threshold (or when forced): collect the credentials our server holds for the phone,
        or have it replenish when none wait, store them, and confirm them (``/credentials``)."""
        if self._store.get(TOKEN) is None or (not force and self._unused_credentials() >= self._replenish_below):
            return
        path = self._token_path()
        state = await self._request("GET", path)
        self._follow_server(state)
        if state.get("lifecycle") == "LOCKED":  # no credentials until unlocked
            raise NfcSdkError(NfcResultCode.TOKEN_UNAVAILABLE, "the token is locked", 409)
        if state.get("lifecycle") == "DELETED":
            raise NfcSdkError(NfcResultCode.TOKEN_DOES_NOT_EXIST, "the token was deleted", 410)
        waiting = state.get("undelivered") or []
        if not waiting:
            waiting = (await self._request("POST", f"{path}/replenish")).get("undelivered") or []
        if waiting:
            self._store_credentials(waiting)
            await self._request("POST", f"{path}/credentials", {"credentials": waiting})

    def _store_credentials(self, fresh: list[dict[str, Any]]) -> None:
        records = list((self._store.get(CREDENTIALS) or {}).get("credentials", []))
        held = {int(record["atc"]) for record in records}
        records += [dict(credential) for credential in fresh if int(credential["atc"]) not in held]
        self._store.put(CREDENTIALS, {"credentials": records})


class _AppPermit:
    """The card asks the app's current permit (set any time); none set: proceed."""

    def __init__(self, sdk: AlipayPlusNfcSdk) -> None:
        self._sdk = sdk

    def is_allowed(self, auth_before: bool, info: TransactionInfo) -> PermitResult:
        permit = self._sdk._permit
        return PermitResult.PROCEED if permit is None else permit.is_allowed(auth_before, info)


class _TapEvents(TransactionListener):
    """The card's events: a finished tap is queued as a report first, then the app's listener hears."""

    def __init__(self, sdk: AlipayPlusNfcSdk) -> None:
        self._sdk = sdk

    def on_transaction_started(self) -> None:
        self._sdk._listener.on_transaction_started()

    def on_transaction_auth(self) -> None:
        self._sdk._listener.on_transaction_auth()

    def on_transaction_finished(self, result: TapResult, atc: int, custom_data: bytes | None) -> None:
        try:
            self._sdk._tapped(atc, custom_data)
        except Exception:  # the ARQC has left: the server still learns the ATC from the payment
            logger.exception("the tap report for ATC %s could not be queued", atc)
        self._sdk._listener.on_transaction_finished(result, atc, custom_data)

    def on_transaction_failed(self, code: str) -> None:
        self._sdk._listener.on_transaction_failed(code)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return str(detail) if detail else ""


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
    "PinPad",
    "PinProblem",
    "ProgressCallback",
    "SettingsRequired",
    "TokenResult",
    "TokenStatus",
]
