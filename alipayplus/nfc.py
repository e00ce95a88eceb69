"""Alipay+ NFC (HCE Mastercard token) messages between Alipay+ and the MPP (seeds 000–002)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import ConfigDict, Strict, StringConstraints, model_validator

from ._amount import Amount
from ._base import Message
from ._result import Result
from ._types import DateTime, Id64, OptionalId16, OptionalId64, OptionalId128, OptionalText, contains_nul


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
    field Alipay+ sends is kept as received (and stored), none is assumed, but like every free text
    none may hold a NUL."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _no_nul(self) -> TokenData:
        for name, value in (self.model_extra or {}).items():
            if contains_nul(name) or contains_nul(value):
                raise ValueError(f"must not contain NUL (U+0000), found in {name!r}")
        return self


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


SDK_SUCCESS = "SUCCESS"  # the ``code`` in sdkResponseHeader when the Ant server (or Mastercard) did it


# --- NFC payments (Alipay+ -> MPP) --------------------------------------------------------

CUSTOM_DATA_MAX_BYTES = 14  # MCBP wallet transaction data in the IAD from byte 19 (spec §10.1)
CUSTOM_DATA_PATTERN = rf"^([0-9A-Fa-f]{{2}}){{1,{CUSTOM_DATA_MAX_BYTES}}}$"  # the bytes as hex
NFC_PAYMENT_METHOD_TYPE = "NFC"  # paymentMethod.paymentMethodType [inferred]: the pay-nfc page does not name it


class NfcPaymentInfo(Message):
    """What an NFC ``pay`` carries of the tap [inferred: the stored pay-nfc page is truncated].

    The acquirer turns the token into our user (``paymentMethod.customerId``); the tap's custom
    data (the phone's own reference, hex) joins the device's record to this payment (spec §10.1)."""

    token_reference_id: Id64
    custom_data: Annotated[  # kept upper-case: the phone looks its payment up by it
        str | None, StringConstraints(pattern=CUSTOM_DATA_PATTERN, to_upper=True)
    ] = None
    atc: Annotated[str | None, StringConstraints(pattern=r"^[0-9]{1,5}$")] = None  # the tap's ATC, decimal


class AdjustRefundScenario(StrEnum):
    """``subScenarioType`` of adjustRefund (spec §13.3)."""

    EXCEED_REFUND = "EXCEED_REFUND"  # the part of a merchant refund above the payment
    UNLINKED_REFUND = "UNLINKED_REFUND"  # a merchant refund with no payment behind it


class AdjustRefundRequest(Message):
    """Alipay+ → MPP, NFC only: an excess or unlinked refund. The MPP may fail it only for
    technical reasons (signature, parameters), never for business ones (spec §13.3).

    Fields beyond subScenarioType are [inferred] (the stored page stops there): the idempotency
    id ``refundRequestId``, ``refundAmount``, the original ``paymentRequestId`` for
    EXCEED_REFUND and the user's ``customerId`` for UNLINKED_REFUND."""

    PATH: ClassVar[str] = "/aps/api/v1/payments/adjustRefund"  # [inferred] beside refund

    acquirer_id: Id64
    psp_id: Id64
    refund_request_id: Id64
    sub_scenario_type: AdjustRefundScenario
    refund_amount: Amount
    payment_request_id: OptionalId64 = None  # EXCEED_REFUND: the payment whose refund exceeded it
    customer_id: OptionalId64 = None  # UNLINKED_REFUND: who gets the money (the card's user)
    refund_reason: OptionalText = None
    extend_info: OptionalText = None

    def key_fields_digest(self) -> str:
        """Digest of the fields a repeat must keep (as refund's)."""
        return self.digest_of({"sub_scenario_type", "refund_amount", "payment_request_id", "customer_id"})


class AdjustRefundResponse(Message):
    result: Result
    refund_id: OptionalId64 = None
    refund_time: DateTime | None = None


__all__ = [
    "CUSTOM_DATA_MAX_BYTES",
    "CUSTOM_DATA_PATTERN",
    "AdjustRefundRequest",
    "AdjustRefundResponse",
    "AdjustRefundScenario",
    "NFC_PAYMENT_METHOD_TYPE",
    "NfcPaymentInfo",
    "SDK_SUCCESS",
    "AccountSource",
    "SdkProxyRequest",
    "SdkProxyResponse",
    "TokenActivationNotificationRequest",
    "TokenActivationNotificationResponse",
    "TokenData",
]
