"""The Alipay+ NFC SDK's role inside the wallet app, in Python (spec alipayplus-nfc.md §3, §6, §7).

The real SDK talks to Mastercard and the Ant server through the app's ``NFCRequestProxy``; here the
tokenization runs as our server's activation workflow, and this SDK is the phone's half of it. After
activation it is the card too: ``process_apdu`` (what Android's ``HostApduService`` calls) runs the
stored token's card offline, and every ARQC tap is reported to our API.

This module is the SDK's facade and keeps its API names; private collaborators over the vocabulary in
``_nfc_types`` do the work: ``_nfc_http`` (our API and the app session), ``_nfc_records`` (the token's
records in the ``SecureStore``, and ``isPaymentAvailable()`` from them), ``_nfc_activation`` (manual and
silent activation, with the wallet-PIN step-up), ``_nfc_tokens`` (lock, unlock, localUnlock, delete,
replenish, and the tap reports' delivery) and ``_nfc_taps`` (the card and the tap-report queue).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from alipayplus.nfc_sdk import TokenStatus

from ._nfc_activation import Activation
from ._nfc_http import NfcApi
from ._nfc_records import StoredToken
from ._nfc_taps import HceCard, TapReports
from ._nfc_tokens import TokenManager
from ._nfc_types import (  # the record names too: the demo reads the stored token and credentials
    ACTIVATION,  # noqa: F401
    CREDENTIALS,  # noqa: F401
    LOCK,  # noqa: F401
    REPLENISH_BELOW,
    TAPS,  # noqa: F401
    TOKEN,  # noqa: F401
    ActivateCardListener,
    ActivationProgress,
    ActivationResult,
    DeviceFingerPrintService,
    NfcDevice,
    NfcResultCode,
    NfcSdkError,
    PinPad,
    PinProblem,
    ProgressCallback,
    SettingsRequired,
    TokenResult,
)
from .card import TransactionListener, TransactionPermit
from .secure_store import SecureStore


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
        self.device = device  # the app may replace it: the collaborators ask for it each time
        clock = clock or (lambda: datetime.now(UTC))
        self._initialized = False
        self._http = NfcApi(api_url, online=lambda: self.device.online, transport=transport)
        self._token = StoredToken(store, clock, lambda: self._http.connected)
        self._activation = Activation(
            self._token,
            self._http,
            device=lambda: self.device,
            fingerprint_service=fingerprint_service,
            pin_pad=pin_pad,
            clock=clock,
            sleep=sleep or asyncio.sleep,
            poll_interval=poll_interval,
            activation_timeout=activation_timeout,
        )
        reports = TapReports(store, clock, self._http)
        self._tokens = TokenManager(self._token, reports, self._http, replenish_below=replenish_below)
        self._reports = reports
        self._hce = HceCard(
            self._token, reports, self._http, send_reports=self.report_taps, clock=clock, cvm_limit=cvm_limit
        )

    @property
    def _api(self) -> httpx.AsyncClient:
        """The HTTP client of our API (tests swap its transport to cut the phone's network)."""
        return self._http.client

    async def aclose(self) -> None:
        await self._hce.settle()
        await self._http.aclose()

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
        self._http.open_session(session_token)
        return NfcResultCode.SUCCESS

    def disconnect(self) -> NfcResultCode:
        self._http.close_session()
        return NfcResultCode.SUCCESS

    @property
    def connected(self) -> bool:
        return self._http.connected

    # --- token status (spec §6) ----------------------------------------------------------------

    def is_payment_available(self) -> int:
        """The token status from what is stored; -1 when the store cannot be trusted or read."""
        return self._token.status()

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
        return await self._activation.apply_card(request_code, apdu_service_name, listener, on_progress)

    async def activate_silently(self) -> ActivationResult:
        """The background part on login (spec §7.2): ends at 21 (waits for the user's confirmation),
        11 (still running when the time budget ran out) or 0 (failed: manual activation next)."""
        return await self._activation.activate_silently()

    async def confirm_activation(self, on_progress: ProgressCallback | None = None) -> ActivationResult:
        """The user's secondary confirmation of a silent activation, with the wallet PIN: 21 → 2."""
        return await self._activation.confirm_activation(on_progress)

    def device_id(self) -> str:
        """The fingerprint from the app's SPI, checked: SHA-256 hex, else ``PARAMS_ERROR``."""
        return self._activation.device_id()

    async def payment_for_tap(self, custom_data: bytes) -> dict[str, Any] | None:
        """The MPP app's own query (spec §10.1, step 10): the payment our server recorded for the tap
        that carried ``custom_data``; None while Alipay+'s pay for it has not arrived."""
        return await self._http.payment_for_tap(custom_data)

    # --- token management (spec §9) -----------------------------------------------------------

    async def lock(self) -> TokenResult:
        """``lock()``: network required. Our server locks the token (the Ant server suspends it at
        Mastercard); only then is the server lock stored (status 3)."""
        return await self._tokens.lock()

    async def unlock(self) -> TokenResult:
        """``unlock()``: network required; the stored server lock is cleared once our server unlocked
        (3 → 2). A local lock (4) stays: ``local_unlock`` clears that."""
        return await self._tokens.unlock()

    def lock_locally(self) -> TokenResult:
        """The app's own lock (status 4), without the network: for the app's security events, e.g. too
        many wrong app PINs, the device's screen lock removed, or the user's "pause payments" switch.
        Taps are declined (10008) until ``local_unlock()``; the server never hears of it."""
        return self._tokens.set_local_lock(True)

    def local_unlock(self) -> TokenResult:
        """``localUnlock()``: clears the local lock only (4 → 2, or 1 without credentials); a server
        lock stays (3), which only ``unlock()`` clears."""
        return self._tokens.set_local_lock(False)

    async def delete_token(self) -> TokenResult:
        """``deleteToken`` (spec §9): only in status 1, 2 or 3. Queued tap reports go first (a deleted
        token's taps can no longer count, so none may be left behind), then our server deletes the
        token (and the Ant server at Mastercard); only then does the phone forget it (status 0)."""
        return await self._tokens.delete()

    async def replenish(self) -> TokenResult:
        """``replenish()``: fetch credentials now (status 1, or to top up), through our server."""
        return await self._tokens.replenish()

    # --- taps (spec §10): the card, offline ----------------------------------------------------

    def set_transaction_permit(self, permit: TransactionPermit | None) -> None:
        """The app's ``TransactionPermit``; without one every tap proceeds (CDCVM rules still apply)."""
        self._hce.permit = permit

    def set_transaction_listener(self, listener: TransactionListener | None) -> None:
        self._hce.listener = listener or TransactionListener()

    def set_custom_data(self, data: bytes | None) -> None:
        """``setCustomData``: ≤ 14 bytes for the next ARQC (the join key to the server's payment)."""
        self._hce.required_card().set_custom_data(data)

    def verify_consumer(self) -> None:
        """The user passed the device's CDCVM (biometric or passcode): valid for the next 30 s."""
        self._hce.required_card().verify_consumer()

    def deactivate(self) -> None:
        """``HostApduService.onDeactivated``: the reader's field is gone; the next tap starts afresh."""
        self._hce.deactivate()

    def process_apdu(self, command: bytes) -> bytes:
        """``HostApduService.processCommandApdu``: one response APDU, offline and synchronous. Without
        an activated card, SELECT answers ``6A 82`` (the listener gets 10009) and anything else ``69 85``."""
        return self._hce.process_apdu(command)

    # --- tap reports and auto-replenish (spec §8) ----------------------------------------------

    def pending_tap_reports(self) -> list[dict[str, Any]]:
        """Tap reports our API has not accepted yet, oldest ATC first."""
        return self._reports.pending()

    async def report_taps(self) -> int:
        """Send every queued tap report to our API, then replenish if fewer than ``replenish_below``
        credentials remain. Returns how many reports still wait (0: all delivered). A failed send keeps
        its report, and the later ones, for the next call; our server counts each ATC once, so a
        report sent twice (the answer lost) is harmless."""
        return await self._tokens.report_taps()


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
        return await self._sdk._http.proxy(self._sdk.device_id(), sdk_request_header, sdk_request_data)


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
