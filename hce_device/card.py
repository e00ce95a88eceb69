"""The contactless card an activated Mastercard token presents over HCE (EMV mode, kernel 2).

``ContactlessCard.process_apdu`` is what Android's ``HostApduService.processCommandApdu`` would
call: it answers SELECT PPSE, SELECT AID, GET PROCESSING OPTIONS, READ RECORD and GENERATE AC as
emv-hce.md §3 describes, enforcing the §3.7 sequence.

Design choices (the spec leaves them open):

* **Keys** (emv-hce.md §5.1, §7.1): an HCE phone never holds the ICC master key; the cloud derives
  ``ICC MK = option A(IMK-AC, PAN, PSN)`` and, per ATC, the EMV common session key
  ``SK = CSK(ICC MK, ATC ‖ 00×6)`` (CVN 0x14, the sample profile's IAD ``03 14``) and delivers it
  as the credential's ``singleUseKey``. The card therefore uses the single-use key *as the session
  key* for that credential's ATC: no derivation on the phone, and an issuer holding IMK-AC
  reproduces the cryptogram with pyemv (``derive_icc_mk_a`` → ``derive_common_sk`` →
  ``generate_ac``), as worked vector 2 of §5.3 does. One key per tap (the MCBP UMD/MD split of
  §7.2 is not applied; IAD bytes 11–15 stay as in the template).
* **No credential left**: GENERATE AC answers ``69 85`` (§3.7) and the listener gets ``10007``.
* **Token unusable** (locked, or the SDK disconnected): the ``availability`` hook, asked at GENERATE
  AC, names the failure; the card answers ``69 85`` as for no credential and the listener gets it
  (``10008`` TOKEN UNAVAILABLE for a locked token, alipayplus-nfc.md §9). No credential is used.
* **Declines** (app DECLINE, terminal-requested AAC, CDCVM needed): an AAC over the same input
  with a *random* key and the next credential's ATC, which is not consumed (§7.2: no SUK burnt),
  plus POSCII ``DF4B`` — ``000100`` "CDCVM required" (→ the POS shows "See Phone", the user
  verifies and taps again) or ``000000`` for a plain decline (§10).
* **CVM limit**: the reader tells the phone at GPO time through the "CVM limit exceeded" bit of
  Terminal Risk Management Data 9F1D (byte 2 b8, the spec's reading of kernel-2 code); an optional
  card-side ``cvm_limit`` (minor units, compared with 9F02) covers readers that do not set it.
* **Custom data** (≤ 14 bytes, ``set_custom_data``): appended to the 18-byte IAD from byte 19
  (MCBP 2.3 wallet transaction data, emv-hce.md §5.4, alipayplus-nfc.md §10.1), so the IAD is
  18 + n bytes; it is not covered by the CVN 0x14 cryptogram.
* **CDA** is not implemented, so the default AIP is ``1A80`` (CDCVM, CVM, TRM; EMV mode) rather
  than the sample's ``1B80``; a profile may set ``aip`` explicitly.
"""

from __future__ import annotations

import calendar
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, IntEnum, StrEnum
from typing import Any, Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from alipayplus.nfc import CUSTOM_DATA_MAX_BYTES

from . import tlv
from .secure_store import SecureStore

logger = logging.getLogger(__name__)

PPSE_NAME = b"2PAY.SYS.DDF01"
MASTERCARD_AID = "A0000000041010"
CUSTOM_DATA_MAX = CUSTOM_DATA_MAX_BYTES  # MCBP 2.3 wallet transaction data: IAD bytes 19-32
CDCVM_WINDOW = timedelta(seconds=30)  # authBefore: authenticated in the last 30 s (alipayplus-nfc §10.2)

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

# terminal data bits the card reads
TRM_CVM_LIMIT_EXCEEDED = (1, 0x80)  # 9F1D byte 2 b8 [spec: uncertain exact bit]
OFFLINE_ONLY_TERMINAL_DIGITS = ("3", "6")  # 9F35 second digit: offline only → MCBP refuses

