"""A contactless POS terminal (EMV kernel 2 subset) for the sandbox: it taps a card, then asks the
card network to authorize the ARQC.

The exchange is emv-hce.md §3 / §11: SELECT PPSE → choose the application → SELECT AID → GET
PROCESSING OPTIONS with the PDOL data → READ RECORD for every AFL entry → GENERATE AC (ARQC) with
the CDOL1 data the card asked for and a fresh unpredictable number. Every status word and every
mandatory data object is checked; a card that answers anything else gets ``CARD_ERROR``.

Decisions where the spec leaves room:

* **CVM limit** (§9, §10): above ``cvm_required_limit`` the terminal sets "CVM limit exceeded"
  (9F1D byte 2 b8, as ``hce_device.card`` reads it) and relies on the phone's CDCVM; a card without
  on-device CVM (AIP byte 1 b2) is then declined, as this reader does no PIN or signature.
* **Terminal declines** (expired card, no CVM possible) still finish the card's transaction: the
  terminal asks for an AAC (GENERATE AC P1 ``00``), as EMV terminal action analysis does.
* **Outcomes**: ARQC → online authorization → APPROVED / DECLINED; AAC with POSCII "CDCVM required"
  (DF4B byte 2 b1) → SEE_PHONE (the user verifies on the phone and taps again); any other AAC →
  DECLINED. A TC cannot answer an ARQC request, so it is a CARD_ERROR.
* **CVM Results** after on-device CVM are ``01 00 02`` (§10, several implementations); below the
  limit ``1F 03 02`` (no CVM required, successful).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from typing import Protocol

import httpx
from iso4217 import Currency

from alipayplus import Amount
from hce_device import tlv

from .authorization import Authorization, AuthorizationDecision, DeclineReason, numeric

logger = logging.getLogger(__name__)

PPSE_NAME = b"2PAY.SYS.DDF01"
MASTERCARD_AID = "A0000000041010"
MAESTRO_AID = "A0000000043060"
SW_OK = b"\x90\x00"

# GENERATE AC P1 (emv-hce.md §2): the cryptogram the terminal asks for
REQUEST_ARQC, REQUEST_AAC = 0x80, 0x00
CID_TYPE_MASK = 0xC0
CID_AAC, CID_TC, CID_ARQC = 0x00, 0x40, 0x80

AIP_CDCVM_SUPPORTED = (0, 0x02)  # AIP byte 1 b2: on-device cardholder verification
POSCII_CDCVM_REQUIRED = (1, 0x01)  # DF4B byte 2 b1: "PIN/CDCVM required" → See Phone
TRM_CVM_LIMIT_EXCEEDED = (1, 0x80)  # 9F1D byte 2 b8 (the bit hce_device.card reads)
TVR_EXPIRED_APPLICATION = (1, 0x40)  # 95 byte 2 b7
TVR_CVM_NOT_SUCCESSFUL = (2, 0x80)  # 95 byte 3 b8
TVR_OVER_FLOOR_LIMIT = (3, 0x80)  # 95 byte 4 b8: the floor limit is zero, every tap goes online
CVM_NO_CVM_REQUIRED = bytes.fromhex("1F0302")
CVM_ON_DEVICE = bytes.fromhex("010002")
NO_CVM_CAPABILITY = 0x08  # terminal capabilities byte 2 b4: no CVM required

AFL_ENTRY_LENGTH = 4
ARQC_LENGTH, ATC_LENGTH = 8, 2
MAX_SFI = 30
LOWEST_PRIORITY = 0x10  # 87 absent or 0: after every numbered priority (1 is the highest)


class TapStatus(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    SEE_PHONE = "SEE_PHONE"  # verify on the phone (CDCVM), then tap again
    CARD_ERROR = "CARD_ERROR"  # the card's answers broke the protocol; try again or another card


class ContactlessCardLink(Protocol):
    """What the reader's field reaches: one command APDU in, one response APDU (data ‖ SW) out.
    The phone's SDK exposes exactly this (Android's ``processCommandApdu``)."""

    def process_apdu(self, command: bytes) -> bytes: ...


class CardNetwork(Protocol):
    """Where the terminal (through its acquirer) sends the authorization: the sandbox Mastercard."""

    async def authorize(self, authorization: Authorization) -> AuthorizationDecision: ...


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


@dataclass(frozen=True)
class ApduExchange:
    command: bytes
    response: bytes


@dataclass(frozen=True)
class TapOutcome:
    status: TapStatus
    reason: str | None = None
    authorization: Authorization | None = None  # sent to the network (ARQC taps only)
    decision: AuthorizationDecision | None = None
    exchanges: tuple[ApduExchange, ...] = ()  # every APDU of the tap, for logs and tests

    @property
    def approved(self) -> bool:
        return self.status is TapStatus.APPROVED


class CardError(Exception):
    """The card's answer broke the protocol (status word, missing or malformed data)."""


