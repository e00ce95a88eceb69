"""The card's cryptogram maths: retail MAC, CVN 0x14 AC input, CVR, IAD and the GENERATE AC answers."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from . import tlv
from ._card_credentials import Credential
from ._card_profile import CardProfile
from ._card_types import CryptogramType

# CVR bits (emv-hce.md §5.4, MCBP)
CVR_AAC, CVR_ARQC, CVR_CDCVM_OK = 0x80, 0xA0, 0x05
CVR_DOMESTIC, CVR_INTERNATIONAL, CVR_CDCVM_NOT_PERFORMED = 0x02, 0x04, 0x20
CVR_CVM_REQUIRED_NOT_SATISFIED = 0x08
IAD_CVR_MASK_BYTE, IAD_CVR_MASK = 3, 0x03
IAD_BASE_LENGTH = 18

POSCII_CDCVM_REQUIRED = bytes.fromhex("000100")
POSCII_DECLINED = bytes.fromhex("000000")


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


def gen_ac_response(cid: CryptogramType, atc: int, cryptogram: bytes, iad: bytes) -> bytes:
    return tlv.encode_many(
        [("9F27", bytes([cid])), ("9F36", atc.to_bytes(2, "big")), ("9F26", cryptogram), ("9F10", iad)]
    )


def _ac_input(profile: CardProfile, terminal: Mapping[str, bytes], atc: int, cvr: bytes) -> bytes:
    """CVN 0x14: 9F02‖9F03‖9F1A‖95‖5F2A‖9A‖9C‖9F37 ‖ AIP ‖ ATC ‖ CVR (39 bytes, §5.3)."""
    terminal_part = b"".join(terminal[tag] for tag in ("9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37"))
    return terminal_part + profile.aip + atc.to_bytes(2, "big") + cvr


def _cvr(
    profile: CardProfile,
    cid: CryptogramType,
    terminal: Mapping[str, bytes],
    verified: bool,
    *,
    cvm_unsatisfied: bool,
) -> bytes:
    """Card Verification Results as MCBP sets them (emv-hce.md §5.4)."""
    cvr = bytearray(6)
    cvr[0] = (CVR_ARQC if cid is CryptogramType.ARQC else CVR_AAC) | (CVR_CDCVM_OK if verified else 0)
    cvr[1] = profile.iad_template[IAD_CVR_MASK_BYTE] & IAD_CVR_MASK
    domestic = terminal.get("9F1A", b"").hex() == profile.country_code
    cvr[3] = (CVR_DOMESTIC if domestic else CVR_INTERNATIONAL) | (0 if verified else CVR_CDCVM_NOT_PERFORMED)
    cvr[5] = CVR_CVM_REQUIRED_NOT_SATISFIED if cvm_unsatisfied else 0
    return bytes(cvr)


def _iad(profile: CardProfile, cvr: bytes, terminal: Mapping[str, bytes], custom_data: bytes | None) -> bytes:
    """Template with CVR at 2–7, the IDN (or DAC) at 8–9, and custom data from byte 19."""
    iad = bytearray(profile.iad_template[:IAD_BASE_LENGTH])
    iad[2:8] = cvr
    idn = terminal.get("9F4C", bytes(8))
    iad[8:10] = idn[:2] if any(idn) else terminal.get("9F45", bytes(2))[:2].rjust(2, b"\x00")
    return bytes(iad) + (custom_data or b"")


def aac_answer(
    profile: CardProfile, terminal: Mapping[str, bytes], atc: int, verified: bool, *, cdcvm_needed: bool
) -> bytes:
    """A decline's ``77`` template: an AAC under a random key, so no credential is burnt (emv-hce.md §7.2),
    and POSCII ``DF4B`` telling the POS whether the user should verify and tap again."""
    cvr = _cvr(profile, CryptogramType.AAC, terminal, verified, cvm_unsatisfied=cdcvm_needed)
    aac = retail_mac(secrets.token_bytes(16), _ac_input(profile, terminal, atc, cvr))
    poscii = POSCII_CDCVM_REQUIRED if cdcvm_needed else POSCII_DECLINED
    response = gen_ac_response(CryptogramType.AAC, atc, aac, _iad(profile, cvr, terminal, None))
    return tlv.encode("77", [response, tlv.encode("DF4B", poscii)])


def arqc_and_iad(
    profile: CardProfile,
    credential: Credential,
    terminal: Mapping[str, bytes],
    verified: bool,
    custom_data: bytes | None,
) -> tuple[bytes, bytes]:
    """The ARQC under the credential's single-use key, used as the session key (see ``card``'s docstring),
    and the IAD carrying the custom data."""
    cvr = _cvr(profile, CryptogramType.ARQC, terminal, verified, cvm_unsatisfied=False)
    arqc = retail_mac(credential.single_use_key, _ac_input(profile, terminal, credential.atc, cvr))
    return arqc, _iad(profile, cvr, terminal, custom_data)
