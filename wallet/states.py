"""The states the wallet's processes and records share: plain enums, no table behind them, so
workflows can import them without the ORM."""

from __future__ import annotations

from enum import StrEnum


class UserStatus(StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"


class VerificationMethod(StrEnum):
    PIN = "PIN"
    OTP = "OTP"


class AccountKind(StrEnum):
    USER = "USER"
    SETTLEMENT = "SETTLEMENT"
    FUNDING = "FUNDING"


class PaymentStatus(StrEnum):
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    FAIL = "FAIL"
    CLOSED = "CLOSED"
