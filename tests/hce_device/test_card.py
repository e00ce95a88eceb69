"""APDU-level tests of the HCE card: the whole kernel-2 exchange, checked against pyemv.

The issuer side is pyemv only (emv-hce.md §12.1): IMK-AC → ICC MK (option A) → EMV common session
key per ATC (CVN 0x14) → ARQC; the card never sees the IMK, only the per-ATC single-use keys.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pyemv import ac, kd

from hce_device import tlv
from hce_device.card import (
    ContactlessCard,
    CryptogramType,
    ListCredentials,
    PermitResult,
    StoredCredentials,
    TapFailure,
    TapResult,
    TransactionInfo,
    TransactionListener,
    TransactionRange,
)
from hce_device.secure_store import DeviceKeystore, SecureStore

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

IMK_AC = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN, PSN = "5480981500100002", "01"
NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)

SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")
SELECT_AID = bytes.fromhex("00A4040007A000000004101000")
TRM_LOW = bytes(8)
TRM_CVM_LIMIT_EXCEEDED = bytes.fromhex("0080000000000000")


def session_key(atc: int) -> bytes:
    """What the cloud (CMS-D) would deliver as the single-use key for ``atc`` — pyemv, not our code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        icc_mk = kd.derive_icc_mk_a(IMK_AC, PAN, PSN)
        return kd.derive_common_sk(icc_mk, atc.to_bytes(2, "big") + bytes(6))


def credentials(*atcs: int, expires: datetime = NOW + timedelta(days=1)) -> list[dict[str, Any]]:
    return [{"atc": atc, "singleUseKey": session_key(atc).hex(), "expiresAt": expires.isoformat()} for atc in atcs]


