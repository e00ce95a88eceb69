"""The NFC SDK as the card (spec §10) and its tap-report queue (spec §8).

``HceCard`` is what Android's ``HostApduService`` talks to: the ``ContactlessCard`` of the stored,
activated token, offline and synchronous, with the app's ``TransactionPermit`` and
``TransactionListener``. Every ARQC that leaves the phone is queued durably in the secure store
(``TapReports``) before anything else, then sent to our API in the background when an event loop runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from alipayplus.nfc_sdk import TokenStatus

from ._nfc_http import NfcApi
from ._nfc_records import StoredToken
from ._nfc_types import TAPS, NfcResultCode, NfcSdkError
from .card import (
    INS_SELECT,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    ContactlessCard,
    PermitResult,
    TapFailure,
    TapResult,
    TransactionInfo,
    TransactionListener,
    TransactionPermit,
)
from .secure_store import SecureStore, SecureStoreError

# the facade's logger: the SDK's log records keep the name they always had
logger = logging.getLogger("hce_device.nfc_sdk")


class TapReports:
    """Tap reports our API has not accepted yet, kept in the secure store's ``taps`` record."""

    def __init__(self, store: SecureStore, clock: Callable[[], datetime], api: NfcApi) -> None:
        self._store = store
        self._clock = clock
        self._api = api

    def pending(self) -> list[dict[str, Any]]:
        """Oldest ATC first."""
        return sorted(self._reports(), key=lambda report: int(report["atc"]))

    def waiting(self) -> int:
        return len(self._reports())

    def _reports(self) -> list[dict[str, Any]]:
        return list((self._store.get(TAPS) or {}).get("reports", []))

    def add(self, reference: str, atc: int, custom_data: bytes | None) -> None:
        """Queue the tap's report, once per ATC."""
        reports = self._reports()
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

    async def flush(self) -> int:
        """Send the queued reports in ATC order; stop at the first failure (the network is likely
        down). A report our API can never accept (410 deleted, 422 malformed) is dropped. Returns
        how many still wait."""
        for report in self.pending():
            if not self._api.connected or not self._api.online:
                break
            try:
                await self._api.report_tap(report)
            except NfcSdkError as exc:
                if exc.http_status not in (410, 422):
                    break
                logger.warning("tap report for ATC %s dropped: %s", report["atc"], exc)
            remaining = [r for r in self._reports() if r["atc"] != report["atc"]]
            self._store.put(TAPS, {"reports": remaining})
        return self.waiting()


class HceCard:
    """The stored token's card behind ``process_apdu``, one instance per token (it holds the tap's state)."""

    def __init__(
        self,
        token: StoredToken,
        reports: TapReports,
        api: NfcApi,
        *,
        send_reports: Callable[[], Awaitable[int]],
        clock: Callable[[], datetime],
        cvm_limit: int | None,
    ) -> None:
        self._token = token
        self._reports = reports
        self._api = api
        self._send_reports = send_reports  # the SDK's report_taps(): reports, then replenishment
        self._clock = clock
        self._cvm_limit = cvm_limit  # minor units; None: the reader's CVM-limit bit decides
        self.permit: TransactionPermit | None = None
        self.listener = TransactionListener()
        self._card: tuple[str, ContactlessCard] | None = None  # (tokenReferenceId, its card)
        self._background: set[asyncio.Task[None]] = set()
        token.when_forgotten(self.forget_card)

    async def settle(self) -> None:
        """Wait for the reports being sent in the background."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def forget_card(self) -> None:
        self._card = None

    def deactivate(self) -> None:
        if self._card is not None:
            self._card[1].deactivate()

    def process_apdu(self, command: bytes) -> bytes:
        card = self._tap_card()
        if card is not None:
            return card.process_apdu(command)
        if command[1:2] == bytes([INS_SELECT]):  # the reader looks for a card there is not
            self._tell_listener(self.listener.on_transaction_failed, TapFailure.TOKEN_DOES_NOT_EXIST.value)
            return SW_FILE_NOT_FOUND
        return SW_CONDITIONS_NOT_SATISFIED

    def required_card(self) -> ContactlessCard:
        card = self._tap_card()
        if card is None:
            raise NfcSdkError(NfcResultCode.TOKEN_DOES_NOT_EXIST, "there is no activated card on this phone")
        return card

    def _tap_card(self) -> ContactlessCard | None:
        """The card of the stored, activated token (one instance per token: it holds the tap's state)."""
        try:
            token = self._token.token()
            if token is None or not token.get("active"):
                return None
            reference = str(token["tokenReferenceId"])
            if self._card is None or self._card[0] != reference:
                card = ContactlessCard(
                    token["cardProfile"],
                    self._token.credentials(),
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
        if not self._api.connected:
            return TapFailure.SDK_NOT_CONNECTED
        status = self._token.status()
        if status in (TokenStatus.LOCKED, TokenStatus.LOCKED_LOCALLY, TokenStatus.QUERY_FAILED):
            return TapFailure.TOKEN_UNAVAILABLE
        return None

    def tapped(self, atc: int, custom_data: bytes | None) -> None:
        """An ARQC left the phone: its report is queued durably before anything else, then sent."""
        self._reports.add(self._token.reference(), atc, custom_data)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop here: the next report_taps() sends it
        task = loop.create_task(self._report_in_background())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _report_in_background(self) -> None:
        try:
            await self._send_reports()
        except Exception:  # it stays queued; the next call sends it
            logger.exception("background tap report failed")

    def _tell_listener(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("TransactionListener callback failed")


class _AppPermit:
    """The card asks the app's current permit (set any time); none set: proceed."""

    def __init__(self, hce: HceCard) -> None:
        self._hce = hce

    def is_allowed(self, auth_before: bool, info: TransactionInfo) -> PermitResult:
        permit = self._hce.permit
        return PermitResult.PROCEED if permit is None else permit.is_allowed(auth_before, info)


class _TapEvents(TransactionListener):
    """The card's events: a finished tap is queued as a report first, then the app's listener hears."""

    def __init__(self, hce: HceCard) -> None:
        self._hce = hce

    def on_transaction_started(self) -> None:
        self._hce.listener.on_transaction_started()

    def on_transaction_auth(self) -> None:
        self._hce.listener.on_transaction_auth()

    def on_transaction_finished(self, result: TapResult, atc: int, custom_data: bytes | None) -> None:
        try:
            self._hce.tapped(atc, custom_data)
        except Exception:  # the ARQC has left: the server still learns the ATC from the payment
            logger.exception("the tap report for ATC %s could not be queued", atc)
        self._hce.listener.on_transaction_finished(result, atc, custom_data)

    def on_transaction_failed(self, code: str) -> None:
        self._hce.listener.on_transaction_failed(code)
