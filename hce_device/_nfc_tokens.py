"""Token management (spec §9) and auto-replenish (spec §8): the NFC SDK's token calls.

``lock()``/``unlock()`` need the network and change the stored lock only once our server did;
``lock_locally()``/``local_unlock()`` are the phone's own lock (status 4); ``delete_token()`` (status 1,
2, 3) delivers the queued tap reports, deletes at our server, then forgets the token. After the tap
reports, fewer than ``replenish_below`` credentials fetch more through our server. One exchange with
our token API at a time, and each call refused outside the statuses it makes sense in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from alipayplus.nfc_sdk import TokenStatus

from ._nfc_http import NfcApi
from ._nfc_records import StoredToken
from ._nfc_taps import TapReports
from ._nfc_types import NfcResultCode, NfcSdkError, TokenResult
from .secure_store import SecureStoreError

# the facade's logger: the SDK's log records keep the name they always had
logger = logging.getLogger("hce_device.nfc_sdk")

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
_CARD_EXISTS = (
    TokenStatus.NO_CREDENTIALS,
    TokenStatus.PAYMENT_ALLOWED,
    TokenStatus.LOCKED,
    TokenStatus.LOCKED_LOCALLY,
)


class TokenManager:
    """The token calls of the SDK's facade, and the tap reports' delivery with the top-up after it."""

    def __init__(self, token: StoredToken, reports: TapReports, api: NfcApi, *, replenish_below: int) -> None:
        self._token = token
        self._reports = reports
        self._api = api
        self._replenish_below = replenish_below
        self._calls = asyncio.Lock()  # one exchange with our token API at a time

    async def lock(self) -> TokenResult:
        return await self._token_call(_CARD_EXISTS, lambda: self._manage_at_server("lock"))

    async def unlock(self) -> TokenResult:
        return await self._token_call(_CARD_EXISTS, lambda: self._manage_at_server("unlock"))

    def set_local_lock(self, locked: bool) -> TokenResult:
        refused = self._refusal(_CARD_EXISTS)
        if refused is not None:
            return refused
        try:
            self._token.set_lock(local=locked)
        except SecureStoreError as exc:
            return self._token_result(NfcResultCode.INNER_EXCEPTION, str(exc))
        return self._token_result(NfcResultCode.SUCCESS)

    async def delete(self) -> TokenResult:
        deletable = (TokenStatus.NO_CREDENTIALS, TokenStatus.PAYMENT_ALLOWED, TokenStatus.LOCKED)
        return await self._token_call(deletable, self._delete_at_server)

    async def replenish(self) -> TokenResult:
        allowed = (TokenStatus.NO_CREDENTIALS, TokenStatus.PAYMENT_ALLOWED, TokenStatus.LOCKED_LOCALLY)
        return await self._token_call(allowed, self._replenish_now)

    async def report_taps(self) -> int:
        """Send every queued tap report, then top up below the threshold; how many reports still wait.
        A failed send keeps its report, and the later ones, for the next call; our server counts each
        ATC once, so a report sent twice (the answer lost) is harmless."""
        if not self._api.connected:
            return self._reports.waiting()
        async with self._calls:
            try:
                waiting = await self._reports.flush()
                await self._top_up(force=False)
            except (NfcSdkError, SecureStoreError) as exc:
                logger.info("tap reports or replenishment not done: %s", exc)
                waiting = self._reports.waiting()
        return waiting

    async def _token_call(self, allowed: tuple[TokenStatus, ...], call: Callable[[], Awaitable[None]]) -> TokenResult:
        """One token call: refused outside ``allowed`` statuses, one at a time, and our API's refusal
        or the secure store's failure as the SDK's result code."""
        refused = self._refusal(allowed)
        if refused is not None:
            return refused
        async with self._calls:
            try:
                await call()
            except NfcSdkError as exc:
                return self._failed(exc)
            except SecureStoreError as exc:
                return self._token_result(NfcResultCode.INNER_EXCEPTION, str(exc))
        return self._token_result(NfcResultCode.SUCCESS)

    async def _manage_at_server(self, action: str) -> None:
        self._token.follow_server(await self._api.manage_token(self._token.reference(), action))

    async def _delete_at_server(self) -> None:
        if await self._reports.flush():  # a deleted token's taps can no longer count
            raise NfcSdkError(NfcResultCode.NETWORK_EXCEPTION, "tap reports are not delivered yet")
        try:
            await self._api.delete_token(self._token.reference())
        except NfcSdkError as exc:
            if exc.http_status != 410:  # 410: deleted already
                raise
        self._token.forget()

    async def _replenish_now(self) -> None:
        await self._reports.flush()
        await self._top_up(force=True)

    async def _top_up(self, *, force: bool) -> None:
        """Below the threshold (or when forced): collect the credentials our server holds for the phone,
        or have it replenish when none wait, store them, and confirm them (``/credentials``)."""
        if not self._token.exists() or (not force and self._token.unused_credentials() >= self._replenish_below):
            return
        reference = self._token.reference()
        state = await self._api.token_state(reference)
        self._token.follow_server(state)
        if state.get("lifecycle") == "LOCKED":  # no credentials until unlocked
            raise NfcSdkError(NfcResultCode.TOKEN_UNAVAILABLE, "the token is locked", 409)
        if state.get("lifecycle") == "DELETED":
            raise NfcSdkError(NfcResultCode.TOKEN_DOES_NOT_EXIST, "the token was deleted", 410)
        waiting = state.get("undelivered") or []
        if not waiting:
            waiting = (await self._api.replenish(reference)).get("undelivered") or []
        if waiting:
            self._token.add_credentials(waiting)
            await self._api.confirm_credentials(reference, waiting)

    def _refusal(self, allowed: tuple[TokenStatus, ...]) -> TokenResult | None:
        status = self._token.status()
        if status in allowed:
            return None
        code, why = _REFUSED_IN.get(status, (NfcResultCode.INVALID_INPUT_PARAMETERS, f"not in status {status}"))
        return TokenResult(code, status, why)

    def _failed(self, exc: NfcSdkError) -> TokenResult:
        """Our API's refusal as the SDK's code: 409 locked, 410 deleted (the phone forgets the token)."""
        if exc.http_status == 409:
            return self._token_result(NfcResultCode.TOKEN_UNAVAILABLE, str(exc))
        if exc.http_status == 410:
            self._token.forget()
            return self._token_result(NfcResultCode.TOKEN_DOES_NOT_EXIST, "the token was deleted")
        return self._token_result(exc.code, str(exc))

    def _token_result(self, code: NfcResultCode, failure: str | None = None) -> TokenResult:
        return TokenResult(code, self._token.status(), failure)
