"""The card's command APDUs: status words, command codes, the short-APDU parser and GPO's PDOL data."""

from __future__ import annotations

from dataclasses import dataclass

from . import tlv

# status words (emv-hce.md §2)
SW_OK = b"\x90\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_CONDITIONS_NOT_SATISFIED = b"\x69\x85"
SW_FILE_NOT_FOUND = b"\x6a\x82"
SW_RECORD_NOT_FOUND = b"\x6a\x83"
SW_WRONG_P1P2 = b"\x6a\x86"
SW_INS_NOT_SUPPORTED = b"\x6d\x00"
SW_CLA_NOT_SUPPORTED = b"\x6e\x00"

# commands
CLA_ISO, CLA_PROPRIETARY = 0x00, 0x80
INS_SELECT, INS_READ_RECORD, INS_GPO, INS_GENERATE_AC = 0xA4, 0xB2, 0xA8, 0xAE
SELECT_BY_NAME_FIRST = (0x04, 0x00)
READ_RECORD_P2_SFI_MODE = 0x04  # P2 low bits: "P1 is a record number", SFI in b8-b4
GEN_AC_TYPE_MASK = 0xC0  # P1 b8-b7: requested cryptogram
GPO_COMMAND_TEMPLATE = 0x83

# terminal data bits the card reads
TRM_CVM_LIMIT_EXCEEDED = (1, 0x80)  # 9F1D byte 2 b8 [spec: uncertain exact bit]
OFFLINE_ONLY_TERMINAL_DIGITS = ("3", "6")  # 9F35 second digit: offline only → MCBP refuses


@dataclass(frozen=True)
class Apdu:
    """One command APDU: the header bytes and the Lc data (Le is not kept: the card always answers in full)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes


class WrongLength(ValueError):
    """The command's Lc does not match its body."""


def parse_apdu(command: bytes) -> Apdu:
    """Short APDU cases 1–4 (emv-hce.md §2); extended length is not used over HCE here."""
    if len(command) < 4:
        raise WrongLength("shorter than a header")
    header, body = command[:4], command[4:]
    if len(body) <= 1:  # case 1 or 2: no data, maybe Le
        data = b""
    else:
        lc = body[0]
        if len(body) - 1 not in (lc, lc + 1) or lc == 0:
            raise WrongLength(f"Lc {lc} but {len(body) - 1} bytes follow")
        data = body[1 : 1 + lc]
    return Apdu(header[0], header[1], header[2], header[3], data)


def gpo_pdol_data(data: bytes) -> bytes | None:
    """The value of GPO's ``83`` template, or None if the data is not exactly one ``83`` TLV."""
    try:
        objects = tlv.decode(data) if data and data[0] == GPO_COMMAND_TEMPLATE else []
    except tlv.TlvError:
        return None
    if len(objects) != 1 or objects[0].tag != "83":
        return None
    return objects[0].value
