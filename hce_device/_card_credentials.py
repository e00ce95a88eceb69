"""The card's single-use credentials: one per ATC, kept in memory or in the secure store."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .secure_store import SecureStore


@dataclass(frozen=True)
class Credential:
    """One single-use credential: its ATC and the session key for that ATC."""

    atc: int
    single_use_key: bytes


class CredentialSource(Protocol):
    """Hands out credentials in ATC order and burns each one used."""

    def peek(self) -> Credential | None: ...

    def consume(self, atc: int) -> None: ...


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _usable(record: Mapping[str, Any], now: datetime) -> bool:
    """Unused and not expired (a record without ``expiresAt`` does not expire; one whose expiry
    cannot be read is not usable)."""
    if record.get("used"):
        return False
    expires_at = record.get("expiresAt")
    if expires_at is None:
        return True
    try:
        expires = datetime.fromisoformat(str(expires_at))
    except ValueError:
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires > now


def _next_credential(records: list[dict[str, Any]], now: datetime) -> Credential | None:
    usable = [record for record in records if _usable(record, now)]
    if not usable:
        return None
    record = min(usable, key=lambda item: int(item["atc"]))
    return Credential(int(record["atc"]), bytes.fromhex(str(record["singleUseKey"])))


def _mark_used(records: list[dict[str, Any]], atc: int) -> None:
    for record in records:
        if int(record["atc"]) == atc:
            record["used"] = True


class ListCredentials:
    """Credentials in the activation's shape ``[{atc, singleUseKey, expiresAt}]``, in memory."""

    def __init__(self, records: list[dict[str, Any]], clock: Clock = utc_now) -> None:
        self.records = [dict(record) for record in records]
        self._clock = clock

    def peek(self) -> Credential | None:
        return _next_credential(self.records, self._clock())

    def consume(self, atc: int) -> None:
        _mark_used(self.records, atc)


class StoredCredentials:
    """The secure store's ``credentials`` record (what ``nfc_sdk`` stores and counts), updated in place."""

    def __init__(self, store: SecureStore, clock: Clock = utc_now, name: str = "credentials") -> None:
        self._store = store
        self._clock = clock
        self._name = name

    def _records(self) -> list[dict[str, Any]]:
        return list((self._store.get(self._name) or {}).get("credentials", []))

    def peek(self) -> Credential | None:
        return _next_credential(self._records(), self._clock())

    def unused(self) -> int:
        """How many credentials a tap could still use (what isPaymentAvailable and replenish count)."""
        now = self._clock()
        return sum(1 for record in self._records() if _usable(record, now))

    def consume(self, atc: int) -> None:
        records = self._records()
        _mark_used(records, atc)
        self._store.put(self._name, {"credentials": records})
