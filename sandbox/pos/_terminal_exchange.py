"""The terminal's side of the card exchange: the APDUs, their checks, and what the card answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from hce_device import tlv

PPSE_NAME = b"2PAY.SYS.DDF01"
SW_OK = b"\x90\x00"
SW_CONDITIONS_NOT_SATISFIED = b"\x69\x85"

AFL_ENTRY_LENGTH = 4
ARQC_LENGTH, ATC_LENGTH = 8, 2
MAX_SFI = 30
LOWEST_PRIORITY = 0x10  # 87 absent or 0: after every numbered priority (1 is the highest)


class ContactlessCardLink(Protocol):
    """What the reader's field reaches: one command APDU in, one response APDU (data ‖ SW) out.
    The phone's SDK exposes exactly this (Android's ``processCommandApdu``)."""

    def process_apdu(self, command: bytes) -> bytes: ...


@dataclass(frozen=True)
class ApduExchange:
    command: bytes
    response: bytes


class CardError(Exception):
    """The card's answer broke the protocol (status word, missing or malformed data)."""


class CardRefused(CardError):
    """The card answered 69 85, conditions of use not satisfied: it will not do this transaction
    (a locked token, no credential left, an offline-only terminal). A decline, not a fault."""


@dataclass(frozen=True)
class CardData:
    """What the terminal learnt from the card before GENERATE AC."""

    aid: str
    aip: bytes
    pan: str
    pan_sequence_number: str
    expiry_date: str  # YYMMDD
    cdol1: list[tlv.DolEntry]


@dataclass(frozen=True)
class GenerateAcAnswer:
    cid: int
    atc: int
    cryptogram: bytes
    iad: bytes
    poscii: bytes | None


class Link:
    """The field between terminal and card: sends commands, checks status words, keeps the log."""

    def __init__(self, card: ContactlessCardLink) -> None:
        self._card = card
        self.exchanges: list[ApduExchange] = []

    def send(self, step: str, command: bytes) -> list[tlv.Tlv]:
        try:
            response = bytes(self._card.process_apdu(command))
        except Exception as exc:  # the phone's side failed: the tap cannot go on
            raise CardError(f"{step}: the card did not answer ({exc})") from exc
        self.exchanges.append(ApduExchange(command, response))
        if len(response) < len(SW_OK):
            raise CardError(f"{step}: the answer is shorter than a status word")
        if response[-2:] == SW_CONDITIONS_NOT_SATISFIED:
            raise CardRefused(f"{step} answered 6985: the card refused the transaction")
        if response[-2:] != SW_OK:
            raise CardError(f"{step} answered {response[-2:].hex().upper()}")
        try:
            return tlv.decode(response[:-2])
        except tlv.TlvError as exc:
            raise CardError(f"{step}: malformed BER-TLV ({exc})") from exc


def _apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"") -> bytes:
    """A short case-2/4 command with Le ``00``."""
    body = bytes([len(data)]) + data if data else b""
    return bytes([cla, ins, p1, p2]) + body + b"\x00"


def _template(objects: list[tlv.Tlv], tag: str, step: str) -> tlv.Tlv:
    if len(objects) != 1 or objects[0].tag != tag:
        raise CardError(f"{step}: expected one {tag} template")
    return objects[0]


def _required(values: Mapping[str, bytes], tag: str, step: str, length: int | None = None) -> bytes:
    value = values.get(tag)
    if value is None:
        raise CardError(f"{step}: mandatory {tag} is missing")
    if length is not None and len(value) != length:
        raise CardError(f"{step}: {tag} is {len(value)} bytes, not {length}")
    return value


def read_card(link: Link, supported_aids: tuple[str, ...], pdol_values: Mapping[str, bytes]) -> CardData:
    """SELECT PPSE, SELECT AID, GET PROCESSING OPTIONS and READ RECORD: the card data GENERATE AC needs."""
    aid = _select_ppse(link, supported_aids)
    pdol = _select_aid(link, aid)
    aip, afl = _get_processing_options(link, pdol, pdol_values)
    records = _read_records(link, afl)
    pan = _required(records, "5A", "READ RECORD").hex().upper().rstrip("F")
    expiry = _required(records, "5F24", "READ RECORD", 3).hex()
    psn = records.get("5F34", b"\x00").hex()
    cdol1 = _required(records, "8C", "READ RECORD")
    track2 = records.get("57")
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise CardError("READ RECORD: 5A is not a PAN")
    if not expiry.isdigit() or len(psn) != 2 or not psn.isdigit():
        raise CardError("READ RECORD: 5F24 or 5F34 is not numeric")
    if track2 is not None and not track2.hex().upper().startswith(pan + "D"):
        raise CardError("READ RECORD: track 2 (57) names another PAN")
    try:
        entries = tlv.parse_dol(cdol1)
    except tlv.TlvError as exc:
        raise CardError(f"READ RECORD: malformed CDOL1 ({exc})") from exc
    return CardData(aid=aid, aip=aip, pan=pan, pan_sequence_number=psn, expiry_date=expiry, cdol1=entries)


