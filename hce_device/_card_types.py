"""The card's vocabulary for the app: cryptogram types, permit results, tap failures, results, SPIs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Protocol


class CryptogramType(IntEnum):
    """Cryptogram Information Data (9F27)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80


class PermitResult(StrEnum):
    """``AppPermitResult`` (alipayplus-nfc.md §10.2)."""

    PROCEED = "PROCEED"
    DECLINE = "DECLINE"
    NEED_AUTH = "NEED_AUTH"


class TransactionRange(StrEnum):
    LOW_VALUE = "LOW_VALUE"
    HIGH_VALUE = "HIGH_VALUE"


class TapFailure(StrEnum):
    """Codes given to ``on_transaction_failed`` (Alipay+ result codes where one exists)."""

    CDCVM_REQUIRED = "10003"
    SDK_NOT_CONNECTED = "10006"
    INSUFFICIENT_CREDENTIALS = "10007"
    TOKEN_UNAVAILABLE = "10008"  # e.g. locked (status 3 or 4)
    TOKEN_DOES_NOT_EXIST = "10009"
    APP_DECLINED = "APP_DECLINE"
    TERMINAL_DECLINED = "TERMINAL_DECLINE"


@dataclass(frozen=True)
class TransactionInfo:
    """What the app's permit sees: amount (minor units), currency (ISO 4217 numeric), range, MCC."""

    amount: int
    currency_code: str
    transaction_range: TransactionRange
    merchant_category_code: str


@dataclass(frozen=True)
class TapResult:
    """A completed tap as the device records it (join it to the server's payment by custom data)."""

    cryptogram_type: CryptogramType
    cryptogram: bytes
    atc: int
    amount: int
    currency_code: str
    unpredictable_number: bytes
    cdcvm_verified: bool


class TransactionPermit(Protocol):
    """The app's decision for a tap: ``isAllowed(authBefore, transactionInfo)``."""

    def is_allowed(self, auth_before: bool, info: TransactionInfo) -> PermitResult: ...


class TransactionListener:
    """``TransactionListener``: override what you need; the defaults ignore the event."""

    def on_transaction_started(self) -> None:
        """The first command of a tap arrived."""

    def on_transaction_auth(self) -> None:
        """CDCVM is needed: prompt the user, who then taps again."""

    def on_transaction_finished(self, result: TapResult, atc: int, custom_data: bytes | None) -> None:
        """An ARQC left the phone; one credential was consumed."""

    def on_transaction_failed(self, code: str) -> None:
        """The tap ended without an ARQC (``TapFailure`` values)."""
