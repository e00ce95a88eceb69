"""Alipay+'s conversion of card events into the MPP's APIs: every default mapping, the cancel
window at 00:30 UTC+8 on T+1, the configurable rules, and the chain over the sandbox's routes.

A fake MPP driver records each call and answers as scripted (S unless told otherwise).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from alipayplus import (
    Amount,
    CancelPaymentRequest,
    CancelPaymentResponse,
    Message,
    PayRequest,
    PayResponse,
    RefundRequest,
    RefundResponse,
    Result,
    ResultCode,
    TransportError,
)
from alipayplus.nfc import AdjustRefundRequest, AdjustRefundResponse, AdjustRefundScenario
from hce_device.card import ContactlessCard, ListCredentials
from sandbox.alipayplus.app import create_app
from sandbox.alipayplus.card_events import (
    AuthorizationStatus,
    CardAction,
    CardEvent,
    CardEventConverter,
    CardEventKind,
    CardEventRefused,
    ConversionRules,
    UnknownAuthorization,
)
from sandbox.alipayplus.driver import NFC_ACQUIRER_ID, PSP_ID
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.nfc import SandboxMastercard, TokenState, VerifiedAuthorization
from sandbox.pos import Authorization, DeclineReason, HttpCardNetwork, PosConfig, PosTerminal, TapStatus

from .conftest import ALIPAYPLUS_URL

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

UTC8 = timezone(timedelta(hours=8))
TOKEN = "DAPLMC0000000000000000000001"
CUSTOMER = "2160220037535020"
AUTHORIZED_AT = datetime(2025, 3, 15, 14, 0, tzinfo=UTC8)
DEADLINE = datetime(2025, 3, 16, 0, 30, tzinfo=UTC8)
IDR = "IDR"


def idr(value: int) -> Amount:
    return Amount(currency=IDR, value=value)


class Clock:
    def __init__(self, now: datetime = AUTHORIZED_AT) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FakeMpp:
    """Records every call; answers S (with ids) unless ``script`` queued another result or an error."""

    calls: list[tuple[str, Message]] = field(default_factory=list)
    scripted: dict[str, deque[Result | Exception]] = field(default_factory=dict)

    def script(self, api: str, *answers: Result | Exception) -> None:
        self.scripted.setdefault(api, deque()).extend(answers)

    def _answer(self, api: str, request: Message) -> Result:
        self.calls.append((api, request))
        queue = self.scripted.get(api)
        answer = queue.popleft() if queue else Result.success()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def apis(self) -> list[str]:
        return [api for api, _ in self.calls]

    async def pay(self, request: PayRequest) -> PayResponse:
        result = self._answer("pay", request)
        payment_id = f"mpp-{request.payment_request_id}" if result.is_success else None
        return PayResponse(result=result, payment_request_id=request.payment_request_id, payment_id=payment_id)

    async def refund(self, request: RefundRequest) -> RefundResponse:
        result = self._answer("refund", request)
        return RefundResponse(result=result, refund_id=f"r-{request.refund_request_id}" if result.is_success else None)

    async def adjust_refund(self, request: AdjustRefundRequest) -> AdjustRefundResponse:
        return AdjustRefundResponse(result=self._answer("adjustRefund", request))

    async def cancel(self, payment_request_id: str, acquirer_id: str, psp_id: str) -> CancelPaymentResponse:
        request = CancelPaymentRequest(acquirer_id=acquirer_id, psp_id=psp_id, payment_request_id=payment_request_id)
        return CancelPaymentResponse(result=self._answer("cancelPayment", request))


def authorization(reference: str = "000000000001", value: int = 100_000_00, atc: int = 7) -> Authorization:
    """What the POS would send (the converter trusts Mastercard's verification, so any ARQC does)."""
    return Authorization(
        retrieval_reference=reference,
        terminal_id="SBXPOS01",
        merchant_name="Sandbox Bakery",
        merchant_category_code="5462",
        token_pan="5413000000000018",
        pan_sequence_number="01",
        expiry_date="291231",
        amount=idr(value),
        country_code="0360",
        transaction_date=date(2025, 3, 15),
        unpredictable_number="CAFEBABE",
        terminal_verification_results="0000008000",
        cvm_results="1F0302",
        application_interchange_profile="1A80",
        atc=atc,
        cryptogram="0123456789ABCDEF",
        cryptogram_information_data="80",
        issuer_application_data="0314A00100220000000000000000000000FF" + b"BAKERY-77".hex(),
    )


@pytest.fixture
def mpp() -> FakeMpp:
    return FakeMpp()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def paid_in_process() -> list[PayRequest]:
    return []


@pytest.fixture
def converter(mpp: FakeMpp, clock: Clock, paid_in_process: list[PayRequest]) -> CardEventConverter:
    async def inquire(payment: PayRequest) -> None:
        paid_in_process.append(payment)

    customers = {TOKEN: CUSTOMER}
    return CardEventConverter(mpp, customers.get, clock=clock, on_pay_in_process=inquire)


async def approved(converter: CardEventConverter, reference: str = "000000000001", value: int = 100_000_00) -> str:
    decision = await converter.authorize(VerifiedAuthorization(authorization(reference, value), TOKEN))
    assert decision.approved, decision
    return reference


def request(mpp: FakeMpp, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = mpp.calls[index][1].model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


# --- authorization → pay ------------------------------------------------------------------


async def test_an_authorization_becomes_an_nfc_pay_and_s_approves(converter: CardEventConverter, mpp: FakeMpp) -> None:
    decision = await converter.authorize(VerifiedAuthorization(authorization(), TOKEN))

    assert mpp.apis() == ["pay"]
    pay = request(mpp)
    assert pay["paymentMethod"] == {"paymentMethodType": "NFC", "customerId": CUSTOMER}
    assert pay["nfcPaymentInfo"] == {"tokenReferenceId": TOKEN, "customData": b"BAKERY-77".hex().upper(), "atc": "7"}
    assert pay["paymentAmount"] == pay["payToAmount"] == {"currency": IDR, "value": "10000000"}
    assert (pay["acquirerId"], pay["pspId"]) == (NFC_ACQUIRER_ID, PSP_ID)
    assert pay["order"]["merchant"]["merchantName"] == "Sandbox Bakery"
    assert len(pay["paymentRequestId"]) == 31 and pay["paymentRequestId"].startswith("20250315140000")

    assert decision.approved and decision.payment_request_id == pay["paymentRequestId"]
    state = converter.authorizations["000000000001"]
    assert (state.status, state.customer_id, state.payment_id) == (
        AuthorizationStatus.APPROVED,
        CUSTOMER,
        f"mpp-{pay['paymentRequestId']}",
    )
    [result] = converter.results
    assert result.kind is CardEventKind.AUTHORIZATION
    assert [(step.event, step.action) for step in result.steps] == [(CardEvent.AUTHORIZATION, CardAction.PAY)]
    call = result.steps[0].call
    assert call is not None and call.result is not None and call.result.is_success
    assert call.response is not None and call.response["paymentId"] == state.payment_id


async def test_pay_f_declines_with_the_mpps_reason(converter: CardEventConverter, mpp: FakeMpp) -> None:
    mpp.script("pay", Result.of(ResultCode.USER_BALANCE_NOT_ENOUGH))
    decision = await converter.authorize(VerifiedAuthorization(authorization(), TOKEN))
    assert (decision.approved, decision.reason) == (False, DeclineReason.ISSUER_DECLINED)
    assert decision.message.startswith("USER_BALANCE_NOT_ENOUGH")
    assert converter.authorizations["000000000001"].status is AuthorizationStatus.DECLINED
    with pytest.raises(CardEventRefused):
        await converter.reverse("000000000001")


@pytest.mark.parametrize("answer", [Result.of(ResultCode.PAYMENT_IN_PROCESS), TransportError("timed out")])
async def test_pay_resent_once_after_u_or_no_answer_approves_on_its_s(
    converter: CardEventConverter, mpp: FakeMpp, paid_in_process: list[PayRequest], answer: Result | Exception
) -> None:
    mpp.script("pay", answer)  # then S: the MPP finished meanwhile
    decision = await converter.authorize(VerifiedAuthorization(authorization(), TOKEN))
    assert decision.approved and paid_in_process == []
    first, again = (request for api, request in mpp.calls)
    assert mpp.apis() == ["pay", "pay"] and first == again  # the same body, so the same payment


@pytest.mark.parametrize("answer", [Result.of(ResultCode.PAYMENT_IN_PROCESS), TransportError("timed out")])
async def test_pay_u_or_no_answer_declines_and_leaves_the_authorization_pending(
    converter: CardEventConverter, mpp: FakeMpp, paid_in_process: list[PayRequest], answer: Result | Exception
) -> None:
    mpp.script("pay", answer, answer)
    decision = await converter.authorize(VerifiedAuthorization(authorization(), TOKEN))
    assert (decision.approved, decision.reason) == (False, DeclineReason.ISSUER_UNAVAILABLE)
    state = converter.authorizations["000000000001"]
    assert state.status is AuthorizationStatus.PENDING
    assert [payment.payment_request_id for payment in paid_in_process] == [decision.payment_request_id]
    call = converter.results[0].steps[0].call
    assert call is not None and (call.error is not None or call.result is not None)

    with pytest.raises(CardEventRefused, match="not known"):
        await converter.clear("000000000001", idr(100_000_00))
    result = await converter.reverse("000000000001")  # a pending payment can be cancelled
    assert mpp.apis()[-1] == "cancelPayment" and result.steps[0].succeeded
    assert state.status is AuthorizationStatus.CANCELLED


async def test_a_pending_payment_cannot_be_refunded_after_the_window(
    converter: CardEventConverter, mpp: FakeMpp, clock: Clock
) -> None:
    mpp.script("pay", Result.of(ResultCode.UNKNOWN_EXCEPTION), Result.of(ResultCode.UNKNOWN_EXCEPTION))
    await converter.authorize(VerifiedAuthorization(authorization(), TOKEN))
    clock.now = DEADLINE + timedelta(hours=1)
    with pytest.raises(CardEventRefused, match="no final result"):
        await converter.reverse("000000000001")
    assert mpp.apis() == ["pay", "pay"]


async def test_a_token_without_a_wallet_user_is_declined_without_a_call(
    converter: CardEventConverter, mpp: FakeMpp
) -> None:
    decision = await converter.authorize(VerifiedAuthorization(authorization(), "DAPLMC-UNKNOWN"))
    assert (decision.approved, decision.reason) == (False, DeclineReason.ISSUER_DECLINED)
    assert mpp.calls == []


async def test_the_same_authorization_is_paid_once(converter: CardEventConverter, mpp: FakeMpp) -> None:
    await approved(converter)
    again = await converter.authorize(VerifiedAuthorization(authorization(), TOKEN))
    assert not again.approved and mpp.apis() == ["pay"]


# --- reversal ----------------------------------------------------------------------------------


async def test_a_same_day_full_reversal_is_a_cancel(converter: CardEventConverter, mpp: FakeMpp) -> None:
    reference = await approved(converter)
    result = await converter.reverse(reference)

    assert mpp.apis() == ["pay", "cancelPayment"]
    assert request(mpp) == {
        "acquirerId": NFC_ACQUIRER_ID,
        "pspId": PSP_ID,
        "paymentRequestId": request(mpp, 0)["paymentRequestId"],
    }
    assert [(s.event, s.action) for s in result.steps] == [(CardEvent.REVERSAL_IN_WINDOW, CardAction.CANCEL)]
    state = converter.authorizations[reference]
    assert (state.status, state.ended_by) == (AuthorizationStatus.CANCELLED, CardEventKind.REVERSAL)


@pytest.mark.parametrize(
    ("authorized_at", "reversed_at", "expected"),
    [
        pytest.param(AUTHORIZED_AT, DEADLINE - timedelta(microseconds=1), "cancelPayment", id="just-before-00:30"),
        pytest.param(AUTHORIZED_AT, DEADLINE, "refund", id="at-00:30"),
        pytest.param(AUTHORIZED_AT, DEADLINE + timedelta(minutes=1), "refund", id="after-00:30"),
        # T is the UTC+8 day: 00:10 UTC+8 on the 15th is still the 14th in UTC, its window ends on the 16th
        pytest.param(
            datetime(2025, 3, 14, 16, 10, tzinfo=UTC),
            datetime(2025, 3, 15, 16, 20, tzinfo=UTC),
            "cancelPayment",
            id="t-is-the-utc+8-day",
        ),
    ],
)
async def test_the_cancel_window_ends_at_00_30_utc8_on_t_plus_1(
    converter: CardEventConverter,
    mpp: FakeMpp,
    clock: Clock,
    authorized_at: datetime,
    reversed_at: datetime,
    expected: str,
) -> None:
    clock.now = authorized_at
    reference = await approved(converter)
    clock.now = reversed_at
    await converter.reverse(reference)
    assert mpp.apis() == ["pay", expected]
    if expected == "refund":
        refund = request(mpp)
        assert refund["refundAmount"] == {"currency": IDR, "value": "10000000"}
        assert (refund["paymentRequestId"], refund["paymentId"]) == (
            request(mpp, 0)["paymentRequestId"],
            converter.authorizations[reference].payment_id,
        )
        assert converter.authorizations[reference].remaining == 0


async def test_a_partial_reversal_refunds_the_part_and_a_later_full_one_the_rest(
    converter: CardEventConverter, mpp: FakeMpp, clock: Clock
) -> None:
    reference = await approved(converter)
    partial = await converter.reverse(reference, idr(30_000_00))
    assert [(s.event, s.action) for s in partial.steps] == [(CardEvent.PARTIAL_REVERSAL, CardAction.REFUND)]
    assert request(mpp)["refundAmount"]["value"] == "3000000"

    clock.now = DEADLINE + timedelta(days=2)
    rest = await converter.reverse(reference)
    assert [(s.event, s.action) for s in rest.steps] == [(CardEvent.REVERSAL_AFTER_WINDOW, CardAction.REFUND)]
    assert request(mpp)["refundAmount"]["value"] == "7000000"
    assert request(mpp)["refundRequestId"] != request(mpp, 1)["refundRequestId"]
    assert converter.authorizations[reference].refunded == 100_000_00
    with pytest.raises(CardEventRefused, match="already ended"):
        await converter.reverse(reference)


async def test_a_reversal_above_the_held_amount_or_in_another_currency_is_refused(
    converter: CardEventConverter, mpp: FakeMpp
) -> None:
    reference = await approved(converter)
    with pytest.raises(CardEventRefused, match="is held"):
        await converter.reverse(reference, idr(100_000_01))
    with pytest.raises(CardEventRefused, match="not SGD"):
        await converter.reverse(reference, Amount(currency="SGD", value=100))
    with pytest.raises(UnknownAuthorization):
        await converter.reverse("999999999999")
    assert mpp.apis() == ["pay"]


# --- clearing -----------------------------------------------------------------------------------


async def test_clearing_lower_refunds_the_difference(converter: CardEventConverter, mpp: FakeMpp) -> None:
    reference = await approved(converter)
    result = await converter.clear(reference, idr(82_500_00))
    assert [(s.event, s.action) for s in result.steps] == [(CardEvent.CLEARING_LOWER, CardAction.REFUND)]
    assert request(mpp)["refundAmount"] == {"currency": IDR, "value": "1750000"}
    state = converter.authorizations[reference]
    assert (state.cleared_amount, state.ended_by, state.remaining) == (
        idr(82_500_00),
        CardEventKind.CLEARING,
        82_500_00,
    )


async def test_clearing_equal_sends_nothing(converter: CardEventConverter, mpp: FakeMpp) -> None:
    reference = await approved(converter)
    result = await converter.clear(reference, idr(100_000_00))
    assert [(s.event, s.action, s.call) for s in result.steps] == [(CardEvent.CLEARING_EQUAL, CardAction.IGNORE, None)]
    assert mpp.apis() == ["pay"]


async def test_clearing_compares_with_what_is_still_held(converter: CardEventConverter, mpp: FakeMpp) -> None:
    reference = await approved(converter)
    await converter.reverse(reference, idr(10_000_00))
    result = await converter.clear(reference, idr(90_000_00))
    assert result.steps[0].event is CardEvent.CLEARING_EQUAL
    assert mpp.apis() == ["pay", "refund"]


async def test_clearing_higher_is_ignored_and_logged_by_default(
    converter: CardEventConverter, mpp: FakeMpp, caplog: pytest.LogCaptureFixture
) -> None:
    reference = await approved(converter)
    with caplog.at_level("INFO", logger="sandbox.alipayplus.card_events"):
        result = await converter.clear(reference, idr(110_000_00))
    assert [(s.event, s.action, s.amount) for s in result.steps] == [
        (CardEvent.CLEARING_HIGHER, CardAction.IGNORE, idr(10_000_00))
    ]
    assert mpp.apis() == ["pay"]
    assert "CLEARING_HIGHER" in caplog.text


async def test_clearing_higher_can_debit_the_difference(converter: CardEventConverter, mpp: FakeMpp) -> None:
    converter.rules = ConversionRules(clearing_higher=CardAction.PAY)
    reference = await approved(converter)
    await converter.clear(reference, idr(110_000_00))
    assert mpp.apis() == ["pay", "pay"]
    second = request(mpp)
    assert second["paymentAmount"] == {"currency": IDR, "value": "1000000"}
    assert second["paymentMethod"]["customerId"] == CUSTOMER
    assert second["paymentRequestId"] != request(mpp, 0)["paymentRequestId"]
    assert converter.authorizations[reference].extra_payment_request_ids == [second["paymentRequestId"]]


async def test_clearing_a_cancelled_authorization_is_refused(converter: CardEventConverter, mpp: FakeMpp) -> None:
    reference = await approved(converter)
    await converter.reverse(reference)
    with pytest.raises(CardEventRefused, match="CANCELLED"):
        await converter.clear(reference, idr(100_000_00))
    assert mpp.apis() == ["pay", "cancelPayment"]


# --- expiry -------------------------------------------------------------------------------------


async def test_an_expiry_in_the_window_cancels(converter: CardEventConverter, mpp: FakeMpp) -> None:
    reference = await approved(converter)
    result = await converter.expire(reference)
    assert [(s.event, s.action) for s in result.steps] == [(CardEvent.EXPIRY_IN_WINDOW, CardAction.CANCEL)]
    assert mpp.apis() == ["pay", "cancelPayment"]


async def test_an_expiry_after_the_window_refunds_what_is_held(
    converter: CardEventConverter, mpp: FakeMpp, clock: Clock
) -> None:
    reference = await approved(converter)
    await converter.reverse(reference, idr(25_000_00))
    clock.now = AUTHORIZED_AT + timedelta(days=7)
    result = await converter.expire(reference)
    assert [(s.event, s.action) for s in result.steps] == [(CardEvent.EXPIRY_AFTER_WINDOW, CardAction.REFUND)]
    assert request(mpp)["refundAmount"]["value"] == "7500000"
    assert converter.authorizations[reference].remaining == 0
    with pytest.raises(CardEventRefused, match="already ended by EXPIRY"):
        await converter.clear(reference, idr(100_000_00))


# --- merchant refunds ---------------------------------------------------------------------------


async def test_a_merchant_refund_within_the_payment_is_a_refund(converter: CardEventConverter, mpp: FakeMpp) -> None:
    reference = await approved(converter)
    await converter.clear(reference, idr(100_000_00))
    result = await converter.merchant_refund(reference, idr(40_000_00))
    assert [(s.event, s.action) for s in result.steps] == [(CardEvent.MERCHANT_REFUND, CardAction.REFUND)]
    assert request(mpp)["refundAmount"]["value"] == "4000000"
    assert converter.authorizations[reference].remaining == 60_000_00


async def test_a_merchant_refund_above_the_payment_refunds_the_rest_and_adjusts_the_excess(
    converter: CardEventConverter, mpp: FakeMpp
) -> None:
    reference = await approved(converter)
    await converter.merchant_refund(reference, idr(30_000_00))
    result = await converter.merchant_refund(reference, idr(100_000_00))

    assert mpp.apis() == ["pay", "refund", "refund", "adjustRefund"]
    assert [(s.event, s.action, s.amount) for s in result.steps] == [
        (CardEvent.MERCHANT_REFUND, CardAction.REFUND, idr(70_000_00)),
        (CardEvent.MERCHANT_REFUND_EXCESS, CardAction.ADJUST_REFUND, idr(30_000_00)),
    ]
    adjust = request(mpp)
    assert adjust["subScenarioType"] == AdjustRefundScenario.EXCEED_REFUND
    assert adjust["refundAmount"] == {"currency": IDR, "value": "3000000"}
    assert adjust["paymentRequestId"] == request(mpp, 0)["paymentRequestId"]
    assert (adjust["acquirerId"], adjust["pspId"]) == (NFC_ACQUIRER_ID, PSP_ID)

    await converter.merchant_refund(reference, idr(5_000_00))  # nothing left: all of it is excess
    assert mpp.apis()[-1] == "adjustRefund" and request(mpp)["refundAmount"]["value"] == "500000"


async def test_a_merchant_refund_after_a_cancel_is_all_excess(converter: CardEventConverter, mpp: FakeMpp) -> None:
    reference = await approved(converter)
    await converter.reverse(reference)
    result = await converter.merchant_refund(reference, idr(1_000_00))
    assert [s.event for s in result.steps] == [CardEvent.MERCHANT_REFUND_EXCESS]
    assert mpp.apis() == ["pay", "cancelPayment", "adjustRefund"]


async def test_a_refund_with_no_payment_is_an_unlinked_adjust_refund(
    converter: CardEventConverter, mpp: FakeMpp
) -> None:
    result = await converter.unlinked_refund(TOKEN, idr(15_000_00))
    assert [(s.event, s.action) for s in result.steps] == [(CardEvent.UNLINKED_REFUND, CardAction.ADJUST_REFUND)]
    adjust = request(mpp)
    assert adjust["subScenarioType"] == AdjustRefundScenario.UNLINKED_REFUND
    assert adjust["customerId"] == CUSTOMER
    assert adjust["refundAmount"] == {"currency": IDR, "value": "1500000"}
    assert "paymentRequestId" not in adjust
    with pytest.raises(UnknownAuthorization):
        await converter.unlinked_refund("DAPLMC-UNKNOWN", idr(1))


async def test_a_failed_refund_leaves_the_hold_open_so_the_event_can_be_resent(
    converter: CardEventConverter, mpp: FakeMpp
) -> None:
    reference = await approved(converter)
    mpp.script("refund", Result.of(ResultCode.UNKNOWN_EXCEPTION), TransportError("no answer"))
    first = await converter.clear(reference, idr(50_000_00))
    second = await converter.clear(reference, idr(50_000_00))
    assert not first.steps[0].succeeded and not second.steps[0].succeeded
    assert second.steps[0].call is not None and second.steps[0].call.error == "no answer"
    state = converter.authorizations[reference]
    assert (state.refunded, state.ended_by, state.cleared_amount) == (0, None, None)
    third = await converter.clear(reference, idr(50_000_00))
    assert third.steps[0].succeeded and state.refunded == 50_000_00 and state.ended_by is CardEventKind.CLEARING


# --- configurable rules ---------------------------------------------------------------------


async def test_the_rules_change_the_calls(converter: CardEventConverter, mpp: FakeMpp) -> None:
    converter.rules = ConversionRules(
        reversal_in_window=CardAction.REFUND,
        merchant_refund_excess=CardAction.IGNORE,
        unlinked_refund=CardAction.IGNORE,
    )
    first = await approved(converter, "000000000001")
    await converter.reverse(first)  # a refund instead of a cancel
    second = await approved(converter, "000000000002")
    refund = await converter.merchant_refund(second, idr(120_000_00))  # the excess is dropped
    await converter.unlinked_refund(TOKEN, idr(1_000_00))  # nothing sent

    assert mpp.apis() == ["pay", "refund", "pay", "refund"]
    assert [(s.event, s.action, s.call is None) for s in refund.steps] == [
        (CardEvent.MERCHANT_REFUND, CardAction.REFUND, False),
        (CardEvent.MERCHANT_REFUND_EXCESS, CardAction.IGNORE, True),
    ]
    assert converter.authorizations[first].status is AuthorizationStatus.APPROVED


async def test_the_cancel_cutoff_is_a_rule(converter: CardEventConverter, mpp: FakeMpp, clock: Clock) -> None:
    converter.rules = ConversionRules.model_validate({"cancelCutoff": "02:00"})
    reference = await approved(converter)
    clock.now = DEADLINE + timedelta(hours=1)  # 01:30 UTC+8 on T+1
    await converter.expire(reference)
    assert mpp.apis() == ["pay", "cancelPayment"]


@pytest.mark.parametrize(
    "rules",
    [{"clearingEqual": "REFUND"}, {"authorization": "IGNORE"}, {"unlinkedRefund": "CANCEL"}, {"partialReversal": "X"}],
)
def test_rules_an_event_cannot_follow_are_refused(rules: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ConversionRules.model_validate(rules)


# --- the whole chain over the sandbox's routes ------------------------------------------------


async def test_the_pos_mastercard_and_card_event_routes_drive_the_mpp(
    peer: SandboxAlipayPlus, converter: CardEventConverter, mpp: FakeMpp, clock: Clock
) -> None:
    mastercard = SandboxMastercard(key_size=1024, issuer=converter)
    mastercard.register_token(TOKEN, "5413000000000018", "00")
    mastercard.set_state(TOKEN, TokenState.ACTIVE)
    records = [{"atc": atc, "singleUseKey": mastercard.single_use_key(TOKEN, atc).hex()} for atc in (1, 2)]
    card = ContactlessCard(
        {"tokenPan": "5413000000000018", "panSequenceNumber": "00", "expiryDate": "2912"},
        ListCredentials(records),
        clock=clock,
    )
    card.set_custom_data(b"TAP-1")
    transport = httpx.ASGITransport(app=create_app(peer, mastercard=mastercard, card_events=converter))
    network = HttpCardNetwork(ALIPAYPLUS_URL, transport=transport)
    try:
        tap = await PosTerminal(PosConfig(), network, clock=clock).tap(card, idr(75_000_00))
    finally:
        await network.aclose()
    assert tap.status is TapStatus.APPROVED, tap.reason
    assert tap.authorization is not None
    reference = tap.authorization.retrieval_reference
    assert request(mpp)["nfcPaymentInfo"] == {
        "tokenReferenceId": TOKEN,
        "customData": b"TAP-1".hex().upper(),
        "atc": "1",
    }

    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=transport) as client:
        clock.now = DEADLINE + timedelta(days=1)
        cleared = await client.post(
            "/sandbox/card-events/clear",
            json={"authorizationId": reference, "amount": {"currency": IDR, "value": "7000000"}},
        )
        assert cleared.status_code == 200
        assert [(s["event"], s["action"]) for s in cleared.json()["steps"]] == [("CLEARING_LOWER", "REFUND")]
        assert cleared.json()["steps"][0]["call"]["result"]["resultStatus"] == "S"

        refunded = await client.post(
            "/sandbox/card-events/merchant-refund",
            json={"authorizationId": reference, "amount": {"currency": IDR, "value": "8000000"}},
        )
        assert [s["event"] for s in refunded.json()["steps"]] == ["MERCHANT_REFUND", "MERCHANT_REFUND_EXCESS"]
        assert [s["amount"]["value"] for s in refunded.json()["steps"]] == ["7000000", "1000000"]

        unlinked = await client.post(
            "/sandbox/card-events/unlinked-refund",
            json={"tokenReferenceId": TOKEN, "amount": {"currency": IDR, "value": "100"}},
        )
        assert unlinked.json()["steps"][0]["call"]["request"]["subScenarioType"] == "UNLINKED_REFUND"

        again = await client.post("/sandbox/card-events/expire", json={"authorizationId": reference})
        assert again.status_code == 409
        unknown = await client.post("/sandbox/card-events/reverse", json={"authorizationId": "000000000000"})
        assert unknown.status_code == 404

        put = await client.put("/sandbox/card-events/rules", json={"clearingHigher": "PAY"})
        assert put.json()["clearingHigher"] == "PAY" and converter.rules.clearing_higher is CardAction.PAY
        assert (await client.get("/sandbox/card-events/rules")).json()["reversalInWindow"] == "CANCEL"

        listing = (await client.get("/sandbox/card-events")).json()
        assert [a["authorizationId"] for a in listing["authorizations"]] == [reference]
        assert listing["authorizations"][0]["refunded"] == 75_000_00
        assert [e["kind"] for e in listing["events"]] == [
            "AUTHORIZATION",
            "CLEARING",
            "MERCHANT_REFUND",
            "UNLINKED_REFUND",
        ]
    assert mpp.apis() == ["pay", "refund", "refund", "adjustRefund", "adjustRefund"]

    remote = httpx.ASGITransport(app=create_app(peer, card_events=converter), client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=remote) as client:
        assert (await client.get("/sandbox/card-events")).status_code == 403
