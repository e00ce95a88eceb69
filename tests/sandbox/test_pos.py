"""The sandbox POS terminal against the HCE card, and the sandbox Mastercard's authorizations.

The card is ``hce_device.card.ContactlessCard`` holding single-use keys from
``SandboxMastercard.single_use_key``; Mastercard recomputes every ARQC from its IMK-AC, so an
approval here means the whole chain of keys and data agrees.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from pyemv import ac, kd

from alipayplus import Amount
from hce_device import tlv
from hce_device.card import ContactlessCard, ListCredentials
from sandbox.alipayplus.app import create_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.nfc import SandboxMastercard, TokenState, VerifiedAuthorization
from sandbox.pos import (
    Authorization,
    AuthorizationDecision,
    DeclineReason,
    HttpCardNetwork,
    PosConfig,
    PosTerminal,
    TapOutcome,
    TapStatus,
)

from .conftest import ALIPAYPLUS_URL

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

TOKEN_REFERENCE = "DAPLMC0000000000000000000001"
TOKEN_PAN, PSN = "5413000000000018", "01"
NOW = datetime(2025, 3, 15, 4, 0, tzinfo=UTC)  # 11:00 at the terminal (UTC+7)
CVM_LIMIT = 50_000_00  # IDR 50,000.00
IDR = "IDR"


def idr(value: int) -> Amount:
    return Amount(currency=IDR, value=value)


@dataclass
class RecordingIssuer:
    """The issuer side behind Mastercard: records what it was handed, answers as told."""

    approve: bool = True
    requests: list[VerifiedAuthorization] = field(default_factory=list)

    async def authorize(self, request: VerifiedAuthorization) -> AuthorizationDecision:
        self.requests.append(request)
        if self.approve:
            return AuthorizationDecision.approve(payment_request_id="pay-request-1")
        return AuthorizationDecision.decline(DeclineReason.ISSUER_DECLINED, "USER_BALANCE_NOT_ENOUGH")


@dataclass
class CapturingNetwork:
    """A network that only records (for tampering with the authorization afterwards)."""

    authorizations: list[Authorization] = field(default_factory=list)

    async def authorize(self, authorization: Authorization) -> AuthorizationDecision:
        self.authorizations.append(authorization)
        return AuthorizationDecision.approve()


@pytest.fixture
def issuer() -> RecordingIssuer:
    return RecordingIssuer()


@pytest.fixture
def mastercard(issuer: RecordingIssuer) -> SandboxMastercard:
    mc = SandboxMastercard(key_size=1024, issuer=issuer)
    mc.register_token(TOKEN_REFERENCE, TOKEN_PAN, PSN)
    mc.set_state(TOKEN_REFERENCE, TokenState.ACTIVE)
    return mc


def make_card(mastercard: SandboxMastercard, *atcs: int, **profile: str) -> ContactlessCard:
    records = [
        {"atc": atc, "singleUseKey": mastercard.single_use_key(TOKEN_REFERENCE, atc).hex()} for atc in atcs or (1, 2)
    ]
    card_profile = {"tokenPan": TOKEN_PAN, "panSequenceNumber": PSN, "expiryDate": "2912", **profile}
    return ContactlessCard(card_profile, ListCredentials(records, clock=lambda: NOW), clock=lambda: NOW)


def terminal(network: Any, **config: Any) -> PosTerminal:
    return PosTerminal(PosConfig(cvm_required_limit=CVM_LIMIT, **config), network, clock=lambda: NOW)


def instructions(outcome: TapOutcome) -> list[int]:
    return [exchange.command[1] for exchange in outcome.exchanges]


# --- the exchange and the authorization ---------------------------------------------------------


async def test_a_tap_is_approved_once_mastercard_verifies_the_arqc(
    mastercard: SandboxMastercard, issuer: RecordingIssuer
) -> None:
    card = make_card(mastercard, 7, 8)
    card.set_custom_data(b"ORDER-42")
    outcome = await terminal(mastercard).tap(card, idr(12_500_00))

    assert outcome.status is TapStatus.APPROVED, outcome.reason
    assert instructions(outcome) == [0xA4, 0xA4, 0xA8, 0xB2, 0xB2, 0xAE]  # PPSE, AID, GPO, 2 records, GEN AC
    assert outcome.exchanges[5].command[2] == 0x80  # an ARQC was requested
    authorization = outcome.authorization
    assert authorization is not None
    assert (authorization.token_pan, authorization.pan_sequence_number, authorization.expiry_date) == (
        TOKEN_PAN,
        PSN,
        "291231",
    )
    assert authorization.amount == idr(12_500_00)
    assert (authorization.atc, authorization.cryptogram_information_data) == (7, "80")
    assert (authorization.country_code, authorization.transaction_date) == ("0360", date(2025, 3, 15))
    assert authorization.application_interchange_profile == "1A80"
    assert authorization.cvm_results == "1F0302"
    assert authorization.custom_data == b"ORDER-42"
    assert authorization.card_verification_results[0] == 0xA0  # ARQC, no CDCVM needed
    # Mastercard handed the verified authorization, with the token behind the PAN, to the issuer
    assert [(r.token_reference_id, r.authorization) for r in issuer.requests] == [(TOKEN_REFERENCE, authorization)]
    assert outcome.decision == AuthorizationDecision(
        approved=True, message="Approved", token_reference_id=TOKEN_REFERENCE, payment_request_id="pay-request-1"
    )
    assert [record.decision.approved for record in mastercard.authorizations] == [True]


async def test_the_arqc_is_what_pyemv_computes_from_the_issuer_key(mastercard: SandboxMastercard) -> None:
    """The same check Mastercard makes, done here with pyemv alone, so an approval is not circular."""
    network = CapturingNetwork()
    outcome = await terminal(network).tap(make_card(mastercard), idr(3_000_00))
    authorization = outcome.authorization
    assert authorization is not None
    gen_ac = outcome.exchanges[-1].command[5:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        icc_mk = kd.derive_icc_mk_a(mastercard.imk_ac, TOKEN_PAN, PSN)
        session_key = kd.derive_common_sk(icc_mk, authorization.atc.to_bytes(2, "big") + bytes(6))
        atc = authorization.atc.to_bytes(2, "big")
        arqc = ac.generate_ac(
            session_key, gen_ac[:29] + bytes.fromhex("1A80") + atc + authorization.card_verification_results
        )
    assert arqc.hex().upper() == authorization.cryptogram
    assert gen_ac[:6] == bytes.fromhex("000000300000")  # 9F02 in BCD minor units


async def test_every_tap_sends_a_fresh_unpredictable_number(mastercard: SandboxMastercard) -> None:
    network = CapturingNetwork()
    pos = PosTerminal(PosConfig(), network, clock=lambda: NOW)
    card = make_card(mastercard, 1, 2, 3)
    for _ in range(3):
        assert (await pos.tap(card, idr(1_000_00))).status is TapStatus.APPROVED
    assert len({authorization.unpredictable_number for authorization in network.authorizations}) == 3
    assert [authorization.atc for authorization in network.authorizations] == [1, 2, 3]


async def test_a_replayed_atc_is_declined(mastercard: SandboxMastercard, issuer: RecordingIssuer) -> None:
    outcome = await terminal(mastercard).tap(make_card(mastercard), idr(2_000_00))
    assert outcome.approved and outcome.authorization is not None

    replay = await mastercard.authorize(outcome.authorization)
    assert (replay.approved, replay.reason) == (False, DeclineReason.REPLAYED_ATC)
    assert len(issuer.requests) == 1  # the replay never reached the issuer


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param({"amount": Amount(currency=IDR, value=2_000_01)}, id="amount"),
        pytest.param({"amount": Amount(currency="SGD", value=2_000_00)}, id="currency"),
        pytest.param({"cryptogram": "0000000000000000"}, id="arqc"),
        pytest.param({"unpredictable_number": "00000000"}, id="unpredictable-number"),
        pytest.param({"transaction_date": date(2025, 3, 16)}, id="date"),
        pytest.param({"pan_sequence_number": "02"}, id="psn"),
    ],
)
async def test_a_tampered_authorization_is_declined(
    mastercard: SandboxMastercard, issuer: RecordingIssuer, tamper: dict[str, Any]
) -> None:
    network = CapturingNetwork()
    await terminal(network).tap(make_card(mastercard), idr(2_000_00))
    original = network.authorizations[0]

    tampered = await mastercard.authorize(original.model_copy(update=tamper))
    assert (tampered.approved, tampered.reason) == (False, DeclineReason.CRYPTOGRAM_INVALID)
    assert issuer.requests == []
    assert (await mastercard.authorize(original)).approved  # the untouched one still verifies


async def test_an_aac_sent_for_authorization_is_declined(mastercard: SandboxMastercard) -> None:
    network = CapturingNetwork()
    await terminal(network).tap(make_card(mastercard), idr(2_000_00))
    aac = network.authorizations[0].model_copy(update={"cryptogram_information_data": "00"})
    assert (await mastercard.authorize(aac)).reason is DeclineReason.NOT_AN_ARQC


@pytest.mark.parametrize("state", [TokenState.SUSPENDED, TokenState.DELETED, TokenState.PROVISIONED])
async def test_a_token_that_is_not_active_is_declined(
    mastercard: SandboxMastercard, issuer: RecordingIssuer, state: TokenState
) -> None:
    mastercard.set_state(TOKEN_REFERENCE, state)
    outcome = await terminal(mastercard).tap(make_card(mastercard), idr(2_000_00))
    assert outcome.status is TapStatus.DECLINED
    assert outcome.decision is not None and outcome.decision.reason is DeclineReason.TOKEN_NOT_ACTIVE
    assert outcome.decision.token_reference_id == TOKEN_REFERENCE
    assert issuer.requests == []


async def test_an_unknown_token_is_declined(mastercard: SandboxMastercard) -> None:
    card = make_card(mastercard, tokenPan="5413000000000026")
    outcome = await terminal(mastercard).tap(card, idr(2_000_00))
    assert outcome.decision is not None and outcome.decision.reason is DeclineReason.UNKNOWN_TOKEN


async def test_the_issuers_decline_and_failure_decline_the_tap(
    mastercard: SandboxMastercard, issuer: RecordingIssuer
) -> None:
    issuer.approve = False
    declined = await terminal(mastercard).tap(make_card(mastercard, 1), idr(2_000_00))
    assert (declined.status, declined.reason) == (TapStatus.DECLINED, "USER_BALANCE_NOT_ENOUGH")

    class BrokenIssuer:
        async def authorize(self, request: VerifiedAuthorization) -> AuthorizationDecision:
            raise RuntimeError("down")

    mastercard.issuer = BrokenIssuer()
    broken = await terminal(mastercard).tap(make_card(mastercard, 2), idr(2_000_00))
    assert broken.decision is not None and broken.decision.reason is DeclineReason.ISSUER_UNAVAILABLE

    mastercard.issuer = None
    alone = await terminal(mastercard).tap(make_card(mastercard, 3), idr(2_000_00))
    assert alone.decision is not None and alone.decision.reason is DeclineReason.ISSUER_UNAVAILABLE


async def test_a_network_that_does_not_answer_declines(mastercard: SandboxMastercard) -> None:
    class Unreachable:
        async def authorize(self, authorization: Authorization) -> AuthorizationDecision:
            raise httpx.ConnectError("no route")

    outcome = await terminal(Unreachable()).tap(make_card(mastercard), idr(2_000_00))
    assert (outcome.status, outcome.reason) == (TapStatus.DECLINED, "No answer from the network")


# --- CVM limit, limits, terminal declines -------------------------------------------------------


async def test_above_the_cvm_limit_the_phone_must_verify_and_the_second_tap_is_approved(
    mastercard: SandboxMastercard, issuer: RecordingIssuer
) -> None:
    card = make_card(mastercard)
    pos = terminal(mastercard)

    first = await pos.tap(card, idr(CVM_LIMIT + 1))
    assert first.status is TapStatus.SEE_PHONE
    assert first.authorization is None and mastercard.authorizations == []
    gpo_data = first.exchanges[2].command[7:15]  # 9F1D: CVM limit exceeded (byte 2 b8)
    assert gpo_data[1] & 0x80

    card.verify_consumer()
    second = await pos.tap(card, idr(CVM_LIMIT + 1))
    assert second.status is TapStatus.APPROVED, second.reason
    assert second.authorization is not None
    assert second.authorization.atc == 1  # the See Phone tap burnt no credential
    assert second.authorization.cvm_results == "010002"
    assert second.authorization.card_verification_results[0] & 0x05 == 0x05  # CDCVM verified
    assert len(issuer.requests) == 1


async def test_at_the_cvm_limit_no_verification_is_needed(mastercard: SandboxMastercard) -> None:
    outcome = await terminal(mastercard).tap(make_card(mastercard), idr(CVM_LIMIT))
    assert outcome.status is TapStatus.APPROVED


async def test_above_the_cvm_limit_a_card_without_cdcvm_is_declined(mastercard: SandboxMastercard) -> None:
    card = make_card(mastercard, aip="1880")  # no on-device CVM
    outcome = await terminal(mastercard).tap(card, idr(CVM_LIMIT + 1))
    assert outcome.status is TapStatus.DECLINED
    assert outcome.reason == "Above the CVM limit and the card cannot verify the user"
    assert outcome.exchanges[-1].command[2] == 0x00  # the terminal asked for an AAC
    assert mastercard.authorizations == []


async def test_an_expired_card_is_declined_by_the_terminal(mastercard: SandboxMastercard) -> None:
    outcome = await terminal(mastercard).tap(make_card(mastercard, expiryDate="2502"), idr(1_000_00))
    assert (outcome.status, outcome.reason) == (TapStatus.DECLINED, "The card has expired")
    assert outcome.exchanges[-1].command[2] == 0x00
    assert mastercard.authorizations == []


async def test_above_the_contactless_limit_the_card_is_not_even_read(mastercard: SandboxMastercard) -> None:
    outcome = await terminal(mastercard, transaction_limit=1_000_000_00).tap(make_card(mastercard), idr(1_000_000_01))
    assert outcome.status is TapStatus.DECLINED and outcome.exchanges == ()


async def test_the_terminal_refuses_an_amount_in_another_currency(mastercard: SandboxMastercard) -> None:
    with pytest.raises(ValueError, match="charges IDR"):
        await terminal(mastercard).tap(make_card(mastercard), Amount(currency="SGD", value=100))
    with pytest.raises(ValueError, match="invalid terminal configuration: country_code"):
        PosConfig(country_code="360")


# --- malformed card answers -----------------------------------------------------------------


@dataclass
class Mangled:
    """The real card, with one instruction's answer rewritten."""

    card: ContactlessCard
    instruction: int
    rewrite: Callable[[bytes], bytes]

    def process_apdu(self, command: bytes) -> bytes:
        response = self.card.process_apdu(command)
        return self.rewrite(response) if command[1] == self.instruction else response