# CVR bits (emv-hce.md §5.4, MCBP)
CVR_AAC, CVR_ARQC, CVR_CDCVM_OK = 0x80, 0xA0, 0x05
CVR_DOMESTIC, CVR_INTERNATIONAL, CVR_CDCVM_NOT_PERFORMED = 0x02, 0x04, 0x20
CVR_CVM_REQUIRED_NOT_SATISFIED = 0x08
IAD_CVR_MASK_BYTE, IAD_CVR_MASK = 3, 0x03
IAD_BASE_LENGTH = 18

POSCII_CDCVM_REQUIRED = bytes.fromhex("000100")
POSCII_DECLINED = bytes.fromhex("000000")


class CryptogramType(IntEnum):
    """Cryptogram Information Data (9F27)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80


class PermitResult(StrEnum):
    """``AppPermitResult`` (alipayplus-nfc.md §10.2)."""

    PROCEED = "PROCEED"
    DECLINE = "DECLINE"
    NEED_AUTH = "NEED_AUTH"


class TransactionRange(StrEnum):
    LOW_VALUE = "LOW_VALUE"
    HIGH_VALUE = "HIGH_VALUE"


class TapFailure(StrEnum):
    """Codes given to ``on_transaction_failed`` (Alipay+ result codes where one exists)."""

    CDCVM_REQUIRED = "10003"
    SDK_NOT_CONNECTED = "10006"
    INSUFFICIENT_CREDENTIALS = "10007"
    TOKEN_UNAVAILABLE = "10008"  # e.g. locked (status 3 or 4)
    TOKEN_DOES_NOT_EXIST = "10009"
    APP_DECLINED = "APP_DECLINE"
    TERMINAL_DECLINED = "TERMINAL_DECLINE"


@dataclass(frozen=True)
class TransactionInfo:
    """What the app's permit sees: amount (minor units), currency (ISO 4217 numeric), range, MCC."""

    amount: int
    currency_code: str
    transaction_range: TransactionRange
    merchant_category_code: str


@dataclass(frozen=True)
class TapResult:
    """A completed tap as the device records it (join it to the server's payment by custom data)."""

    cryptogram_type: CryptogramType
    cryptogram: bytes
    atc: int
    amount: int
    currency_code: str
    unpredictable_number: bytes
    cdcvm_verified: bool


class TransactionPermit(Protocol):
    """The app's decision for a tap: ``isAllowed(authBefore, transactionInfo)``."""

    def is_allowed(self, auth_before: bool, info: TransactionInfo) -> PermitResult: ...


class TransactionListener:
    """``TransactionListener``: override what you need; the defaults ignore the event."""

    def on_transaction_started(self) -> None:
        """The first command of a tap arrived."""

    def on_transaction_auth(self) -> None:
        """CDCVM is needed: prompt the user, who then taps again."""

    def on_transaction_finished(self, result: TapResult, atc: int, custom_data: bytes | None) -> None:
        """An ARQC left the phone; one credential was consumed."""

    def on_transaction_failed(self, code: str) -> None:
        """The tap ended without an ARQC (``TapFailure`` values)."""


# --- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """One single-use credential: its ATC and the session key for that ATC."""

    atc: int
    single_use_key: bytes


class CredentialSource(Protocol):
    """Hands out credentials in ATC order and burns each one used."""

    def peek(self) -> Credential | None: ...

    def consume(self, atc: int) -> None: ...


Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _usable(record: Mapping[str, Any], now: datetime) -> bool:
    """Unused and not expired (a record without ``expiresAt`` does not expire; one whose expiry
    cannot be read is not usable)."""
    if record.get("used"):
        return False
    expires_at = record.get("expiresAt")
    if expires_at is None:
        return True
    try:
        expires = datetime.fromisoformat(str(expires_at))
    except ValueError:
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires > now


def _next_credential(records: list[dict[str, Any]], now: datetime) -> Credential | None:
    usable = [record for record in records if _usable(record, now)]
    if not usable:
        return None
    record = min(usable, key=lambda item: int(item["atc"]))
    return Credential(int(record["atc"]), bytes.fromhex(str(record["singleUseKey"])))


def _mark_used(records: list[dict[str, Any]], atc: int) -> None:
    for record in records:
        if int(record["atc"]) == atc:
            record["used"] = True


