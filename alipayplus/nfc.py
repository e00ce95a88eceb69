"""Alipay+ NFC (HCE Mastercard token) messages between Alipay+ and the MPP (seeds 000–002)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import ConfigDict, Strict, StringConstraints

from ._base import Message
from ._result import Result
from ._types import DateTime, Id64, OptionalId16, OptionalId64, OptionalId128, OptionalText


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


# --- sdkProxy (MPP -> Alipay+) ------------------------------------------------------------


class SdkProxyRequest(Message):
    """An Alipay+ NFC SDK request for the Ant server, forwarded with our customerId (spec §4.1).

    The header and data are the SDK's own, opaque to the MPP: passed through unchanged."""

    PATH: ClassVar[str] = "/aps/api/v1/mobile/sdkProxy"

    customer_id: Id64
    sdk_request_header: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=4096)]
    sdk_request_data: Annotated[str, Strict(), StringConstraints(max_length=65536)] = ""


class SdkProxyResponse(Message):
    result: Result
    sdk_response_header: OptionalText = None
    sdk_response_data: OptionalText = None


__all__ = [
    "AccountSource",
    "SdkProxyRequest",
    "SdkProxyResponse",
    "TokenActivationNotificationRequest",
    "TokenActivationNotificationResponse",
    "TokenData",
]