def _drop(tag: str) -> Callable[[bytes], bytes]:
    """Remove one primitive object from a 77/70 template."""

    def rewrite(response: bytes) -> bytes:
        template = tlv.decode(response[:-2])[0]
        kept = [tlv.encode(child.tag, child.value) for child in template.children if child.tag != tag]
        return tlv.encode(template.tag, kept) + response[-2:]

    return rewrite


def _raise(response: bytes) -> bytes:
    raise ConnectionError("field lost")


VISA_ONLY_PPSE = (
    tlv.encode(
        "6F",
        [
            tlv.encode("84", b"2PAY.SYS.DDF01"),
            tlv.encode(
                "A5", [tlv.encode("BF0C", [tlv.encode("61", [tlv.encode("4F", bytes.fromhex("A0000000031010"))])])]
            ),
        ],
    )
    + b"\x90\x00"
)


@pytest.mark.parametrize(
    ("instruction", "rewrite", "reason"),
    [
        pytest.param(0xA4, lambda r: bytes.fromhex("6A82"), "SELECT PPSE answered 6A82", id="ppse-status-word"),
        pytest.param(0xA4, lambda r: VISA_ONLY_PPSE, "no application this terminal accepts", id="no-mastercard-aid"),
        pytest.param(0xA4, lambda r: r[:10] + r[-2:], "malformed BER-TLV", id="truncated-tlv"),
        pytest.param(0xA4, lambda r: b"\x90", "shorter than a status word", id="one-byte"),
        pytest.param(0xA4, _raise, "the card did not answer", id="card-raises"),
        pytest.param(0xA8, _drop("94"), "mandatory 94 is missing", id="gpo-without-afl"),
        pytest.param(0xA8, lambda r: bytes.fromhex("770A820219809404000101009000"), "AFL entry", id="bad-afl"),
        pytest.param(0xB2, _drop("5A"), "mandatory 5A is missing", id="record-without-pan"),
        pytest.param(0xB2, _drop("8C"), "mandatory 8C is missing", id="record-without-cdol1"),
        pytest.param(0xAE, _drop("9F26"), "mandatory 9F26 is missing", id="gen-ac-without-arqc"),
        pytest.param(0xAE, _drop("9F10"), "mandatory 9F10 is missing", id="gen-ac-without-iad"),
        pytest.param(
            0xAE, lambda r: r.replace(bytes.fromhex("9F270180"), bytes.fromhex("9F270140")), "type 40", id="tc"
        ),
    ],
)
async def test_malformed_card_answers_give_card_error(
    mastercard: SandboxMastercard, instruction: int, rewrite: Callable[[bytes], bytes], reason: str
) -> None:
    outcome = await terminal(mastercard).tap(Mangled(make_card(mastercard), instruction, rewrite), idr(1_000_00))
    assert outcome.status is TapStatus.CARD_ERROR
    assert outcome.reason is not None and reason in outcome.reason
    assert outcome.authorization is None and mastercard.authorizations == []