class ListCredentials:
    """Credentials in the activation's shape ``[{atc, singleUseKey, expiresAt}]``, in memory."""

    def __init__(self, records: list[dict[str, Any]], clock: Clock = _utc_now) -> None:
        self.records = [dict(record) for record in records]
        self._clock = clock

    def peek(self) -> Credential | None:
        return _next_credential(self.records, self._clock())

    def consume(self, atc: int) -> None:
        _mark_used(self.records, atc)


class StoredCredentials:
    """The secure store's ``credentials`` record (what ``nfc_sdk`` stores and counts), updated in place."""

    def __init__(self, store: SecureStore, clock: Clock = _utc_now, name: str = "credentials") -> None:
        self._store = store
        self._clock = clock
        self._name = name

    def _records(self) -> list[dict[str, Any]]:
        return list((self._store.get(self._name) or {}).get("credentials", []))

    def peek(self) -> Credential | None:
        return _next_credential(self._records(), self._clock())

    def unused(self) -> int:
        """How many credentials a tap could still use (what isPaymentAvailable and replenish count)."""
        now = self._clock()
        return sum(1 for record in self._records() if _usable(record, now))

    def consume(self, atc: int) -> None:
        records = self._records()
        _mark_used(records, atc)
        self._store.put(self._name, {"credentials": records})


# --- card profile -------------------------------------------------------------------------------


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


# --- cryptography -------------------------------------------------------------------------------