def profile(**overrides: str) -> dict[str, str]:
    return {"tokenPan": PAN, "panSequenceNumber": PSN, "expiryDate": "2912", "aid": "A0000000041010", **overrides}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Recorder(TransactionListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_transaction_started(self) -> None:
        self.events.append(("started",))

    def on_transaction_auth(self) -> None:
        self.events.append(("auth",))

    def on_transaction_finished(self, result: TapResult, atc: int, custom_data: bytes | None) -> None:
        self.events.append(("finished", result, atc, custom_data))

    def on_transaction_failed(self, code: str) -> None:
        self.events.append(("failed", code))


class FixedPermit:
    def __init__(self, answer: PermitResult) -> None:
        self.answer = answer
        self.calls: list[tuple[bool, TransactionInfo]] = []

    def is_allowed(self, auth_before: bool, info: TransactionInfo) -> PermitResult:
        self.calls.append((auth_before, info))
        return self.answer


def gpo(trm: bytes = TRM_LOW, country: str = "0840", terminal_type: str = "22") -> bytes:
    pdol_data = trm + bytes.fromhex(country + terminal_type)
    return bytes.fromhex("80A80000") + bytes([len(pdol_data) + 2, 0x83, len(pdol_data)]) + pdol_data + b"\x00"


def cdol1_data(amount: int = 1500, un: str = "1A2B3C4D", country: str = "0840") -> bytes:
    """The terminal's CDOL1 data built from the CDOL1 the card returned, with our DOL builder."""
    values = {
        "9F02": bytes.fromhex(f"{amount:012d}"),
        "9F1A": bytes.fromhex(country),
        "5F2A": bytes.fromhex("0840"),
        "9A": bytes.fromhex("250315"),
        "9C": b"\x00",
        "9F37": bytes.fromhex(un),
        "9F35": b"\x22",
        "9F34": bytes.fromhex("3F0000"),
        "9F15": bytes.fromhex("5411"),
    }
    return tlv.build_dol_data(tlv.parse_dol(bytes.fromhex(CDOL1_HEX)), values)


CDOL1_HEX = "9F02069F03069F1A0295055F2A029A039C019F37049F35019F45029F4C089F34039F1502"


def gen_ac(data: bytes, p1: int = 0x80) -> bytes:
    return bytes([0x80, 0xAE, p1, 0x00, len(data)]) + data + b"\x00"


def ok(response: bytes) -> list[tlv.Tlv]:
    assert response[-2:] == b"\x90\x00", response.hex()
    return tlv.decode(response[:-2])


def tap(card: ContactlessCard, *, amount: int = 1500, trm: bytes = TRM_LOW, un: str = "1A2B3C4D") -> bytes:
    """A full kernel-2 exchange; the GEN AC response (with SW) is returned."""
    ok(card.process_apdu(SELECT_PPSE))
    ok(card.process_apdu(SELECT_AID))
    gpo_response = tlv.flatten(ok(card.process_apdu(gpo(trm))))
    afl = gpo_response["94"]
    for offset in range(0, len(afl), 4):
        sfi, first, last = afl[offset] >> 3, afl[offset + 1], afl[offset + 2]
        for record in range(first, last + 1):
            ok(card.process_apdu(bytes([0x00, 0xB2, record, (sfi << 3) | 4, 0x00])))
    return card.process_apdu(gen_ac(cdol1_data(amount, un)))


def issuer_arqc(response: bytes, amount: int, un: str, aip: bytes) -> bytes:
    """The issuer's recomputation from the tap's data, with pyemv only (emv-hce.md §5.3)."""
    fields = tlv.flatten(tlv.decode(response[:-2]))
    atc = fields["9F36"]
    cvr = fields["9F10"][2:8]
    terminal = cdol1_data(amount, un)[:29]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = kd.derive_common_sk(kd.derive_icc_mk_a(IMK_AC, PAN, PSN), atc + bytes(6))
        return ac.generate_ac(sk, terminal + aip + atc + cvr)


def make_card(
    records: list[dict[str, Any]] | None = None, clock: Clock | None = None, **kwargs: Any
) -> tuple[ContactlessCard, ListCredentials, Recorder]:
    source = ListCredentials(records if records is not None else credentials(5, 6, 7), clock=clock or Clock())
    listener = Recorder()
    card = ContactlessCard(profile(), source, listener=listener, clock=clock or Clock(), **kwargs)
    return card, source, listener


# --- the spec's worked vector ---------------------------------------------------------------------


def test_worked_vector_2_byte_for_byte() -> None:
    """emv-hce.md §5.3 vector 2: same keys, same terminal data → the same R-APDU."""
    assert session_key(5).hex().upper() == "16C1643DDCEA8010C40D25B358DC8AE3"
    card = ContactlessCard(profile(aip="1B80"), ListCredentials(credentials(5), clock=Clock()), clock=Clock())
    card.verify_consumer()  # the vector's CVR says CDCVM verified (A5)
    ok(card.process_apdu(SELECT_PPSE))
    ok(card.process_apdu(SELECT_AID))
    assert card.process_apdu(bytes.fromhex("80A800000D830B000000000000000008402200")).hex().upper() == (
        "770E82021B80940808010100100101009000"
    )
    command = bytes.fromhex(
        "80AE80002D" "000000001500" "000000000000" "0840" "0000000000" "0840" "250315" "00"
        "1A2B3C4D" "22" "0000" "0000000000000000" "3F0000" "5411" "00"
    )  # fmt: skip
    assert card.process_apdu(command).hex().upper() == (
        "77299F2701809F360200059F2608501E569ECD7E3EC19F10120314A50100020000000000000000000000FF9000"
    )


# --- the exchange ---------------------------------------------------------------------------------


def test_select_ppse_lists_the_mastercard_aid() -> None:
    card, _, _ = make_card()
    fci = ok(card.process_apdu(SELECT_PPSE))
    assert fci[0].tag == "6F"
    assert tlv.find(fci, "84") == tlv.Tlv("84", b"2PAY.SYS.DDF01")
    entry = tlv.find(fci, "61")
    assert entry is not None and tlv.flatten([entry])["4F"] == bytes.fromhex("A0000000041010")


def test_select_aid_returns_the_pdol() -> None:
    card, _, _ = make_card()
    ok(card.process_apdu(SELECT_PPSE))
    fields = tlv.flatten(ok(card.process_apdu(SELECT_AID)))
    assert fields["84"] == bytes.fromhex("A0000000041010")
    assert [(e.tag, e.length) for e in tlv.parse_dol(fields["9F38"])] == [("9F1D", 8), ("9F1A", 2), ("9F35", 1)]


def test_records_carry_the_token_data() -> None:
    card, _, _ = make_card()
    ok(card.process_apdu(SELECT_PPSE))
    ok(card.process_apdu(SELECT_AID))
    gpo_fields = tlv.flatten(ok(card.process_apdu(gpo())))
    assert gpo_fields["82"] == bytes.fromhex("1A80")
    assert gpo_fields["94"] == bytes.fromhex("0801010010010100")
    track = tlv.flatten(ok(card.process_apdu(bytes.fromhex("00B2010C00"))))
    assert track["57"].hex().upper().startswith(PAN + "D2912201")
    emv = tlv.flatten(ok(card.process_apdu(bytes.fromhex("00B2011400"))))
    assert emv["5A"] == bytes.fromhex(PAN)
    assert emv["5F24"] == bytes.fromhex("291231")
    assert emv["5F34"] == bytes.fromhex(PSN)
    assert emv["8C"].hex().upper() == CDOL1_HEX
    assert tlv.dol_length(tlv.parse_dol(emv["8C"])) == 45
    assert card.process_apdu(bytes.fromhex("00B2021400")) == bytes.fromhex("6A83")
    assert card.process_apdu(bytes.fromhex("00B2011C00")) == bytes.fromhex("6A83")


def test_full_tap_gives_an_arqc_the_issuer_reproduces_with_pyemv() -> None:
    card, _, listener = make_card()
    response = tap(card, amount=2345, un="CAFEBABE")
    fields = tlv.flatten(ok(response))
    assert fields["9F27"] == bytes([CryptogramType.ARQC])
    assert fields["9F36"] == bytes.fromhex("0005")
    assert len(fields["9F10"]) == 18 and fields["9F10"][:2] == bytes.fromhex("0314")
    assert fields["9F10"][2:8] == bytes.fromhex("A00100220000")  # ARQC, domestic, CDCVM not performed
    assert "DF4B" not in fields
    assert fields["9F26"] == issuer_arqc(response, 2345, "CAFEBABE", bytes.fromhex("1A80"))
    assert issuer_arqc(response, 2346, "CAFEBABE", bytes.fromhex("1A80")) != fields["9F26"]  # tampered amount
    assert [event[0] for event in listener.events] == ["started", "finished"]


def test_each_tap_consumes_one_credential_and_the_atc_increments() -> None:
    card, source, listener = make_card(credentials(7, 5, 6))
    atcs = []
    for un in ("00000001", "00000002", "00000003"):
        response = tap(card, un=un)
        fields = tlv.flatten(ok(response))
        atcs.append(int.from_bytes(fields["9F36"], "big"))
        assert fields["9F26"] == issuer_arqc(response, 1500, un, bytes.fromhex("1A80"))
    assert atcs == [5, 6, 7]
    assert all(record["used"] for record in source.records)
    assert [event[2] for event in listener.events if event[0] == "finished"] == [5, 6, 7]


def test_a_tap_with_no_credential_left_answers_6985_and_reports_10007() -> None:
    card, _, listener = make_card(credentials(5))
    ok(tap(card))
    assert tap(card) == bytes.fromhex("6985")
    assert listener.events[-1] == ("failed", TapFailure.INSUFFICIENT_CREDENTIALS.value)


def test_expired_credentials_are_not_used() -> None:
    records = credentials(5, expires=NOW - timedelta(seconds=1)) + credentials(9)
    card, _, _ = make_card(records)
    assert tlv.flatten(ok(tap(card)))["9F36"] == bytes.fromhex("0009")
    assert tap(card) == bytes.fromhex("6985")


def test_stored_credentials_are_marked_used_in_the_secure_store() -> None:
    store = SecureStore(DeviceKeystore())
    store.put("credentials", {"credentials": credentials(5, 6)})
    card = ContactlessCard(profile(), StoredCredentials(store, clock=Clock()), clock=Clock())
    ok(tap(card))
    stored = store.get("credentials")
    assert stored is not None
    assert [bool(record.get("used")) for record in stored["credentials"]] == [True, False]


# --- sequence and status words ----------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        gpo(),  # GPO before SELECT AID
        bytes.fromhex("00B2010C00"),  # READ RECORD before GPO
        gen_ac(cdol1_data()),  # GEN AC before GPO
    ],
)
def test_out_of_order_commands_get_6985(command: bytes) -> None:
    card, _, _ = make_card()
    ok(card.process_apdu(SELECT_PPSE))
    assert card.process_apdu(command) == bytes.fromhex("6985")