async def test_a_card_refusing_at_generate_ac_is_a_decline_not_an_error(mastercard: SandboxMastercard) -> None:
    card = Mangled(make_card(mastercard), 0xAE, lambda r: bytes.fromhex("6985"))
    outcome = await terminal(mastercard).tap(card, idr(1_000_00))
    assert (outcome.status, outcome.reason) == (
        TapStatus.DECLINED,
        "GENERATE AC answered 6985: the card refused the transaction",
    )
    assert outcome.authorization is None and mastercard.authorizations == []


async def test_a_card_without_credentials_declines(mastercard: SandboxMastercard) -> None:
    card = ContactlessCard(
        {"tokenPan": TOKEN_PAN, "panSequenceNumber": PSN, "expiryDate": "2912"}, ListCredentials([]), clock=lambda: NOW
    )
    outcome = await terminal(mastercard).tap(card, idr(1_000_00))
    assert (outcome.status, outcome.reason) == (
        TapStatus.DECLINED,
        "GENERATE AC answered 6985: the card refused the transaction",
    )
    assert mastercard.authorizations == []


async def test_an_offline_only_terminal_is_refused_by_the_card(mastercard: SandboxMastercard) -> None:
    outcome = await terminal(mastercard, terminal_type="23").tap(make_card(mastercard), idr(1_000_00))
    assert (outcome.status, outcome.reason) == (
        TapStatus.DECLINED,
        "GET PROCESSING OPTIONS answered 6985: the card refused the transaction",
    )


