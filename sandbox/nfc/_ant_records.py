"""The sandbox Ant server's memory and answers: APIs, answer codes, applications, tokens and token numbers."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar, get_args

from pydantic import ValidationError

from alipayplus.nfc_sdk import CardProfile, QueryTokenAnswer, RefusalAnswer, SdkData, SdkRequestData, TokenRequestStatus
from sandbox._http import first_error

from .mastercard import TokenState

AntApi = Literal[
    "applyNfcToken",
    "queryToken",
    "provision",
    "notifyProvisionResult",
    "queryNTUResult",
    "replenish",
    "lockToken",
    "unlockToken",
    "deleteToken",
]
ANT_APIS: tuple[str, ...] = get_args(AntApi)
TokenActiveHook = Callable[[str, str, str], Awaitable[None]]  # (tokenReferenceId, customerId, deviceFingerprint)

SYSTEM_ERROR = "SYSTEM_ERROR"
UNKNOWN_API = "UNKNOWN_API"
PARAM_ILLEGAL = "PARAM_ILLEGAL"
TOKEN_NOT_FOUND = "TOKEN_NOT_FOUND"
TOKEN_NOT_ACTIVE = "TOKEN_NOT_ACTIVE"
REJECTED = "REJECTED"

TOKEN_PAN_PREFIX = "5413"
TOKEN_REFERENCE_PREFIX = "DAPLMC"
AID = "A0000000041010"
DEFAULT_REJECT_REASON = "The card network declined the token request"

PayloadT = TypeVar("PayloadT", bound=SdkRequestData)


@dataclass
class Application:
    """One applyNfcToken: decided (approved or rejected) once it has been polled enough."""

    token_request_id: str
    customer_id: str
    device_fingerprint: str
    public_key_id: str
    reject_reason: str | None = None  # decided at creation (customer / next application), told later
    polls: int = 0
    status: TokenRequestStatus = TokenRequestStatus.PENDING
    token_reference_id: str | None = None


@dataclass
class AntToken:
    """An approved token as the Ant server tracks it, from approval to credentials."""

    token_reference_id: str
    customer_id: str
    device_fingerprint: str
    card_profile: CardProfile | None = None
    state: TokenState | None = None  # None until provisioned
    ntu_polls: int = 0
    next_atc: int = 1
    activated_at: datetime | None = None


@dataclass(frozen=True)
class AntAnswer:
    """The Ant server's answer: ``sdkResponseHeader.code`` and the ``sdkResponseData`` payload."""

    code: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, code: str, payload: SdkData) -> AntAnswer:
        """``payload`` as the JSON object it is sent as (absent optional fields left out)."""
        return cls(code, payload.model_dump(mode="json", exclude_none=True))


class AntError(Exception):
    """A refusal by the Ant server: answered with ``code`` in the header and ``reason`` in the data."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def answer(self) -> AntAnswer:
        return AntAnswer.of(self.code, RefusalAnswer(reason=self.reason))


@dataclass(frozen=True)
class AntCall:
    """One call received, for tests and the sandbox's controls."""

    api: str
    customer_id: str
    code: str
    received_at: datetime


def _luhn_digit(digits: str) -> str:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def token_pan() -> str:
    """A random 16-digit Mastercard token PAN (5413…) with a valid Luhn check digit, as real ones have."""
    body = TOKEN_PAN_PREFIX + "".join(str(secrets.randbelow(10)) for _ in range(11))
    return body + _luhn_digit(body)


def token_reference_id() -> str:
    return TOKEN_REFERENCE_PREFIX + secrets.token_hex(13).upper()


def _expiry(now: datetime) -> str:
    """YYMM three years ahead: the token's lifetime."""
    return f"{(now.year + 3) % 100:02d}{now.month:02d}"


def new_card_profile(now: datetime) -> CardProfile:
    """The card profile a token is provisioned with: a fresh token PAN, good for three years from ``now``."""
    return CardProfile(
        token_pan=token_pan(),
        pan_sequence_number="00",
        expiry_date=_expiry(now),
        aid=AID,
        issuer_master_key_id="IMK" + secrets.token_hex(8).upper(),
    )


def token_status(application: Application) -> QueryTokenAnswer:
    if application.status is TokenRequestStatus.APPROVED:
        return QueryTokenAnswer(status=application.status, token_reference_id=application.token_reference_id)
    if application.status is TokenRequestStatus.REJECTED:
        return QueryTokenAnswer(status=application.status, reason=application.reject_reason)
    return QueryTokenAnswer(status=TokenRequestStatus.PENDING)


def parse_payload(payload_type: type[PayloadT], data: str) -> PayloadT:
    try:
        return payload_type.from_wire(data)
    except ValidationError as exc:
        raise AntError(PARAM_ILLEGAL, "sdkRequestData." + first_error(exc)) from None
