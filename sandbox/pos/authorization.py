"""The authorization request a POS terminal sends after an ARQC, and the network's answer.

It carries what an ISO 8583 0100 message and its DE 55 (ICC data) would: the token's card data,
the amounts, the terminal data the cryptogram covers, and the card's answer to GENERATE AC
(emv-hce.md §5.3, §11 step 3). Binary EMV values travel as upper-case hex; the JSON form is
camelCase, as the sandbox's other control routes speak.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from alipayplus import Amount, CamelModel

IAD_CVR = slice(2, 8)  # Card Verification Results inside the Mastercard IAD (emv-hce.md §5.4)
IAD_CUSTOM_DATA_START = 18  # the wallet's custom data follows the 18-byte IAD (MCBP 2.3, from byte 19)


def numeric(value: int, length: int) -> bytes:
    """EMV format ``n``: decimal digits, two per byte, right-aligned (9F02's ``000000001500``)."""
    return bytes.fromhex(f"{value:0{2 * length}d}")


def _upper_hex(length: str) -> StringConstraints:
    return StringConstraints(to_upper=True, pattern=rf"^([0-9A-Fa-f]{{2}}){{{length}}}$")


_Digits2 = Annotated[str, StringConstraints(pattern=r"^[0-9]{2}$")]
_Digits4 = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]
_Digits6 = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
_Hex1 = Annotated[str, _upper_hex("1")]
_Hex2 = Annotated[str, _upper_hex("2")]
_Hex3 = Annotated[str, _upper_hex("3")]
_Hex4 = Annotated[str, _upper_hex("4")]
_Hex5 = Annotated[str, _upper_hex("5")]
_Hex8 = Annotated[str, _upper_hex("8")]
_IadHex = Annotated[str, _upper_hex("8,32")]  # the IAD is at most 32 bytes


class _FrozenCamelModel(CamelModel):
    model_config = ConfigDict(frozen=True)


class Authorization(_FrozenCamelModel):
    """One online authorization request for a tap that ended in an ARQC."""

    retrieval_reference: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{12}$")]  # ISO 8583 DE 37
    terminal_id: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    merchant_name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    merchant_category_code: _Digits4
    # the card (records read after GPO)
    token_pan: Annotated[str, StringConstraints(pattern=r"^[0-9]{12,19}$")]
    pan_sequence_number: _Digits2
    expiry_date: _Digits6  # YYMMDD (5F24)
    # the terminal's data the cryptogram covers (CDOL1)
    amount: Amount  # 9F02 with 5F2A
    amount_other: Amount | None = None  # 9F03 (cashback); none is zero
    country_code: _Digits4  # 9F1A, ISO 3166-1 numeric
    transaction_date: date  # 9A, the terminal's local date
    transaction_type: _Digits2 = "00"  # 9C: purchase
    terminal_type: _Digits2 = "22"  # 9F35
    unpredictable_number: _Hex4  # 9F37
    terminal_verification_results: _Hex5  # 95
    cvm_results: _Hex3  # 9F34
    # the card's answers
    application_interchange_profile: _Hex2  # 82
    atc: int = Field(ge=0, le=0xFFFF)  # 9F36
    cryptogram: _Hex8  # 9F26
    cryptogram_information_data: _Hex1  # 9F27
    issuer_application_data: _IadHex  # 9F10

    @property
    def card_verification_results(self) -> bytes:
        return bytes.fromhex(self.issuer_application_data)[IAD_CVR]

    @property
    def custom_data(self) -> bytes | None:
        """The wallet's ``setCustomData`` bytes, when the IAD carries any."""
        return bytes.fromhex(self.issuer_application_data)[IAD_CUSTOM_DATA_START:] or None


class DeclineReason(StrEnum):
    UNKNOWN_TOKEN = "UNKNOWN_TOKEN"  # no token has this PAN
    TOKEN_NOT_ACTIVE = "TOKEN_NOT_ACTIVE"  # provisioned only, suspended (locked) or deleted
    NOT_AN_ARQC = "NOT_AN_ARQC"  # only an ARQC asks for an online authorization
    CRYPTOGRAM_INVALID = "CRYPTOGRAM_INVALID"  # the ARQC does not match the data (tampered, wrong key)
    REPLAYED_ATC = "REPLAYED_ATC"  # this token's ATC was already authorized once
    ISSUER_DECLINED = "ISSUER_DECLINED"  # the wallet (MPP) refused the payment
    ISSUER_UNAVAILABLE = "ISSUER_UNAVAILABLE"  # no final answer from the wallet in time


class AuthorizationDecision(_FrozenCamelModel):
    """The network's answer to the terminal."""

    approved: bool
    reason: DeclineReason | None = None
    message: str = ""
    token_reference_id: str | None = None
    payment_request_id: str | None = None  # Alipay+'s pay to the wallet, when one was sent

    @classmethod
    def approve(cls, message: str = "Approved", *, payment_request_id: str | None = None) -> AuthorizationDecision:
        return cls(approved=True, message=message, payment_request_id=payment_request_id)

    @classmethod
    def decline(
        cls, reason: DeclineReason, message: str, *, payment_request_id: str | None = None
    ) -> AuthorizationDecision:
        return cls(approved=False, reason=reason, message=message, payment_request_id=payment_request_id)


__all__ = ["Authorization", "AuthorizationDecision", "DeclineReason"]