def test_gen_ac_twice_and_read_after_gen_ac_get_6985() -> None:
    card, _, _ = make_card()
    ok(tap(card))
    assert card.process_apdu(gen_ac(cdol1_data())) == bytes.fromhex("6985")
    assert card.process_apdu(bytes.fromhex("00B2010C00")) == bytes.fromhex("6985")


def test_status_words_for_bad_commands() -> None:
    card, _, _ = make_card()
    assert card.process_apdu(bytes.fromhex("00A4040007A000000004306000")) == bytes.fromhex("6A82")
    assert card.process_apdu(bytes.fromhex("00A4040C07A000000004101000")) == bytes.fromhex("6A86")
    assert card.process_apdu(bytes.fromhex("00CA9F3600")) == bytes.fromhex("6D00")
    assert card.process_apdu(bytes.fromhex("90A404000E325041592E5359532E444446303100")) == bytes.fromhex("6E00")
    assert card.process_apdu(bytes.fromhex("80A404000E325041592E5359532E444446303100")) == bytes.fromhex("6E00")
    assert card.process_apdu(bytes.fromhex("00A4")) == bytes.fromhex("6700")
    assert card.process_apdu(bytes.fromhex("00A404000E325041")) == bytes.fromhex("6700")


def test_wrong_dol_lengths_get_6700() -> None:
    card, _, _ = make_card()
    ok(card.process_apdu(SELECT_AID))
    assert card.process_apdu(bytes.fromhex("80A8000002830000")) == bytes.fromhex("6700")
    ok(card.process_apdu(gpo()))
    assert card.process_apdu(gen_ac(cdol1_data()[:-1])) == bytes.fromhex("6700")
    assert tlv.flatten(ok(card.process_apdu(gen_ac(cdol1_data()))))["9F27"] == b"\x80"


