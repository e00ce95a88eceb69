"""Alipay+ NFC (HCE Mastercard token) messages between Alipay+ and the MPP (seeds 000–002)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import ConfigDict

from ._base import Message
from ._result import Result
from ._types import DateTime, Id64, OptionalId16, OptionalId64, OptionalId128


class AccountSource(StrEnum):
    """Where the tokenised account came from (seed 002)."""

    ACCOUNT_ON_FILE = "ACCOUNT_ON_FILE"
    ACCOUNT_ADDED_MANUALLY = "ACCOUNT_ADDED_MANUALLY"
    ACCOUNT_ADDED_VIA_APPLICATION = "ACCOUNT_ADDED_VIA_APPLICATION"
    EXISTING_TOKEN_CREDENTIAL = "EXISTING_TOKEN_CREDENTIAL"
    ACCOUNT_ADDED_VIA_BROWSER = "ACCOUNT_ADDED_VIA_BROWSER"
    ACCOUNT_ADDED_VIA_CHIP_DATA = "ACCOUNT_ADDED_VIA_CHIP_DATA"


class TokenData(Message):
    """The token data generated during provisioning. Seed 002 hides its child fields, so every
    field Alipay+ sends is kept as received (and stored), none is assumed."""

    model_config = ConfigDict(extra="allow")


class TokenActivationNotificationRequest(Message):
    """Alipay+ → MPP: the token is activated and ready for use (seed 002)."""

    # [inferred] the seed names no path; this follows the /aps/api/v1/{resource}/{api} pattern
    PATH: ClassVar[str] = "/aps/api/v1/tokens/tokenActivationNotification"

    token_reference_id: Id64
    customer_id: OptionalId64 = None
    wallet_id: OptionalId16 = None
    token_requestor_id: OptionalId16 = None
    secure_element_id: OptionalId128 = None
    account_source: AccountSource | None = None
    service_request_time: DateTime
    token_activated_time: DateTime
    token_data: TokenData


class TokenActivationNotificationResponse(Message):
    result: Result


__all__ = [
    "AccountSource",
    "TokenActivationNotificationRequest",
    "TokenActivationNotificationResponse",
    "TokenData",
]