def _des(key: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    """Single DES as TDES with K‖K‖K (``cryptography`` has no plain DES)."""
    cipher = Cipher(TripleDES(key * 3), modes.ECB())
    context = cipher.decryptor() if decrypt else cipher.encryptor()
    return context.update(block) + context.finalize()


def retail_mac(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with padding method 2: the Mastercard AC (emv-hce.md §5.3)."""
    left, right = key[:8], key[8:16]
    padded = data + b"\x80" + bytes((-len(data) - 1) % 8)
    state = bytes(8)
    for offset in range(0, len(padded), 8):
        block = bytes(a ^ b for a, b in zip(state, padded[offset : offset + 8], strict=True))
        state = _des(left, block)
    return _des(left, _des(right, state, decrypt=True))


# --- the card -----------------------------------------------------------------------------------


class _State(Enum):
    IDLE = "IDLE"
    PPSE_SELECTED = "PPSE_SELECTED"
    APP_SELECTED = "APP_SELECTED"
    INITIATED = "INITIATED"
    DONE = "DONE"


@dataclass(frozen=True)
class _Apdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes


class _WrongLength(ValueError):
    """The command's Lc does not match its body."""


def _parse_apdu(command: bytes) -> _Apdu:
    """Short APDU cases 1–4 (emv-hce.md §2); extended length is not used over HCE here."""
    if len(command) < 4:
        raise _WrongLength("shorter than a header")
    header, body = command[:4], command[4:]
    if len(body) <= 1:  # case 1 or 2: no data, maybe Le
        data = b""
    else:
        lc = body[0]
        if len(body) - 1 not in (lc, lc + 1) or lc == 0:
            raise _WrongLength(f"Lc {lc} but {len(body) - 1} bytes follow")
        data = body[1 : 1 + lc]
    return _Apdu(header[0], header[1], header[2], header[3], data)


@dataclass
class _Tap:
    """What one tap learned so far (GPO data)."""

    cvm_limit_exceeded: bool = False


class ContactlessCard:
    """The HCE card for one activated token; feed it command APDUs, get response APDUs."""

    def __init__(
        self,
        profile: Mapping[str, Any] | CardProfile,
        credentials_source: CredentialSource,
        permit: TransactionPermit | None = None,
        listener: TransactionListener | None = None,
        clock: Clock = _utc_now,
        cvm_limit: int | None = None,
        availability: Callable[[], TapFailure | None] | None = None,
    ) -> None:
        self.profile = profile if isinstance(profile, CardProfile) else CardProfile.from_dict(profile)
        self._credentials = credentials_source
        self._permit = permit
        self._listener = listener or TransactionListener()
        self._clock = clock
        self._cvm_limit = cvm_limit
        self._availability = availability  # None: the token is always usable
        self._pdol = tlv.parse_dol(self.profile.pdol)
        self._cdol1 = tlv.parse_dol(self.profile.cdol1)
        self._records = self.profile.records()
        self._state = _State.IDLE
        self._tap = _Tap()
        self._in_tap = False
        self._verified_at: datetime | None = None
        self._custom_data: bytes | None = None

    # --- the app's side ----------------------------------------------------------------------

    def verify_consumer(self) -> None:
        """The user passed the device's CDCVM (biometric/passcode); valid for ``CDCVM_WINDOW``."""
        self._verified_at = self._clock()

    def set_custom_data(self, data: bytes | None) -> None:
        """``setCustomData``: ≤ 14 bytes carried in the IAD of the next ARQC, then cleared."""
        if data is not None and len(data) > CUSTOM_DATA_MAX:
            raise ValueError(f"custom data is at most {CUSTOM_DATA_MAX} bytes")
        self._custom_data = data

    def deactivate(self) -> None:
        """``onDeactivated``: the field was lost; the next tap starts afresh."""
        self._state = _State.IDLE
        self._in_tap = False

    def _auth_before(self) -> bool:
        return self._verified_at is not None and self._clock() - self._verified_at <= CDCVM_WINDOW

    # --- APDU dispatch -----------------------------------------------------------------------

    def process_apdu(self, command: bytes) -> bytes:
        """One response APDU, data ‖ SW1 SW2, for one command APDU."""
        try:
            apdu = _parse_apdu(command)
        except _WrongLength:
            return SW_WRONG_LENGTH
        handlers: dict[int, tuple[int, Callable[[_Apdu], bytes]]] = {
            INS_SELECT: (CLA_ISO, self._select),
            INS_READ_RECORD: (CLA_ISO, self._read_record),
            INS_GPO: (CLA_PROPRIETARY, self._get_processing_options),
            INS_GENERATE_AC: (CLA_PROPRIETARY, self._generate_ac),
        }
        if apdu.cla not in (CLA_ISO, CLA_PROPRIETARY):
            return SW_CLA_NOT_SUPPORTED
        if apdu.ins not in handlers:
            return SW_INS_NOT_SUPPORTED
        cla, handler = handlers[apdu.ins]
        if apdu.cla != cla:
            return SW_CLA_NOT_SUPPORTED
        return handler(apdu)

    def _select(self, apdu: _Apdu) -> bytes:
        if (apdu.p1, apdu.p2) != SELECT_BY_NAME_FIRST:
            return SW_WRONG_P1P2
        if not apdu.data:
            return SW_WRONG_LENGTH
        if apdu.data == PPSE_NAME:
            self._start_tap()
            self._state = _State.PPSE_SELECTED
            return self.profile.ppse_fci() + SW_OK
        if apdu.data.hex().upper() == self.profile.aid:
            self._start_tap()
            self._state = _State.APP_SELECTED
            return self.profile.aid_fci() + SW_OK
        return SW_FILE_NOT_FOUND

    def _start_tap(self) -> None:
        """A new tap begins with the first SELECT after the previous one ended."""
        if not self._in_tap:
            self._in_tap = True
            self._tap = _Tap()
            self._notify(self._listener.on_transaction_started)

    def _get_processing_options(self, apdu: _Apdu) -> bytes:
        if self._state is not _State.APP_SELECTED:
            return SW_CONDITIONS_NOT_SATISFIED
        if (apdu.p1, apdu.p2) != (0, 0):
            return SW_WRONG_P1P2
        pdol_data = _gpo_pdol_data(apdu.data)
        if pdol_data is None or len(pdol_data) != tlv.dol_length(self._pdol):
            return SW_WRONG_LENGTH
        values = tlv.split_dol_data(self._pdol, pdol_data)
        terminal_type = values.get("9F35", b"\x22").hex()
        if terminal_type[1:] in OFFLINE_ONLY_TERMINAL_DIGITS:
            return SW_CONDITIONS_NOT_SATISFIED
        byte, bit = TRM_CVM_LIMIT_EXCEEDED
        trm = values.get("9F1D", b"")
        self._tap.cvm_limit_exceeded = len(trm) > byte and bool(trm[byte] & bit)
        self._state = _State.INITIATED
        return self.profile.gpo_response() + SW_OK

    def _read_record(self, apdu: _Apdu) -> bytes:
        if self._state is not _State.INITIATED:
            return SW_CONDITIONS_NOT_SATISFIED
        if apdu.p2 & 0x07 != READ_RECORD_P2_SFI_MODE or apdu.p1 == 0:
            return SW_WRONG_P1P2
        record = self._records.get((apdu.p2 >> 3, apdu.p1))
        return record + SW_OK if record is not None else SW_RECORD_NOT_FOUND

    # --- GENERATE AC -------------------------------------------------------------------------

    def _generate_ac(self, apdu: _Apdu) -> bytes:
        if self._state is not _State.INITIATED:
            return SW_CONDITIONS_NOT_SATISFIED
        if len(apdu.data) != tlv.dol_length(self._cdol1):
            return SW_WRONG_LENGTH
        self._state = _State.DONE
        self._in_tap = False
        unavailable = self._availability() if self._availability is not None else None
        if unavailable is not None:
            self._notify(self._listener.on_transaction_failed, unavailable.value)
            return SW_CONDITIONS_NOT_SATISFIED
        terminal = tlv.split_dol_data(self._cdol1, apdu.data)
        credential = self._credentials.peek()
        if credential is None:
            self._notify(self._listener.on_transaction_failed, TapFailure.INSUFFICIENT_CREDENTIALS.value)
            return SW_CONDITIONS_NOT_SATISFIED
        verified = self._auth_before()
        info = self._transaction_info(terminal)
        failure = self._decline_reason(apdu.p1, verified, info)
        if failure is not None:
            return self._decline(failure, terminal, credential, verified)
        return self._approve_online(terminal, credential, verified, info)

    def _transaction_info(self, terminal: Mapping[str, bytes]) -> TransactionInfo:
        amount = int(terminal.get("9F02", b"\x00").hex())
        over_limit = self._tap.cvm_limit_exceeded or (self._cvm_limit is not None and amount > self._cvm_limit)
        return TransactionInfo(
            amount=amount,
            currency_code=terminal.get("5F2A", b"").hex(),
            transaction_range=TransactionRange.HIGH_VALUE if over_limit else TransactionRange.LOW_VALUE,
            merchant_category_code=terminal.get("9F15", b"").hex(),
        )

    def _decline_reason(self, p1: int, verified: bool, info: TransactionInfo) -> TapFailure | None:
        """Why this tap gets an AAC, or None for an ARQC; the card enforces CDCVM whatever the app says."""
        if p1 & GEN_AC_TYPE_MASK == CryptogramType.AAC:
            return TapFailure.TERMINAL_DECLINED
        decision = self._ask_permit(verified, info)
        if decision is PermitResult.DECLINE:
            return TapFailure.APP_DECLINED
        high_value = info.transaction_range is TransactionRange.HIGH_VALUE
        if decision is PermitResult.NEED_AUTH or (high_value and not verified):
            return TapFailure.CDCVM_REQUIRED
        return None

    def _ask_permit(self, verified: bool, info: TransactionInfo) -> PermitResult:
        """The app's ``isAllowed``; an app that fails to answer declines."""
        if self._permit is None:
            return PermitResult.PROCEED
        try:
            return PermitResult(self._permit.is_allowed(verified, info))
        except Exception:
            logger.exception("TransactionPermit failed; declining the tap")
            return PermitResult.DECLINE

    def _decline(
        self, failure: TapFailure, terminal: Mapping[str, bytes], credential: Credential, verified: bool
    ) -> bytes:
        """AAC with a random key; the credential is not burnt (emv-hce.md §7.2)."""
        cdcvm_needed = failure is TapFailure.CDCVM_REQUIRED
        cvr = self._cvr(CryptogramType.AAC, terminal, verified, cvm_unsatisfied=cdcvm_needed)
        aac = retail_mac(secrets.token_bytes(16), self._ac_input(terminal, credential.atc, cvr))
        poscii = POSCII_CDCVM_REQUIRED if cdcvm_needed else POSCII_DECLINED
        response = self._gen_ac_response(CryptogramType.AAC, credential.atc, aac, self._iad(cvr, terminal, None))
        if cdcvm_needed:
            self._notify(self._listener.on_transaction_auth)
        self._notify(self._listener.on_transaction_failed, failure.value)
        return tlv.encode("77", [response, tlv.encode("DF4B", poscii)]) + SW_OK

    def _approve_online(
        self, terminal: Mapping[str, bytes], credential: Credential, verified: bool, info: TransactionInfo
    ) -> bytes:
        """ARQC with the credential's single-use (session) key; the credential is consumed first."""
        cvr = self._cvr(CryptogramType.ARQC, terminal, verified, cvm_unsatisfied=False)
        arqc = retail_mac(credential.single_use_key, self._ac_input(terminal, credential.atc, cvr))
        custom_data = self._custom_data
        iad = self._iad(cvr, terminal, custom_data)
        self._credentials.consume(credential.atc)
        self._custom_data = None
        result = TapResult(
            CryptogramType.ARQC,
            arqc,
            credential.atc,
            info.amount,
            info.currency_code,
            terminal.get("9F37", b""),
            verified,
        )
        self._notify(self._listener.on_transaction_finished, result, credential.atc, custom_data)
        return tlv.encode("77", self._gen_ac_response(CryptogramType.ARQC, credential.atc, arqc, iad)) + SW_OK

    @staticmethod
    def _gen_ac_response(cid: CryptogramType, atc: int, cryptogram: bytes, iad: bytes) -> bytes:
        return tlv.encode_many(
            [("9F27", bytes([cid])), ("9F36", atc.to_bytes(2, "big")), ("9F26", cryptogram), ("9F10", iad)]
        )

    def _ac_input(self, terminal: Mapping[str, bytes], atc: int, cvr: bytes) -> bytes:
        """CVN 0x14: 9F02‖9F03‖9F1A‖95‖5F2A‖9A‖9C‖9F37 ‖ AIP ‖ ATC ‖ CVR (39 bytes, §5.3)."""
        terminal_part = b"".join(terminal[tag] for tag in ("9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37"))
        return terminal_part + self.profile.aip + atc.to_bytes(2, "big") + cvr

    def _cvr(
        self, cid: CryptogramType, terminal: Mapping[str, bytes], verified: bool, *, cvm_unsatisfied: bool
    ) -> bytes:
        """Card Verification Results as MCBP sets them (emv-hce.md §5.4)."""
        cvr = bytearray(6)
        cvr[0] = (CVR_ARQC if cid is CryptogramType.ARQC else CVR_AAC) | (CVR_CDCVM_OK if verified else 0)
        cvr[1] = self.profile.iad_template[IAD_CVR_MASK_BYTE] & IAD_CVR_MASK
        domestic = terminal.get("9F1A", b"").hex() == self.profile.country_code
        cvr[3] = (CVR_DOMESTIC if domestic else CVR_INTERNATIONAL) | (0 if verified else CVR_CDCVM_NOT_PERFORMED)
        cvr[5] = CVR_CVM_REQUIRED_NOT_SATISFIED if cvm_unsatisfied else 0
        return bytes(cvr)

    def _iad(self, cvr: bytes, terminal: Mapping[str, bytes], custom_data: bytes | None) -> bytes:
        """Template with CVR at 2–7, the IDN (or DAC) at 8–9, and custom data from byte 19."""
        iad = bytearray(self.profile.iad_template[:IAD_BASE_LENGTH])
        iad[2:8] = cvr
        idn = terminal.get("9F4C", bytes(8))
        iad[8:10] = idn[:2] if any(idn) else terminal.get("9F45", bytes(2))[:2].rjust(2, b"\x00")
        return bytes(iad) + (custom_data or b"")

    def _notify(self, callback: Callable[..., None], *args: Any) -> None:
        """Listener failures are the app's problem; the POS still gets its answer."""
        try:
            callback(*args)
        except Exception:
            logger.exception("TransactionListener callback failed")


def _gpo_pdol_data(data: bytes) -> bytes | None:
    """The value of GPO's ``83`` template, or None if the data is not exactly one ``83`` TLV."""
    try:
        objects = tlv.decode(data) if data and data[0] == GPO_COMMAND_TEMPLATE else []
    except tlv.TlvError:
        return None
    if len(objects) != 1 or objects[0].tag != "83":
        return None
    return objects[0].value


__all__ = [
    "CardProfile",
    "ContactlessCard",
    "Credential",
    "CredentialSource",
    "CryptogramType",
    "ListCredentials",
    "PermitResult",
    "StoredCredentials",
    "TapFailure",
    "TapResult",
    "TransactionInfo",
    "TransactionListener",
    "TransactionPermit",
    "TransactionRange",
    "retail_mac",
]