def test_offline_only_terminals_are_refused() -> None:
    card, _, _ = make_card()
    ok(card.process_apdu(SELECT_AID))
    assert card.process_apdu(gpo(terminal_type="23")) == bytes.fromhex("6985")


# --- CVM limit and the second tap -----------------------------------------------------------------


def test_over_the_cvm_limit_the_phone_asks_for_cdcvm_then_the_second_tap_completes() -> None:
    clock = Clock()
    card, source, listener = make_card(credentials(5, 6), clock=clock)
    first = tlv.flatten(ok(tap(card, amount=9000, trm=TRM_CVM_LIMIT_EXCEEDED)))
    assert first["9F27"] == bytes([CryptogramType.AAC])
    assert first["DF4B"] == bytes.fromhex("000100")  # POSCII: CDCVM required → "See Phone"
    assert first["9F10"][2] == 0x80 and first["9F10"][7] == 0x08  # AAC; CVM required, not satisfied
    assert listener.events[-2:] == [("auth",), ("failed", TapFailure.CDCVM_REQUIRED.value)]
    assert not any(record.get("used") for record in source.records)  # no credential burnt

    clock.now += timedelta(seconds=5)
    card.verify_consumer()
    clock.now += timedelta(seconds=20)
    response = tap(card, amount=9000, trm=TRM_CVM_LIMIT_EXCEEDED)
    second = tlv.flatten(ok(response))
    assert second["9F27"] == bytes([CryptogramType.ARQC])
    assert second["9F36"] == bytes.fromhex("0005")
    assert second["9F10"][2:8] == bytes.fromhex("A50100020000")  # CDCVM verified
    assert second["9F26"] == issuer_arqc(response, 9000, "1A2B3C4D", bytes.fromhex("1A80"))
    finished = listener.events[-1]
    assert finished[0] == "finished" and finished[1].cdcvm_verified


def test_a_verification_older_than_30_seconds_does_not_count() -> None:
    clock = Clock()
    card, _, _ = make_card(clock=clock)
    card.verify_consumer()
    clock.now += timedelta(seconds=31)
    assert tlv.flatten(ok(tap(card, trm=TRM_CVM_LIMIT_EXCEEDED)))["DF4B"] == bytes.fromhex("000100")


def test_card_side_cvm_limit_applies_to_the_amount() -> None:
    card, _, _ = make_card(cvm_limit=5000)
    assert tlv.flatten(ok(tap(card, amount=5000)))["9F27"] == b"\x80"
    assert tlv.flatten(ok(tap(card, amount=5001)))["9F27"] == b"\x00"


# --- permit, listener, custom data ------------------------------------------------------------


def test_permit_decline_gives_an_aac_without_cdcvm_request() -> None:
    permit = FixedPermit(PermitResult.DECLINE)
    card, source, listener = make_card(permit=permit)
    fields = tlv.flatten(ok(tap(card, amount=777)))
    assert fields["9F27"] == b"\x00" and fields["DF4B"] == bytes.fromhex("000000")
    assert listener.events == [("started",), ("failed", TapFailure.APP_DECLINED.value)]
    assert not any(record.get("used") for record in source.records)
    auth_before, info = permit.calls[0]
    assert not auth_before
    assert (info.amount, info.currency_code, info.transaction_range) == (777, "0840", TransactionRange.LOW_VALUE)
    assert info.merchant_category_code == "5411"


