"""The terminal's data: its configuration, the PDOL and CDOL1 values it sends, and the authorization it builds."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo

from iso4217 import Currency

from alipayplus import Amount

from ._terminal_exchange import CardData, GenerateAcAnswer
from .authorization import Authorization, numeric

MASTERCARD_AID = "A0000000041010"
MAESTRO_AID = "A0000000043060"

AIP_CDCVM_SUPPORTED = (0, 0x02)  # AIP byte 1 b2: on-device cardholder verification
TRM_CVM_LIMIT_EXCEEDED = (1, 0x80)  # 9F1D byte 2 b8 (the bit hce_device.card reads)
TVR_EXPIRED_APPLICATION = (1, 0x40)  # 95 byte 2 b7
TVR_CVM_NOT_SUCCESSFUL = (2, 0x80)  # 95 byte 3 b8
TVR_OVER_FLOOR_LIMIT = (3, 0x80)  # 95 byte 4 b8: the floor limit is zero, every tap goes online
CVM_NO_CVM_REQUIRED = bytes.fromhex("1F0302")
CVM_ON_DEVICE = bytes.fromhex("010002")
NO_CVM_CAPABILITY = 0x08  # terminal capabilities byte 2 b4: no CVM required


@dataclass(frozen=True)
class PosConfig:
    """The terminal's configuration; amounts in minor units of ``currency``."""

    terminal_id: str = "SBXPOS01"
    merchant_name: str = "Sandbox Coffee"
    merchant_category_code: str = "5814"
    country_code: str = "0360"  # 9F1A, ISO 3166-1 numeric (Indonesia, where the demo wallet is)
    currency: str = "IDR"
    terminal_type: str = "22"  # attended, offline with online capability
    terminal_capabilities: str = "E068C8"  # 9F33: IC/magstripe/manual; online PIN, signature, no CVM; SDA/DDA/CDA
    cvm_required_limit: int = 100_000_000  # DF8126: IDR 1,000,000.00; above it the phone must verify the user
    transaction_limit: int | None = None  # DF8125: above it contactless is refused
    supported_aids: tuple[str, ...] = (MASTERCARD_AID, MAESTRO_AID)
    timezone: tzinfo = field(default=timezone(timedelta(hours=7)))  # the terminal's local time (9A, 9F21)

    def __post_init__(self) -> None:
        Currency(self.currency)  # raises ValueError for an unknown currency
        checks = {
            "country_code": len(self.country_code) == 4 and self.country_code.isdigit(),
            "merchant_category_code": len(self.merchant_category_code) == 4 and self.merchant_category_code.isdigit(),
            "terminal_type": len(self.terminal_type) == 2 and self.terminal_type.isdigit(),
            "terminal_capabilities": len(bytes.fromhex(self.terminal_capabilities)) == 3,
            "cvm_required_limit": self.cvm_required_limit >= 0,
            "transaction_limit": self.transaction_limit is None or self.transaction_limit > 0,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(f"invalid terminal configuration: {', '.join(wrong)}")

    @property
    def currency_code(self) -> bytes:
        """5F2A: the ISO 4217 numeric code, two BCD bytes."""
        return numeric(Currency(self.currency).number, 2)


def _set(data: bytearray, bit: tuple[int, int]) -> None:
    byte, mask = bit
    data[byte] |= mask


def has_bit(data: bytes, bit: tuple[int, int]) -> bool:
    byte, mask = bit
    return len(data) > byte and bool(data[byte] & mask)


def _trm_data(config: PosConfig, over_cvm_limit: bool) -> bytes:
    """9F1D: byte 1 the CVM capability for this amount, byte 2 b8 "CVM limit exceeded"."""
    trm = bytearray(8)
    capabilities = bytes.fromhex(config.terminal_capabilities)
    trm[0] = capabilities[1] if over_cvm_limit else NO_CVM_CAPABILITY
    if over_cvm_limit:
        _set(trm, TRM_CVM_LIMIT_EXCEEDED)
    return bytes(trm)


def pdol_values(config: PosConfig, over_cvm_limit: bool) -> dict[str, bytes]:
    """What the terminal answers a PDOL with: 9F1D for this amount, then its own fixed data."""
    return {
        "9F1D": _trm_data(config, over_cvm_limit),
        "9F1A": bytes.fromhex(config.country_code),
        "9F35": bytes.fromhex(config.terminal_type),
        "9F33": bytes.fromhex(config.terminal_capabilities),
        "5F2A": config.currency_code,
    }


def terminal_values(
    config: PosConfig,
    card: CardData,
    amount: Amount,
    now: datetime,
    over_cvm_limit: bool,
    unpredictable_number: Callable[[], bytes],
) -> tuple[dict[str, bytes], str | None]:
    """Every value a CDOL1 may ask for, and why the terminal declines offline (None: go online)."""
    tvr = bytearray(5)
    _set(tvr, TVR_OVER_FLOOR_LIMIT)
    decline_reason = None
    if card.expiry_date < now.strftime("%y%m%d"):
        _set(tvr, TVR_EXPIRED_APPLICATION)
        decline_reason = "The card has expired"
    cvm_results = CVM_NO_CVM_REQUIRED
    if over_cvm_limit:
        if has_bit(card.aip, AIP_CDCVM_SUPPORTED):
            cvm_results = CVM_ON_DEVICE
        else:
            _set(tvr, TVR_CVM_NOT_SUCCESSFUL)
            decline_reason = decline_reason or "Above the CVM limit and the card cannot verify the user"
    values = pdol_values(config, over_cvm_limit) | {
        "9F02": numeric(amount.value, 6),
        "9F03": numeric(0, 6),
        "95": bytes(tvr),
        "9A": bytes.fromhex(now.strftime("%y%m%d")),
        "9F21": bytes.fromhex(now.strftime("%H%M%S")),
        "9C": b"\x00",
        "9F37": unpredictable_number(),
        "9F45": bytes(2),
        "9F4C": bytes(8),
        "9F34": cvm_results,
        "9F15": bytes.fromhex(config.merchant_category_code),
        "9F4E": config.merchant_name.encode()[:20],
    }
    if len(values["9F37"]) != 4:
        raise ValueError("the unpredictable number must be 4 bytes")
    return values, decline_reason


def authorization_for(
    config: PosConfig,
    card: CardData,
    terminal_data: Mapping[str, bytes],
    answer: GenerateAcAnswer,
    amount: Amount,
    now: datetime,
) -> Authorization:
    """What the terminal sends the network for an ARQC."""
    return Authorization(
        retrieval_reference=f"{secrets.randbelow(10**12):012d}",
        terminal_id=config.terminal_id,
        merchant_name=config.merchant_name,
        merchant_category_code=config.merchant_category_code,
        token_pan=card.pan,
        pan_sequence_number=card.pan_sequence_number,
        expiry_date=card.expiry_date,
        amount=amount,
        country_code=config.country_code,
        transaction_date=date(now.year, now.month, now.day),
        transaction_type=terminal_data["9C"].hex(),
        terminal_type=config.terminal_type,
        unpredictable_number=terminal_data["9F37"].hex(),
        terminal_verification_results=terminal_data["95"].hex(),
        cvm_results=terminal_data["9F34"].hex(),
        application_interchange_profile=card.aip.hex(),
        atc=answer.atc,
        cryptogram=answer.cryptogram.hex(),
        cryptogram_information_data=bytes([answer.cid]).hex(),
        issuer_application_data=answer.iad.hex(),
    )
