"""What Alipay+'s SDKs exchange with Alipay+ in merchant-presented mode (seed 003).

Not MPP APIs: the server SDK (code identification) runs beside our API, and the client SDK
inside the wallet app. In the real network both are Ant's libraries talking to Alipay+'s
servers; here the sandbox serves these paths so the whole flow runs on one machine. Same wire
rules as every Alipay+ message: camelCase, every scalar a string.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, Strict, StringConstraints

from ._base import Message
from ._result import Result
from ._types import DateTime, Flag, Id64, OptionalText, Text

# --- server SDK: ac.code.service.CodeIdentificationService ---------------------------------


class CodeIdentificationInitRequest(Message):
    """``CodeIdentificationService#init``: load the code rules; the MPP blocks start-up unless S."""

    PATH: ClassVar[str] = "/aps/sdk/v1/codeIdentification/init"

    client_id: Text


class CodeIdentificationInitResult(Message):
    result: Result
    rules_version: OptionalText = None


class PostCodeMatchAction(StrEnum):
    DECODE = "DECODE"  # an order code: decode it
    OPEN_URL = "OPEN_URL"  # an entry code: open the merchant's page first


class IdentifyCodeRequest(Message):
    """``CodeIdentificationService#identify``: can Alipay+ process this scanned code?"""

    PATH: ClassVar[str] = "/aps/sdk/v1/codeIdentification/identify"

    code_value: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=8192)]
    # a hashed user id for Alipay+'s grey release; never the user's real id
    open_id: Annotated[str, Strict(), StringConstraints(min_length=3, max_length=64)]


class IdentifyCodeResult(Message):
    result: Result
    is_ac_code: Flag | None = None
    post_code_match_action_type: PostCodeMatchAction | None = None
    ac_decode_config: OptionalText = None


# --- client SDK <-> Alipay+ ------------------------------------------------------------------


class AcceptanceMarkLogo(Message):
    name: Text
    logo_url: Text


class RegionAcceptanceMarks(Message):
    region: Annotated[str, Strict(), StringConstraints(min_length=2, max_length=2)]  # ISO 3166-1 alpha-2
    logos: list[AcceptanceMarkLogo]


class FetchConfigRequest(Message):
    """The client SDK pulls its configuration (acceptance marks per region), at most hourly."""

    PATH: ClassVar[str] = "/aps/sdk/v1/fetchConfig"

    sdk_version: OptionalText = None


class FetchConfigResponse(Message):
    result: Result
    config_version: OptionalText = None
    acceptance_marks: list[RegionAcceptanceMarks] = Field(default_factory=list)


class CreateSessionRequest(Message):
    """Step 1: the client SDK hands Alipay+ the authCode our app issued; Alipay+ calls our applyToken."""

    PATH: ClassVar[str] = "/aps/sdk/v1/createSession"

    auth_code: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=32)]
    psp_id: Id64


class CreateSessionResponse(Message):
    result: Result
    session_id: OptionalText = None
    session_expiry_time: DateTime | None = None


class CodeType(StrEnum):
    ORDER_CODE = "ORDER_CODE"
    ENTRY_CODE = "ENTRY_CODE"


class DecodeRequest(Message):
    """Step 4: decode a scanned code within a session; for an order code Alipay+ then calls our pay."""

    PATH: ClassVar[str] = "/aps/sdk/v1/decode"

    session_id: Text
    code_value: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=8192)]


class DecodeResponse(Message):
    result: Result
    code_type: CodeType | None = None
    redirect_url: OptionalText = None  # entry code: the merchant's cashier page, to enter the amount
    payment_request_id: OptionalText = None
    payment_url: OptionalText = None  # order code: our confirmation page (from our pay answer)


__all__ = [
    "AcceptanceMarkLogo",
    "CodeIdentificationInitRequest",
    "CodeIdentificationInitResult",
    "CodeType",
    "CreateSessionRequest",
    "CreateSessionResponse",
    "DecodeRequest",
    "DecodeResponse",
    "FetchConfigRequest",
    "FetchConfigResponse",
    "IdentifyCodeRequest",
    "IdentifyCodeResult",
    "PostCodeMatchAction",
    "RegionAcceptanceMarks",
]