def test_permit_need_auth_asks_for_cdcvm_then_proceeds_after_verify() -> None:
    permit = FixedPermit(PermitResult.NEED_AUTH)
    card, _, listener = make_card(permit=permit)
    assert tlv.flatten(ok(tap(card)))["DF4B"] == bytes.fromhex("000100")
    assert ("auth",) in listener.events
    card.verify_consumer()
    permit.answer = PermitResult.PROCEED
    assert tlv.flatten(ok(tap(card)))["9F27"] == b"\x80"
    assert permit.calls[-1][0] is True
    assert permit.calls[-1][1].transaction_range is TransactionRange.LOW_VALUE


def test_permit_proceed_does_not_override_the_cvm_limit() -> None:
    card, _, _ = make_card(permit=FixedPermit(PermitResult.PROCEED))
    assert tlv.flatten(ok(tap(card, trm=TRM_CVM_LIMIT_EXCEEDED)))["9F27"] == b"\x00"


def test_terminal_requested_aac_declines() -> None:
    card, _, listener = make_card()
    ok(card.process_apdu(SELECT_AID))
    ok(card.process_apdu(gpo()))
    fields = tlv.flatten(ok(card.process_apdu(gen_ac(cdol1_data(), p1=0x00))))
    assert fields["9F27"] == b"\x00"
    assert listener.events[-1] == ("failed", TapFailure.TERMINAL_DECLINED.value)


def test_custom_data_rides_in_the_iad_and_reaches_the_listener() -> None:
    card, _, listener = make_card()
    card.set_custom_data(b"ORDER-00012345")
    response = tap(card)
    iad = tlv.flatten(ok(response))["9F10"]
    assert len(iad) == 32 and iad[18:] == b"ORDER-00012345"
    assert tlv.flatten(ok(response))["9F26"] == issuer_arqc(response, 1500, "1A2B3C4D", bytes.fromhex("1A80"))
    _, result, atc, custom = listener.events[-1]
    assert (atc, custom, result.amount, result.currency_code) == (5, b"ORDER-00012345", 1500, "0840")
    assert len(tlv.flatten(ok(tap(card)))["9F10"]) == 18  # used once, then cleared


def test_custom_data_over_14_bytes_is_refused() -> None:
    card, _, _ = make_card()
    with pytest.raises(ValueError):
        card.set_custom_data(b"x" * 15)


def test_a_failing_listener_does_not_break_the_tap() -> None:
    class Broken(TransactionListener):
        def on_transaction_finished(self, result: TapResult, atc: int, custom_data: bytes | None) -> None:
            raise RuntimeError("app bug")

    card = ContactlessCard(profile(), ListCredentials(credentials(5), clock=Clock()), listener=Broken(), clock=Clock())
    assert tlv.flatten(ok(tap(card)))["9F27"] == b"\x80"


def test_started_fires_once_per_tap() -> None:
    card, _, listener = make_card()
    ok(tap(card))
    card.deactivate()
    ok(tap(card))
    assert [event[0] for event in listener.events] == ["started", "finished", "started", "finished"]


# --- TLV and DOL helpers ---------------------------------------------------------------------------


def test_tlv_multi_byte_tags_long_lengths_and_duplicates_round_trip() -> None:
    long_value = bytes(range(200))
    entries = tlv.encode("61", [tlv.encode("4F", b"\xa0\x00")]) * 2
    data = tlv.encode("6F", [tlv.encode("BF0C", entries), tlv.encode("9F4B", long_value)])
    objects = tlv.decode(data)
    assert objects[0].tag == "6F" and objects[0].children[0].tag == "BF0C"
    assert [child.tag for child in objects[0].children[0].children] == ["61", "61"]
    assert tlv.find(objects, "9F4B") == tlv.Tlv("9F4B", long_value)
    assert tlv.encode_length(200) == b"\x81\xc8" and tlv.encode_length(300) == b"\x82\x01\x2c"


def test_tlv_rejects_truncated_data() -> None:
    for bad in ("9F", "9F02", "9F0206000000", "5F8101"):
        with pytest.raises(tlv.TlvError):
            tlv.decode(bytes.fromhex(bad))


def test_dol_build_pads_and_truncates() -> None:
    entries = tlv.parse_dol(bytes.fromhex("9F02069F3704"))
    data = tlv.build_dol_data(entries, {"9F02": b"\x15\x00", "9F37": bytes.fromhex("0102030405")})
    assert data == bytes.fromhex("00000000150001020304")
    assert tlv.split_dol_data(entries, data) == {
        "9F02": bytes.fromhex("000000001500"),
        "9F37": bytes.fromhex("01020304"),
    }
    with pytest.raises(tlv.TlvError):
        tlv.split_dol_data(entries, data[:-1])