class CardRefused(CardError):
    """The card answered 69 85, conditions of use not satisfied: it will not do this transaction
    (a locked token, no credential left, an offline-only terminal). A decline, not a fault."""


SW_CONDITIONS_NOT_SATISFIED = b"\x69\x85"


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


Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _set(data: bytearray, bit: tuple[int, int]) -> None:
    byte, mask = bit
    data[byte] |= mask


def _has(data: bytes, bit: tuple[int, int]) -> bool:
    byte, mask = bit
    return len(data) > byte and bool(data[byte] & mask)


class _Link:
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


class PosTerminal:
    """One terminal; ``tap`` runs a whole transaction against a card on the reader."""

    def __init__(
        self,
        config: PosConfig,
        network: CardNetwork,
        *,
        clock: Clock = _utc_now,
        unpredictable_number: Callable[[], bytes] = lambda: secrets.token_bytes(4),
    ) -> None:
        self.config = config
        self.network = network
        self._clock = clock
        self._unpredictable_number = unpredictable_number

    async def tap(self, card: ContactlessCardLink, amount: Amount) -> TapOutcome:
        if amount.currency != self.config.currency:
            raise ValueError(f"this terminal charges {self.config.currency}, not {amount.currency}")
        if amount.value <= 0:
            raise ValueError("the amount must be above zero")
        limit = self.config.transaction_limit
        if limit is not None and amount.value > limit:
            return TapOutcome(TapStatus.DECLINED, "The amount is above the contactless limit: use another interface")
        link = _Link(card)
        now = self._clock().astimezone(self.config.timezone)
        over_cvm_limit = amount.value > self.config.cvm_required_limit
        try:
            card_data = self._read_card(link, over_cvm_limit)
            terminal_data, decline_reason = self._terminal_data(card_data, amount, now, over_cvm_limit)
            answer = self._generate_ac(link, card_data, terminal_data, REQUEST_AAC if decline_reason else REQUEST_ARQC)
        except CardRefused as exc:
            return TapOutcome(TapStatus.DECLINED, str(exc), exchanges=tuple(link.exchanges))
        except CardError as exc:
            logger.info("tap failed: %s", exc)
            return TapOutcome(TapStatus.CARD_ERROR, str(exc), exchanges=tuple(link.exchanges))
        exchanges = tuple(link.exchanges)
        cryptogram_type = answer.cid & CID_TYPE_MASK
        if cryptogram_type == CID_AAC:
            if answer.poscii is not None and _has(answer.poscii, POSCII_CDCVM_REQUIRED) and decline_reason is None:
                return TapOutcome(TapStatus.SEE_PHONE, "Verify on your phone, then tap again", exchanges=exchanges)
            return TapOutcome(TapStatus.DECLINED, decline_reason or "The card declined", exchanges=exchanges)
        if cryptogram_type != CID_ARQC or decline_reason is not None:
            requested = "an AAC" if decline_reason else "an ARQC"
            reason = f"GENERATE AC: the card answered cryptogram type {answer.cid:02X} to a request for {requested}"
            return TapOutcome(TapStatus.CARD_ERROR, reason, exchanges=exchanges)
        authorization = self._authorization(card_data, terminal_data, answer, amount, now)
        return await self._go_online(authorization, exchanges)

    # --- the exchange ------------------------------------------------------------------

    def _read_card(self, link: _Link, over_cvm_limit: bool) -> CardData:
        aid = self._select_ppse(link)
        pdol = self._select_aid(link, aid)
        aip, afl = self._get_processing_options(link, pdol, over_cvm_limit)
        records = self._read_records(link, afl)
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

    def _select_ppse(self, link: _Link) -> str:
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
            if aid in self.config.supported_aids:
                priority = values.get("87", b"\x00")[:1] or b"\x00"
                candidates.append((priority[0] & 0x0F or LOWEST_PRIORITY, aid))
        if not candidates:
            raise CardError("SELECT PPSE: no application this terminal accepts")
        return min(candidates)[1]

    def _select_aid(self, link: _Link, aid: str) -> list[tlv.DolEntry]:
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
        self, link: _Link, pdol: list[tlv.DolEntry], over_cvm_limit: bool
    ) -> tuple[bytes, list[tuple[int, int, int]]]:
        step = "GET PROCESSING OPTIONS"
        pdol_data = tlv.build_dol_data(pdol, self._pdol_values(over_cvm_limit))
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

    def _read_records(self, link: _Link, afl: list[tuple[int, int, int]]) -> dict[str, bytes]:
        values: dict[str, bytes] = {}
        for sfi, first, last in afl:
            for record in range(first, last + 1):
                step = f"READ RECORD {sfi}/{record}"
                template = _template(link.send(step, _apdu(0x00, 0xB2, record, (sfi << 3) | 4)), "70", step)
                for tag, value in tlv.flatten([template]).items():
                    values.setdefault(tag, value)
        return values

    def _generate_ac(
        self, link: _Link, card: CardData, terminal_data: Mapping[str, bytes], p1: int
    ) -> GenerateAcAnswer:
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

    # --- terminal data -----------------------------------------------------------------

    def _trm_data(self, over_cvm_limit: bool) -> bytes:
        """9F1D: byte 1 the CVM capability for this amount, byte 2 b8 "CVM limit exceeded"."""
        trm = bytearray(8)
        capabilities = bytes.fromhex(self.config.terminal_capabilities)
        trm[0] = capabilities[1] if over_cvm_limit else NO_CVM_CAPABILITY
        if over_cvm_limit:
            _set(trm, TRM_CVM_LIMIT_EXCEEDED)
        return bytes(trm)

    def _pdol_values(self, over_cvm_limit: bool) -> dict[str, bytes]:
        return {
            "9F1D": self._trm_data(over_cvm_limit),
            "9F1A": bytes.fromhex(self.config.country_code),
            "9F35": bytes.fromhex(self.config.terminal_type),
            "9F33": bytes.fromhex(self.config.terminal_capabilities),
            "5F2A": self.config.currency_code,
        }

    def _terminal_data(
        self, card: CardData, amount: Amount, now: datetime, over_cvm_limit: bool
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
            if _has(card.aip, AIP_CDCVM_SUPPORTED):
                cvm_results = CVM_ON_DEVICE
            else:
                _set(tvr, TVR_CVM_NOT_SUCCESSFUL)
                decline_reason = decline_reason or "Above the CVM limit and the card cannot verify the user"
        values = self._pdol_values(over_cvm_limit) | {
            "9F02": numeric(amount.value, 6),
            "9F03": numeric(0, 6),
            "95": bytes(tvr),
            "9A": bytes.fromhex(now.strftime("%y%m%d")),
            "9F21": bytes.fromhex(now.strftime("%H%M%S")),
            "9C": b"\x00",
            "9F37": self._unpredictable_number(),
            "9F45": bytes(2),
            "9F4C": bytes(8),
            "9F34": cvm_results,
            "9F15": bytes.fromhex(self.config.merchant_category_code),
            "9F4E": self.config.merchant_name.encode()[:20],
        }
        if len(values["9F37"]) != 4:
            raise ValueError("the unpredictable number must be 4 bytes")
        return values, decline_reason

    def _authorization(
        self,
        card: CardData,
        terminal_data: Mapping[str, bytes],
        answer: GenerateAcAnswer,
        amount: Amount,
        now: datetime,
    ) -> Authorization:
        return Authorization(
            retrieval_reference=f"{secrets.randbelow(10**12):012d}",
            terminal_id=self.config.terminal_id,
            merchant_name=self.config.merchant_name,
            merchant_category_code=self.config.merchant_category_code,
            token_pan=card.pan,
            pan_sequence_number=card.pan_sequence_number,
            expiry_date=card.expiry_date,
            amount=amount,
            country_code=self.config.country_code,
            transaction_date=date(now.year, now.month, now.day),
            transaction_type=terminal_data["9C"].hex(),
            terminal_type=self.config.terminal_type,
            unpredictable_number=terminal_data["9F37"].hex(),
            terminal_verification_results=terminal_data["95"].hex(),
            cvm_results=terminal_data["9F34"].hex(),
            application_interchange_profile=card.aip.hex(),
            atc=answer.atc,
            cryptogram=answer.cryptogram.hex(),
            cryptogram_information_data=bytes([answer.cid]).hex(),
            issuer_application_data=answer.iad.hex(),
        )

    async def _go_online(self, authorization: Authorization, exchanges: tuple[ApduExchange, ...]) -> TapOutcome:
        try:
            decision = await self.network.authorize(authorization)
        except Exception as exc:  # no answer from the network is a decline at the counter
            logger.warning("authorization %s got no answer: %s", authorization.retrieval_reference, exc)
            decision = AuthorizationDecision.decline(DeclineReason.ISSUER_UNAVAILABLE, "No answer from the network")
        status = TapStatus.APPROVED if decision.approved else TapStatus.DECLINED
        return TapOutcome(
            status,
            None if decision.approved else decision.message or str(decision.reason),
            authorization=authorization,
            decision=decision,
            exchanges=exchanges,
        )


class HttpCardNetwork:
    """The network over HTTP: the sandbox's local ``POST /sandbox/mastercard/authorizations``."""

    PATH = "/sandbox/mastercard/authorizations"

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0):
        self._client = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)

    async def authorize(self, authorization: Authorization) -> AuthorizationDecision:
        response = await self._client.post(self.PATH, json=authorization.model_dump(mode="json"))
        response.raise_for_status()
        return AuthorizationDecision.model_validate(response.json())

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = [
    "MASTERCARD_AID",
    "ApduExchange",
    "CardError",
    "CardNetwork",
    "ContactlessCardLink",
    "HttpCardNetwork",
    "PosConfig",
    "PosTerminal",
    "TapOutcome",
    "TapStatus",
]
