"""The contactless card an activated Mastercard token presents over HCE (EMV mode, kernel 2).

``ContactlessCard.process_apdu`` is what Android's ``HostApduService.processCommandApdu`` would
call: it answers SELECT PPSE, SELECT AID, GET PROCESSING OPTIONS, READ RECORD and GENERATE AC as
emv-hce.md §3 describes, enforcing the §3.7 sequence.

This module holds the card's state machine; beside it are ``_card_types`` (the app's vocabulary),
``_card_credentials``, ``_card_profile`` (static data), ``_card_apdu`` (command parsing) and
``_card_cryptogram`` (the AC maths), whose public names are re-exported here.

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

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from alipayplus.nfc import CUSTOM_DATA_MAX_BYTES

from . import tlv
from ._card_apdu import (
    CLA_ISO,
    CLA_PROPRIETARY,
    GEN_AC_TYPE_MASK,
    INS_GENERATE_AC,
    INS_GPO,
    INS_READ_RECORD,
    OFFLINE_ONLY_TERMINAL_DIGITS,
    READ_RECORD_P2_SFI_MODE,
    SELECT_BY_NAME_FIRST,
    SW_CLA_NOT_SUPPORTED,
    SW_INS_NOT_SUPPORTED,
    SW_OK,
    SW_RECORD_NOT_FOUND,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    TRM_CVM_LIMIT_EXCEEDED,
    Apdu,
    WrongLength,
    gpo_pdol_data,
    parse_apdu,
)

# explicit re-exports: the NFC SDK's card (``_nfc_taps``) answers these itself
from ._card_apdu import INS_SELECT as INS_SELECT
from ._card_apdu import SW_CONDITIONS_NOT_SATISFIED as SW_CONDITIONS_NOT_SATISFIED
from ._card_apdu import SW_FILE_NOT_FOUND as SW_FILE_NOT_FOUND
from ._card_credentials import Clock, Credential, CredentialSource, ListCredentials, StoredCredentials, utc_now
from ._card_cryptogram import aac_answer, arqc_and_iad, gen_ac_response, retail_mac
from ._card_profile import PPSE_NAME, CardProfile
from ._card_types import (
    CryptogramType,
    PermitResult,
    TapFailure,
    TapResult,
    TransactionInfo,
    TransactionListener,
    TransactionPermit,
    TransactionRange,
)

logger = logging.getLogger(__name__)

CUSTOM_DATA_MAX = CUSTOM_DATA_MAX_BYTES  # MCBP 2.3 wallet transaction data: IAD bytes 19-32
CDCVM_WINDOW = timedelta(seconds=30)  # authBefore: authenticated in the last 30 s (alipayplus-nfc §10.2)


class _State(Enum):
    IDLE = "IDLE"
    PPSE_SELECTED = "PPSE_SELECTED"
    APP_SELECTED = "APP_SELECTED"
    INITIATED = "INITIATED"
    DONE = "DONE"


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
        clock: Clock = utc_now,
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
            apdu = parse_apdu(command)
        except WrongLength:
            return SW_WRONG_LENGTH
        handlers: dict[int, tuple[int, Callable[[Apdu], bytes]]] = {
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

    def _select(self, apdu: Apdu) -> bytes:
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

    def _get_processing_options(self, apdu: Apdu) -> bytes:
        if self._state is not _State.APP_SELECTED:
            return SW_CONDITIONS_NOT_SATISFIED
        if (apdu.p1, apdu.p2) != (0, 0):
            return SW_WRONG_P1P2
        pdol_data = gpo_pdol_data(apdu.data)
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

    def _read_record(self, apdu: Apdu) -> bytes:
        if self._state is not _State.INITIATED:
            return SW_CONDITIONS_NOT_SATISFIED
        if apdu.p2 & 0x07 != READ_RECORD_P2_SFI_MODE or apdu.p1 == 0:
            return SW_WRONG_P1P2
        record = self._records.get((apdu.p2 >> 3, apdu.p1))
        return record + SW_OK if record is not None else SW_RECORD_NOT_FOUND

    # --- GENERATE AC -------------------------------------------------------------------------

    def _generate_ac(self, apdu: Apdu) -> bytes:
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
        """An AAC (no credential burnt); the listener hears why, and is asked to prompt for CDCVM if that is why."""
        cdcvm_needed = failure is TapFailure.CDCVM_REQUIRED
        answer = aac_answer(self.profile, terminal, credential.atc, verified, cdcvm_needed=cdcvm_needed)
        if cdcvm_needed:
            self._notify(self._listener.on_transaction_auth)
        self._notify(self._listener.on_transaction_failed, failure.value)
        return answer + SW_OK

    def _approve_online(
        self, terminal: Mapping[str, bytes], credential: Credential, verified: bool, info: TransactionInfo
    ) -> bytes:
        """ARQC with the credential's single-use (session) key; the credential is consumed first."""
        custom_data = self._custom_data
        arqc, iad = arqc_and_iad(self.profile, credential, terminal, verified, custom_data)
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
        return tlv.encode("77", gen_ac_response(CryptogramType.ARQC, credential.atc, arqc, iad)) + SW_OK

    def _notify(self, callback: Callable[..., None], *args: Any) -> None:
        """Listener failures are the app's problem; the POS still gets its answer."""
        try:
            callback(*args)
        except Exception:
            logger.exception("TransactionListener callback failed")


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
