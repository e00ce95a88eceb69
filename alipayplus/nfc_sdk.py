"""What the Alipay+ NFC SDK's requests carry inside ``sdkProxy`` (seed 000): the Ant server's
``sdkRequestData`` and ``sdkResponseData`` payloads, Mastercard's public key, the header, and the
SDK's token status codes.

The MPP's proxy forwards the SDK's requests unchanged (``alipayplus.nfc.SdkProxyRequest`` is the
envelope); the activation and token workflows make these same requests themselves, and the sandbox
Ant server answers them. Both use these models. The JSON is the SDK's own: camelCase, unknown fields
ignored, absent optional fields left out. Fields the stored seed does not show are [inferred] from
the SDK's flow (apply, poll, provision, notify, NTU, replenish, lock/unlock/delete).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, StringConstraints

from ._base import CamelModel, Message

SdkId = Annotated[str, StringConstraints(min_length=1, max_length=128)]  # a token request or reference id
DeviceFingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]  # SHA-256, hex (§7.4)


class TokenStatus(IntEnum):
    """The SDK's token status codes: ``isPaymentAvailable()``'s answer (seed 000's table), and the
    ``statusCode`` of an activation's progress."""

    DISCONNECTED = -2
    QUERY_FAILED = -1
    NO_CARD = 0
    NO_CREDENTIALS = 1
    PAYMENT_ALLOWED = 2
    LOCKED = 3
    LOCKED_LOCALLY = 4
    IN_ACTIVATION = 11
    AWAITING_CONFIRMATION = 21


# --- the header ------------------------------------------------------------------------------


class SdkRequestHeader(CamelModel):
    """``sdkRequestHeader``: which API, and the SDK's request id (a repeat keeps it, so the Ant server
    answers it as the same request [inferred])."""

    api: Annotated[str, StringConstraints(min_length=1)]
    request_id: str | None = None
    sdk_version: str | None = None


class SdkResponseHeader(CamelModel):
    """``sdkResponseHeader``: the request's header echoed, with the Ant server's (or Mastercard's)
    outcome in ``code`` (``alipayplus.nfc.SDK_SUCCESS`` when it did it)."""

    api: str | None = None
    request_id: str | None = None
    sdk_version: str | None = None
    code: str = ""


# --- payloads ----------------------------------------------------------------------------------


class SdkData(Message):
    """A payload inside ``sdkRequestData`` or ``sdkResponseData``."""


class SdkRequestData(SdkData):
    """A request's payload; ``API`` names it in the header."""

    API: ClassVar[str]


class TokenRequestStatus(StrEnum):
    """A token application's status (applyNfcToken, queryToken)."""

    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class NtuStatus(StrEnum):
    """queryNTUResult: whether Mastercard's token update (NTU) has reached the token."""

    PENDING = "PENDING"
    UPDATED = "UPDATED"


class PolledAnswer(SdkData):
    """An answer the SDK polls until its ``status`` is the one it waits for."""

    status: str
    reason: str | None = None  # REJECTED: why


class RefusalAnswer(SdkData):
    """The payload of any answer whose header ``code`` is not SUCCESS."""

    reason: str


class Credential(SdkData):
    """One single-use payment credential (a session key for one ATC)."""

    atc: int
    single_use_key: str  # hex
    expires_at: str | None = None  # ISO 8601, as the Ant server sends it


class CardProfile(SdkData):
    """The token's card profile from provision, for the phone's card. Kept as sent: fields not
    named here travel on too."""

    model_config = ConfigDict(extra="allow")

    token_pan: str | None = None
    pan_sequence_number: str | None = None
    expiry_date: str | None = None  # YYMM
    aid: str | None = None
    issuer_master_key_id: str | None = None


# getPublicKey (Mastercard, not the Ant server: its own path, the same payload convention)


class GetPublicKeyData(SdkRequestData):
    API: ClassVar[str] = "getPublicKey"


class PublicKeyAnswer(SdkData):
    public_key_id: SdkId
    certificate: str | None = None


# applyNfcToken, queryToken


class ApplyNfcTokenData(SdkRequestData):
    API: ClassVar[str] = "applyNfcToken"

    device_fingerprint: DeviceFingerprint
    public_key_id: SdkId


class ApplyNfcTokenAnswer(SdkData):
    status: TokenRequestStatus = TokenRequestStatus.PENDING
    token_request_id: SdkId


class QueryTokenData(SdkRequestData):
    API: ClassVar[str] = "queryToken"

    token_request_id: SdkId


class QueryTokenAnswer(PolledAnswer):
    status: TokenRequestStatus
    token_reference_id: SdkId | None = None  # APPROVED: the token


# the token's own requests: each names it


class TokenReferenceData(SdkRequestData):
    token_reference_id: SdkId


class ProvisionData(TokenReferenceData):
    API: ClassVar[str] = "provision"


class ProvisionAnswer(SdkData):
    token_reference_id: SdkId | None = None
    card_profile: CardProfile = Field(default_factory=CardProfile)
    credentials: list[Credential] = []


class NotifyProvisionResultData(TokenReferenceData):
    API: ClassVar[str] = "notifyProvisionResult"

    result: Literal["SUCCESS", "FAILURE"]


class NotifyProvisionResultAnswer(SdkData):
    acknowledged: bool = False


class QueryNtuResultData(TokenReferenceData):
    API: ClassVar[str] = "queryNTUResult"


class QueryNtuResultAnswer(PolledAnswer):
    status: NtuStatus


class ReplenishData(TokenReferenceData):
    API: ClassVar[str] = "replenish"

    count: int = Field(10, ge=1, le=100)


class ReplenishAnswer(SdkData):
    credentials: list[Credential] = []


class LockTokenData(TokenReferenceData):
    API: ClassVar[str] = "lockToken"


class UnlockTokenData(TokenReferenceData):
    API: ClassVar[str] = "unlockToken"


class DeleteTokenData(TokenReferenceData):
    API: ClassVar[str] = "deleteToken"


class TokenStateAnswer(SdkData):
    """lockToken, unlockToken, deleteToken: the token's state at Mastercard now."""

    state: str | None = None  # SUSPENDED, ACTIVE, DELETED


__all__ = [
    "ApplyNfcTokenAnswer",
    "ApplyNfcTokenData",
    "CardProfile",
    "Credential",
    "DeleteTokenData",
    "DeviceFingerprint",
    "GetPublicKeyData",
    "LockTokenData",
    "NotifyProvisionResultAnswer",
    "NotifyProvisionResultData",
    "NtuStatus",
    "PolledAnswer",
    "ProvisionAnswer",
    "ProvisionData",
    "PublicKeyAnswer",
    "QueryNtuResultAnswer",
    "QueryNtuResultData",
    "QueryTokenAnswer",
    "QueryTokenData",
    "RefusalAnswer",
    "ReplenishAnswer",
    "ReplenishData",
    "SdkData",
    "SdkId",
    "SdkRequestData",
    "SdkRequestHeader",
    "SdkResponseHeader",
    "TokenReferenceData",
    "TokenRequestStatus",
    "TokenStateAnswer",
    "TokenStatus",
    "UnlockTokenData",
]
