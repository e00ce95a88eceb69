"""What the NFC SDK keeps about its token in the secure store, and the token status read from it.

``isPaymentAvailable()`` answers from these records alone (seed 000's token status table): the
running activation's phase, the token, its locks (server and local) and its unused credentials.
Activation, token management and taps all read and change them through ``StoredToken``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from alipayplus.nfc_sdk import TokenStatus

from ._nfc_types import ACTIVATION, CREDENTIALS, LOCK, TAPS, TOKEN, NfcResultCode, NfcSdkError
from .card import StoredCredentials
from .secure_store import SecureStore, SecureStoreError


class StoredToken:
    """The token's records on this phone, and the token status while the SDK is connected."""

    def __init__(self, store: SecureStore, clock: Callable[[], datetime], connected: Callable[[], bool]) -> None:
        self._store = store
        self._clock = clock
        self._connected = connected
        self._forgotten: list[Callable[[], None]] = []  # told when the token is gone (e.g. the cached card)

    def when_forgotten(self, callback: Callable[[], None]) -> None:
        self._forgotten.append(callback)

    def status(self) -> int:
        """The token status from what is stored; -1 when the store cannot be trusted or read."""
        if not self._connected():
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
        return TokenStatus.PAYMENT_ALLOWED if self.unused_credentials() else TokenStatus.NO_CREDENTIALS

    def credentials(self) -> StoredCredentials:
        return StoredCredentials(self._store, self._clock, CREDENTIALS)

    def unused_credentials(self) -> int:
        return self.credentials().unused()

    def token(self) -> dict[str, Any] | None:
        """The token record: reference, card profile, and whether the activation activated it."""
        return self._store.get(TOKEN)

    def exists(self) -> bool:
        return self.token() is not None

    def reference(self) -> str:
        token = self._store.get(TOKEN)
        if token is None or not token.get("tokenReferenceId"):
            raise NfcSdkError(NfcResultCode.TOKEN_DOES_NOT_EXIST, "there is no card on this phone")
        return str(token["tokenReferenceId"])

    def add_credentials(self, fresh: list[dict[str, Any]]) -> None:
        """Keep the credentials not held yet (by ATC), after those held."""
        records = list((self._store.get(CREDENTIALS) or {}).get("credentials", []))
        held = {int(record["atc"]) for record in records}
        records += [dict(credential) for credential in fresh if int(credential["atc"]) not in held]
        self._store.put(CREDENTIALS, {"credentials": records})

    def set_lock(self, **locks: bool) -> None:
        """Change the stored lock (``server``, ``local``), keeping the other."""
        self._store.put(LOCK, {**(self._store.get(LOCK) or {}), **locks})

    def follow_server(self, state: dict[str, Any]) -> None:
        """Our server's word on the token: its lock is the stored server lock; deleted, it is gone."""
        lifecycle = state.get("lifecycle")
        if lifecycle == "DELETED":
            self.forget()
            return
        lock = self._store.get(LOCK) or {}
        if bool(lock.get("server")) != (lifecycle == "LOCKED"):
            self._store.put(LOCK, {**lock, "server": lifecycle == "LOCKED"})

    # --- what an activation keeps ---------------------------------------------------------------

    def perform_device_step(self, step: str, payload: dict[str, Any]) -> bool:
        """A step the activation workflow asks of the phone; False (reported as ok=false) when it cannot."""
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

    def remember_activation(self, progress: dict[str, Any]) -> None:
        """Keep the running activation's phase, so ``isPaymentAvailable`` says 11/21 across restarts."""
        if progress.get("phase") in ("RUNNING", "WAITING_FOR_DEVICE", "WAITING_FOR_CONFIRMATION"):
            self._store.put(ACTIVATION, {"phase": progress["phase"], "statusCode": progress.get("statusCode")})

    def activation_done(self) -> None:
        """The workflow ended with the token active: no running activation any more (status 1 or 2)."""
        self._store.delete(ACTIVATION)

    def forget(self) -> None:
        """No card (status 0) after a failed activation or a deletion, so the next apply starts afresh."""
        for name in (ACTIVATION, TOKEN, CREDENTIALS, LOCK, TAPS):
            self._store.delete(name)
        for callback in self._forgotten:
            callback()