def _select_ppse(link: Link, supported_aids: tuple[str, ...]) -> str:
    """The supported application with the best priority (87: 1 is highest; none is last)."""
    fci = _template(link.send("SELECT PPSE", _apdu(0x00, 0xA4, 0x04, 0x00, PPSE_NAME)), "6F", "SELECT PPSE")
    if tlv.find(fci.children, "84") != tlv.Tlv("84", PPSE_NAME):
        raise CardError("SELECT PPSE: the DF name is not 2PAY.SYS.DDF01")
    directory = tlv.find(fci.children, "BF0C")
    entries = [entry for entry in (directory.children if directory else ()) if entry.tag == "61"]
    candidates: list[tuple[int, str]] = []
    for entry in entries:
        values = tlv.flatten([entry])
        aid = values.get("4F", b"").hex().upper()
        if aid in supported_aids:
            priority = values.get("87", b"\x00")[:1] or b"\x00"
            candidates.append((priority[0] & 0x0F or LOWEST_PRIORITY, aid))
    if not candidates:
        raise CardError("SELECT PPSE: no application this terminal accepts")
    return min(candidates)[1]


def _select_aid(link: Link, aid: str) -> list[tlv.DolEntry]:
    step = "SELECT AID"
    fci = _template(link.send(step, _apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex(aid))), "6F", step)
    if tlv.find(fci.children, "84") != tlv.Tlv("84", bytes.fromhex(aid)):
        raise CardError(f"{step}: the DF name is not the selected AID")
    pdol = tlv.find(fci.children, "9F38")
    try:
        return tlv.parse_dol(pdol.value) if pdol is not None else []
    except tlv.TlvError as exc:
        raise CardError(f"{step}: malformed PDOL ({exc})") from exc


def _get_processing_options(
    link: Link, pdol: list[tlv.DolEntry], pdol_values: Mapping[str, bytes]
) -> tuple[bytes, list[tuple[int, int, int]]]:
    step = "GET PROCESSING OPTIONS"
    pdol_data = tlv.build_dol_data(pdol, pdol_values)
    objects = link.send(step, _apdu(0x80, 0xA8, 0x00, 0x00, tlv.encode("83", pdol_data)))
    if len(objects) == 1 and objects[0].tag == "80":  # format 1: AIP ‖ AFL
        aip, afl = objects[0].value[:2], objects[0].value[2:]
    else:
        values = tlv.flatten([_template(objects, "77", step)])
        aip, afl = _required(values, "82", step, 2), _required(values, "94", step)
    if len(aip) != 2 or not afl or len(afl) % AFL_ENTRY_LENGTH:
        raise CardError(f"{step}: malformed AIP or AFL")
    entries = []
    for offset in range(0, len(afl), AFL_ENTRY_LENGTH):
        sfi, first, last = afl[offset] >> 3, afl[offset + 1], afl[offset + 2]
        if not 1 <= sfi <= MAX_SFI or first == 0 or last < first:
            raise CardError(f"{step}: AFL entry {afl[offset : offset + 4].hex().upper()} is invalid")
        entries.append((sfi, first, last))
    return aip, entries


def _read_records(link: Link, afl: list[tuple[int, int, int]]) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for sfi, first, last in afl:
        for record in range(first, last + 1):
            step = f"READ RECORD {sfi}/{record}"
            template = _template(link.send(step, _apdu(0x00, 0xB2, record, (sfi << 3) | 4)), "70", step)
            for tag, value in tlv.flatten([template]).items():
                values.setdefault(tag, value)
    return values


def generate_ac(link: Link, card: CardData, terminal_data: Mapping[str, bytes], p1: int) -> GenerateAcAnswer:
    """GENERATE AC for the cryptogram ``p1`` asks for, with the CDOL1 data; the card's answer, checked."""
    step = "GENERATE AC"
    objects = link.send(step, _apdu(0x80, 0xAE, p1, 0x00, tlv.build_dol_data(card.cdol1, terminal_data)))
    if len(objects) == 1 and objects[0].tag == "80":  # format 1: CID ‖ ATC ‖ AC ‖ IAD
        raw = objects[0].value
        if len(raw) < 1 + ATC_LENGTH + ARQC_LENGTH:
            raise CardError(f"{step}: format 1 answer too short")
        values = {"9F27": raw[:1], "9F36": raw[1:3], "9F26": raw[3:11], "9F10": raw[11:]}
    else:
        values = tlv.flatten([_template(objects, "77", step)])
    iad = _required(values, "9F10", step)
    if not 8 <= len(iad) <= 32:
        raise CardError(f"{step}: the IAD (9F10) is {len(iad)} bytes")
    return GenerateAcAnswer(
        cid=_required(values, "9F27", step, 1)[0],
        atc=int.from_bytes(_required(values, "9F36", step, ATC_LENGTH), "big"),
        cryptogram=_required(values, "9F26", step, ARQC_LENGTH),
        iad=iad,
        poscii=values.get("DF4B"),
    )
