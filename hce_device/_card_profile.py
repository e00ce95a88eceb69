"""The card's static data: the activation profile with the spec's defaults, and the FCIs and records built from it."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import tlv

PPSE_NAME = b"2PAY.SYS.DDF01"
MASTERCARD_AID = "A0000000041010"

# defaults for what the activation's card profile does not state (emv-hce.md §3, §6 sample)
DEFAULT_LABEL = "MASTERCARD"
DEFAULT_AIP = "1A80"  # CVM + TRM + CDCVM supported, EMV mode; no CDA (not implemented)
DEFAULT_PDOL = "9F1D089F1A029F3501"  # TRM data, terminal country, terminal type (11 bytes)
DEFAULT_CDOL1 = "9F02069F03069F1A0295055F2A029A039C019F37049F35019F45029F4C089F34039F1502"  # 45 bytes
DEFAULT_IAD = "0314000100000000000000000000000000FF"  # KDI 03, CVN 0x14 (EMV CSK)
DEFAULT_COUNTRY = "0840"
SERVICE_CODE = "201"  # international, IC card, normal authorisation
AFL_RECORDS = ((1, 1), (2, 1))  # (SFI, record): track-2 data, then the EMV data record
CVM_LIST_NO_CVM = "00000000000000001F03"  # X=Y=0; "no CVM required" if the terminal supports it


def _bcd(digits: str) -> bytes:
    """Compressed numeric: digits packed two per byte, padded with ``F`` (PAN, track 2)."""
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def _expiry_yymmdd(expiry: str) -> str:
    """``YYMM`` (activation profile) → ``YYMMDD`` on the month's last day; ``YYMMDD`` kept."""
    if len(expiry) == 6:
        return expiry
    year, month = 2000 + int(expiry[:2]), int(expiry[2:4])
    return f"{expiry[:4]}{calendar.monthrange(year, month)[1]:02d}"


@dataclass(frozen=True)
class CardProfile:
    """The static card data, from the activation's profile plus the §6 defaults."""

    pan: str
    psn: str
    expiry: str  # YYMMDD
    aid: str
    label: str
    aip: bytes
    pdol: bytes
    cdol1: bytes
    iad_template: bytes
    country_code: str

    @classmethod
    def from_dict(cls, profile: Mapping[str, Any]) -> CardProfile:
        """Accepts the activation's ``{tokenPan, panSequenceNumber, expiryDate, aid, ...}``."""
        return cls(
            pan=str(profile["tokenPan"]),
            psn=str(profile.get("panSequenceNumber", "00")),
            expiry=_expiry_yymmdd(str(profile["expiryDate"])),
            aid=str(profile.get("aid", MASTERCARD_AID)).upper(),
            label=str(profile.get("label", DEFAULT_LABEL)),
            aip=bytes.fromhex(str(profile.get("aip", DEFAULT_AIP))),
            pdol=bytes.fromhex(str(profile.get("pdol", DEFAULT_PDOL))),
            cdol1=bytes.fromhex(str(profile.get("cdol1", DEFAULT_CDOL1))),
            iad_template=bytes.fromhex(str(profile.get("issuerApplicationData", DEFAULT_IAD))),
            country_code=str(profile.get("crmCountryCode", DEFAULT_COUNTRY)),
        )

    def ppse_fci(self) -> bytes:
        entry = tlv.encode(
            "61", [tlv.encode("4F", bytes.fromhex(self.aid)), tlv.encode("50", self.label.encode()), _PRIORITY]
        )
        proprietary = tlv.encode("A5", [tlv.encode("BF0C", entry)])
        return tlv.encode("6F", [tlv.encode("84", PPSE_NAME), proprietary])

    def aid_fci(self) -> bytes:
        proprietary = tlv.encode(
            "A5",
            [
                tlv.encode("50", self.label.encode()),
                _PRIORITY,
                tlv.encode("5F2D", b"en"),
                tlv.encode("9F38", self.pdol),
            ],
        )
        return tlv.encode("6F", [tlv.encode("84", bytes.fromhex(self.aid)), proprietary])

    def gpo_response(self) -> bytes:
        afl = b"".join(bytes([sfi << 3, record, record, 0]) for sfi, record in AFL_RECORDS)
        return tlv.encode("77", [tlv.encode("82", self.aip), tlv.encode("94", afl)])

    def records(self) -> dict[tuple[int, int], bytes]:
        """(SFI, record number) → ``70`` template."""
        track2 = _bcd(f"{self.pan}D{self.expiry[:4]}{SERVICE_CODE}00000")
        emv_data = [
            ("5A", _bcd(self.pan)),
            ("5F24", bytes.fromhex(self.expiry)),
            ("5F28", bytes.fromhex(self.country_code)),
            ("5F34", bytes.fromhex(self.psn)),
            ("9F07", bytes.fromhex("FF00")),
            ("9F08", bytes.fromhex("0002")),
            ("8C", self.cdol1),
            ("8E", bytes.fromhex(CVM_LIST_NO_CVM)),
        ]
        return {
            AFL_RECORDS[0]: tlv.encode("70", tlv.encode_many([("57", track2), ("5F20", b" /")])),
            AFL_RECORDS[1]: tlv.encode("70", tlv.encode_many(emv_data)),
        }


_PRIORITY = tlv.encode("87", b"\x01")