async def test_the_best_priority_supported_application_is_chosen(mastercard: SandboxMastercard) -> None:
    def two_applications(response: bytes) -> bytes:
        visa = tlv.encode("61", [tlv.encode("4F", bytes.fromhex("A0000000031010")), tlv.encode("87", b"\x01")])
        mastercard_entry = tlv.encode(
            "61", [tlv.encode("4F", bytes.fromhex("A0000000041010")), tlv.encode("87", b"\x02")]
        )
        directory = tlv.encode("A5", [tlv.encode("BF0C", [visa, mastercard_entry])])
        return tlv.encode("6F", [tlv.encode("84", b"2PAY.SYS.DDF01"), directory]) + b"\x90\x00"

    card = make_card(mastercard)

    class PpseOnly:
        def process_apdu(self, command: bytes) -> bytes:
            response = card.process_apdu(command)
            return two_applications(response) if command[5:19] == b"2PAY.SYS.DDF01" else response

    outcome = await terminal(mastercard).tap(PpseOnly(), idr(1_000_00))
    assert outcome.status is TapStatus.APPROVED
    assert outcome.exchanges[1].command[5:12] == bytes.fromhex("A0000000041010")


# --- over HTTP ------------------------------------------------------------------------------


async def test_the_terminal_reaches_mastercard_over_the_local_route(
    peer: SandboxAlipayPlus, mastercard: SandboxMastercard
) -> None:
    transport = httpx.ASGITransport(app=create_app(peer, mastercard=mastercard))
    network = HttpCardNetwork(ALIPAYPLUS_URL, transport=transport)
    try:
        outcome = await terminal(network).tap(make_card(mastercard), idr(4_200_00))
    finally:
        await network.aclose()
    assert outcome.status is TapStatus.APPROVED, outcome.reason
    assert outcome.decision is not None and outcome.decision.token_reference_id == TOKEN_REFERENCE

    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=transport) as client:
        listed = (await client.get("/sandbox/mastercard/authorizations")).json()
        assert [(item["authorization"]["atc"], item["decision"]["approved"]) for item in listed] == [(1, True)]
        assert listed[0]["authorization"]["amount"] == {"currency": IDR, "value": "420000"}
        replay = await client.post("/sandbox/mastercard/authorizations", json=listed[0]["authorization"])
        assert replay.json()["reason"] == DeclineReason.REPLAYED_ATC

    remote = httpx.ASGITransport(app=create_app(peer, mastercard=mastercard), client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=remote) as client:
        assert (
            await client.post("/sandbox/mastercard/authorizations", json=listed[0]["authorization"])
        ).status_code == 403
