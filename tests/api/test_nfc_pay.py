"""Alipay+ → MPP over HTTP for NFC: the tap's pay, its inquiry, refund and cancel, and adjustRefund.

Every answer is HTTP 200 and signed (``AlipayPlusCaller.check``); a rejection starts no workflow
and posts nothing; the ledger checks out after each test. Payers are fresh users of our own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from alipayplus import Amount, CancelPaymentRequest, InquiryPaymentRequest, PayRequest, RefundRequest
from alipayplus.nfc import AdjustRefundRequest, AdjustRefundScenario
from sandbox.alipayplus.driver import NFC_ACQUIRER_ID, adjust_refund_request, nfc_pay_request, refund_request
from sandbox.alipayplus.peer import SandboxAlipayPlus
from tests.api.conftest import drop_at, new_id, result_of, set_at
from tests.conftest import new_user
from wallet.ledger import Ledger
from wallet.records import payment_by_custom_data
from wallet.settings import Settings
from wallet.states import UserStatus

from .conftest import AlipayPlusCaller
from .test_refunds import assert_no_workflow

ATCS = itertools.count(1)  # each tap uses its token's next ATC: a repeated one is a replayed tap

PAY, INQUIRY, REFUND, CANCEL, ADJUST = (
    PayRequest.PATH,
    InquiryPaymentRequest.PATH,
    RefundRequest.PATH,
    CancelPaymentRequest.PATH,
    AdjustRefundRequest.PATH,
)
EXCEED, UNLINKED = AdjustRefundScenario.EXCEED_REFUND, AdjustRefundScenario.UNLINKED_REFUND
FROZEN_USER = "2160220037535022"  # a demo user, frozen
PRICE = Amount(currency="IDR", value=8_000)
TAP_DATA = bytes.fromhex("0102030405060708090A0B0C0D0E")  # 14 bytes: the most a tap carries


def idr(value: int) -> Amount:
    return Amount(currency="IDR", value=value)


@dataclass
class Terminal:
    """Alipay+ relaying taps at a POS, and the wallet's users, on the API in process."""

    alipay: AlipayPlusCaller
    client: Client
    settings: Settings
    database: Ledger
    engine: Engine

    def user(self, balance: int = 100_000, **options: Any) -> str:
        return new_user(self.engine, self.database, balance, **options)

    def tap(self, customer_id: str, amount: Amount = PRICE, pay_to: Amount | None = None) -> PayRequest:
        return nfc_pay_request(
            new_id("nfc"),
            customer_id,
            f"tok-{customer_id}",
            amount,
            pay_to_amount=pay_to,
            custom_data=TAP_DATA,
            atc=next(ATCS),
        )

    async def pay(self, request: PayRequest) -> dict[str, Any]:
        return await self.alipay.call(PAY, request.to_wire())

    async def paid(self, request: PayRequest) -> str:
        """pay answered S; the paymentId, once the payment's workflow has finished."""
        answer = await self.pay(request)
        assert result_of(answer) == ("S", "SUCCESS"), answer
        await self.client.get_workflow_handle(f"pay/{request.payment_request_id}").result()
        return str(answer["paymentId"])

    async def inquire(self, payment_request_id: str) -> dict[str, Any]:
        body = InquiryPaymentRequest(
            acquirer_id=NFC_ACQUIRER_ID, psp_id=self.settings.psp_id, payment_request_id=payment_request_id
        ).to_wire()
        return await self.alipay.call(INQUIRY, body)

    async def cancel(self, payment_request_id: str) -> dict[str, Any]:
        body = CancelPaymentRequest(
            acquirer_id=NFC_ACQUIRER_ID, psp_id=self.settings.psp_id, payment_request_id=payment_request_id
        ).to_wire()
        return await self.alipay.call(CANCEL, body)

    async def adjust(self, request: AdjustRefundRequest) -> dict[str, Any]:
        return await self.alipay.call(ADJUST, request.to_wire())

    def balance(self, customer_id: str) -> int:
        return self.database.balance(Ledger.user_account_id(customer_id))

    def postings(self) -> int:
        return self.database.check().postings


@pytest.fixture
async def pos(
    alipay: AlipayPlusCaller, client: Client, settings: Settings, database: Ledger, engine: Engine
) -> AsyncIterator[Terminal]:
    yield Terminal(alipay, client, settings, database, engine)
    check = database.check()
    assert check.ok, check


# --- pay --------------------------------------------------------------------------------------


async def _notification_delivered(client: Client, payment_request_id: str) -> None:
    """The pay answer can leave before the payment has started its notify workflow: wait for both."""
    handle = client.get_workflow_handle(f"notify/{payment_request_id}")
    for _ in range(100):
        try:
            await handle.result()
            return
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError(f"notify/{payment_request_id} never started")


async def test_a_tap_is_paid_with_a_final_signed_answer_that_inquiry_and_notify_agree_with(
    pos: Terminal, alipayplus: SandboxAlipayPlus
) -> None:
    payer = pos.user()
    request = pos.tap(payer)

    answer = await pos.pay(request)

    assert result_of(answer) == ("S", "SUCCESS")
    assert answer["paymentId"] and answer["paymentTime"] and answer["customerId"] == payer
    assert "paymentUrl" not in answer
    assert pos.balance(payer) == 100_000 - PRICE.value
    inquiry = await pos.inquire(request.payment_request_id)
    assert result_of(inquiry) == ("S", "SUCCESS") and result_of(inquiry, "paymentResult") == ("S", "SUCCESS")
    assert (inquiry["paymentId"], inquiry["paymentTime"]) == (answer["paymentId"], answer["paymentTime"])
    assert inquiry["payToAmount"] == {"currency": "IDR", "value": "8000"}
    await _notification_delivered(pos.client, request.payment_request_id)
    (notice,) = alipayplus.notifications(request.payment_request_id)
    assert result_of(notice.body, "paymentResult") == ("S", "SUCCESS")
    assert (notice.body["paymentId"], notice.body["paymentTime"]) == (answer["paymentId"], answer["paymentTime"])
    found = payment_by_custom_data(pos.engine, payer, TAP_DATA.hex())  # how the app will find its tap's payment
    assert found is not None and found.payment_id == answer["paymentId"]


async def test_a_tap_in_another_currency_debits_pay_to_amount(pos: Terminal) -> None:
    payer = pos.user()

    answer = await pos.pay(pos.tap(payer, Amount(currency="SGD", value=250), pay_to=idr(30_000)))

    assert result_of(answer) == ("S", "SUCCESS")
    assert pos.balance(payer) == 100_000 - 30_000


@pytest.mark.parametrize(
    ("payer_of", "code"),
    [
        (lambda pos: pos.user(PRICE.value - 1), "USER_BALANCE_NOT_ENOUGH"),
        (lambda pos: pos.user(status=UserStatus.FROZEN), "USER_STATUS_ABNORMAL"),
        (lambda pos: "2169999999999998", "USER_NOT_EXIST"),
        (lambda pos: pos.user(single_payment_limit=PRICE.value - 1), "PAYMENT_AMOUNT_EXCEED_LIMIT"),
    ],
    ids=["balance", "frozen", "unknown user", "limit"],
)
async def test_a_declined_tap_is_a_final_f_with_the_reason_and_no_debit(
    pos: Terminal, payer_of: Callable[[Terminal], str], code: str
) -> None:
    request = pos.tap(payer_of(pos))
    postings = pos.postings()

    answer = await pos.pay(request)
    inquiry = await pos.inquire(request.payment_request_id)

    assert result_of(answer) == ("F", code) and "paymentId" not in answer
    assert result_of(inquiry, "paymentResult") == ("F", code)
    assert pos.postings() == postings


async def test_the_same_tap_again_gets_the_same_answer_and_a_changed_one_is_inconsistent(pos: Terminal) -> None:
    payer = pos.user()
    request = pos.tap(payer)
    first = await pos.pay(request)
    await pos.client.get_workflow_handle(f"pay/{request.payment_request_id}").result()

    again = await pos.pay(request)  # answered from the records: the workflow has finished
    changed = await pos.pay(request.model_copy(update={"pay_to_amount": idr(1)}))

    assert result_of(first) == ("S", "SUCCESS")
    assert again == first
    assert result_of(changed) == ("F", "REPEAT_REQ_INCONSISTENT") and "paymentId" not in changed
    assert pos.balance(payer) == 100_000 - PRICE.value


PAY_REFUSALS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "no customerId": (drop_at("paymentMethod", "customerId"), "paymentMethod.customerId"),
    "not in store": (set_at("paymentFactor", "isInStorePayment", "false"), "paymentFactor.isInStorePayment"),
    "no isInStorePayment": (drop_at("paymentFactor", "isInStorePayment"), "paymentFactor.isInStorePayment"),
    "an evaluation": (set_at("paymentFactor", "isPaymentEvaluation", "true"), "paymentFactor.isPaymentEvaluation"),
    "not an NFC method": (set_at("paymentMethod", "paymentMethodType", "ALIPAY_HK"), "paymentMethod.paymentMethodType"),
    "customData of 15 bytes": (set_at("nfcPaymentInfo", "customData", "AB" * 15), "nfcPaymentInfo.customData"),
    "customData not hex": (set_at("nfcPaymentInfo", "customData", "XYZ1"), "nfcPaymentInfo.customData"),
    "no tokenReferenceId": (drop_at("nfcPaymentInfo", "tokenReferenceId"), "nfcPaymentInfo.tokenReferenceId"),
    "atc not decimal": (set_at("nfcPaymentInfo", "atc", "7F"), "nfcPaymentInfo.atc"),
    "payToAmount 0": (set_at("payToAmount", "value", "0"), "payToAmount.value"),
    "paymentAmount -1": (set_at("paymentAmount", "value", "-1"), "paymentAmount.value"),
    "foreign pspId": (set_at("pspId", "1022169999999999999"), "pspId"),
}


@pytest.mark.parametrize("case", list(PAY_REFUSALS))
async def test_a_bad_nfc_pay_is_param_illegal_naming_the_field_and_starts_nothing(pos: Terminal, case: str) -> None:
    change, named = PAY_REFUSALS[case]
    payer = pos.user()
    request = pos.tap(payer)
    body = json.loads(request.to_wire())
    change(body)
    postings = pos.postings()

    answer = await pos.alipay.call(PAY, json.dumps(body).encode())

    assert result_of(answer) == ("F", "PARAM_ILLEGAL")
    assert named in answer["result"]["resultMessage"], answer
    assert set(answer) == {"result"}
    await assert_no_workflow(pos.client, f"pay/{request.payment_request_id}")
    assert pos.postings() == postings and pos.balance(payer) == 100_000


async def test_a_tampered_nfc_pay_is_refused(pos: Terminal) -> None:
    payer = pos.user()
    request = pos.tap(payer)
    body = request.to_wire()
    headers = pos.alipay.peer.signer.headers(PAY, body)

    answer = await pos.alipay.call(PAY, body.replace(b'"8000"', b'"80"'), headers)

    assert result_of(answer) == ("F", "INVALID_SIGNATURE")
    await assert_no_workflow(pos.client, f"pay/{request.payment_request_id}")
    assert pos.balance(payer) == 100_000


# --- refund, cancel ---------------------------------------------------------------------------


async def test_an_nfc_payment_is_refunded_in_part_then_cancelled_for_the_rest(pos: Terminal) -> None:
    payer = pos.user()
    request = pos.tap(payer)
    payment_id = await pos.paid(request)

    refunded = await pos.alipay.call(
        REFUND, refund_request(request, payment_id, new_id("refund"), idr(3_000)).to_wire()
    )
    assert pos.balance(payer) == 100_000 - PRICE.value + 3_000
    cancelled = await pos.cancel(request.payment_request_id)
    inquiry = await pos.inquire(request.payment_request_id)

    assert result_of(refunded) == ("S", "SUCCESS") and refunded["refundId"]
    assert result_of(cancelled) == ("S", "SUCCESS")
    assert pos.balance(payer) == 100_000  # the reversal returned the other 5000
    assert result_of(inquiry, "paymentResult") == ("F", "ORDER_IS_CLOSED")


async def test_a_same_day_cancel_reverses_the_whole_debit_once(pos: Terminal) -> None:
    payer = pos.user()
    request = pos.tap(payer)
    await pos.paid(request)

    first = await pos.cancel(request.payment_request_id)
    postings = pos.postings()
    again = await pos.cancel(request.payment_request_id)

    assert result_of(first) == result_of(again) == ("S", "SUCCESS")
    assert pos.balance(payer) == 100_000 and pos.postings() == postings


# --- adjustRefund ----------------------------------------------------------------------------


async def test_an_excess_refund_is_credited_at_the_payments_rate(pos: Terminal) -> None:
    payer = pos.user()
    request = pos.tap(payer, Amount(currency="SGD", value=250), pay_to=idr(30_000))
    await pos.paid(request)

    answer = await pos.adjust(
        adjust_refund_request(
            new_id("adj"), EXCEED, Amount(currency="SGD", value=50), payment_request_id=request.payment_request_id
        )
    )

    assert result_of(answer) == ("S", "SUCCESS") and answer["refundId"] and answer["refundTime"]
    assert pos.balance(payer) == 100_000 - 30_000 + 6_000  # SGD 0.50 at 120 IDR per cent


async def test_an_unlinked_refund_is_credited_and_repeats_get_the_same_answer(pos: Terminal) -> None:
    user = pos.user(0)
    request = adjust_refund_request(new_id("adj"), UNLINKED, idr(4_400), customer_id=user)

    first = await pos.adjust(request)
    await pos.client.get_workflow_handle(f"adjust-refund/{request.refund_request_id}").result()
    again = await pos.adjust(request)  # from the records
    changed = await pos.adjust(request.model_copy(update={"refund_amount": idr(4_401)}))

    assert result_of(first) == ("S", "SUCCESS") and first["refundId"]
    assert again == first
    assert result_of(changed) == ("F", "REPEAT_REQ_INCONSISTENT") and set(changed) == {"result"}
    assert pos.balance(user) == 4_400


async def test_a_frozen_user_is_credited_all_the_same(pos: Terminal) -> None:
    before = pos.balance(FROZEN_USER)

    answer = await pos.adjust(adjust_refund_request(new_id("adj"), UNLINKED, idr(1_234), customer_id=FROZEN_USER))

    assert result_of(answer) == ("S", "SUCCESS")
    assert pos.balance(FROZEN_USER) == before + 1_234


ADJUST_REFUSALS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "exceed without paymentRequestId": (drop_at("paymentRequestId"), "paymentRequestId"),
    "exceed of an unknown payment": (set_at("paymentRequestId", "no-such-payment"), "paymentRequestId"),
    "unlinked without customerId": (
        lambda body: (body.update(subScenarioType="UNLINKED_REFUND"), body.pop("customerId", None)),
        "customerId",
    ),
    "unlinked to an unknown customer": (
        lambda body: body.update(subScenarioType="UNLINKED_REFUND", customerId="2169999999999997"),
        "customerId",
    ),
    "unlinked in a currency not the user's": (
        lambda body: body.update(
            subScenarioType="UNLINKED_REFUND", customerId=FROZEN_USER, refundAmount={"currency": "USD", "value": "1"}
        ),
        "refundAmount.currency",
    ),
    "exceed in a currency we cannot convert": (set_at("refundAmount", "currency", "USD"), "refundAmount.currency"),
    "amount 0": (set_at("refundAmount", "value", "0"), "refundAmount.value"),
    "amount -1": (set_at("refundAmount", "value", "-1"), "refundAmount.value"),
    "amount as a number": (set_at("refundAmount", "value", 50), "refundAmount.value"),
    "unknown subScenarioType": (set_at("subScenarioType", "PARTIAL_REFUND"), "subScenarioType"),
    "no refundRequestId": (drop_at("refundRequestId"), "refundRequestId"),
    "foreign pspId": (set_at("pspId", "1022169999999999999"), "pspId"),
}


@pytest.fixture(scope="module")
async def paid_tap(
    alipay: AlipayPlusCaller, client: Client, settings: Settings, database: Ledger, engine: Engine
) -> PayRequest:
    """One paid NFC payment that the refused adjustRefunds below name."""
    terminal = Terminal(alipay, client, settings, database, engine)
    request = terminal.tap(terminal.user())
    await terminal.paid(request)
    return request


@pytest.mark.parametrize("case", list(ADJUST_REFUSALS))
async def test_a_bad_adjust_refund_is_param_illegal_naming_the_field_and_credits_nothing(
    pos: Terminal, paid_tap: PayRequest, case: str
) -> None:
    change, named = ADJUST_REFUSALS[case]
    request = adjust_refund_request(new_id("adj"), EXCEED, idr(500), payment_request_id=paid_tap.payment_request_id)
    body = json.loads(request.to_wire())
    change(body)
    postings = pos.postings()

    answer = await pos.alipay.call(ADJUST, json.dumps(body).encode())

    assert result_of(answer) == ("F", "PARAM_ILLEGAL")
    assert named in answer["result"]["resultMessage"], answer
    assert set(answer) == {"result"}
    await assert_no_workflow(pos.client, f"adjust-refund/{request.refund_request_id}")
    assert pos.postings() == postings


async def test_a_rejected_adjust_refund_can_be_sent_again_once_fixed(pos: Terminal) -> None:
    user = pos.user(0)
    request = adjust_refund_request(new_id("adj"), UNLINKED, idr(600), customer_id=user)

    wrong = await pos.adjust(request.model_copy(update={"customer_id": None}))
    fixed = await pos.adjust(request)

    assert result_of(wrong) == ("F", "PARAM_ILLEGAL") and result_of(fixed) == ("S", "SUCCESS")
    assert pos.balance(user) == 600


async def test_a_tampered_adjust_refund_is_refused(pos: Terminal) -> None:
    user = pos.user(0)
    request = adjust_refund_request(new_id("adj"), UNLINKED, idr(100), customer_id=user)
    body = request.to_wire()
    headers = pos.alipay.peer.signer.headers(ADJUST, body)

    answer = await pos.alipay.call(ADJUST, body.replace(b'"100"', b'"100000"'), headers)

    assert result_of(answer) == ("F", "INVALID_SIGNATURE")
    await assert_no_workflow(pos.client, f"adjust-refund/{request.refund_request_id}")
    assert pos.balance(user) == 0


# --- the app finds the payment its tap became, by the tap's custom data (spec §10.1, step 10) --------


async def _login(api: httpx.AsyncClient, login_id: str) -> dict[str, str]:
    response = await api.post("/app/v1/login", json={"loginId": login_id, "pin": "246810"})
    assert response.status_code == 200, response.text
    api.cookies.clear()  # the web view's cookie: these calls sign in by the header only
    return {"Authorization": f"Bearer {response.json()['sessionToken']}"}


async def test_the_app_finds_its_taps_payment_by_custom_data_and_only_its_own(
    pos: Terminal, api: httpx.AsyncClient
) -> None:
    payer = "2160220037535021"  # the demo PIN user, who can sign in to the app
    custom_data = uuid.uuid4().bytes[:8]
    request = nfc_pay_request(new_id("nfc"), payer, f"tok-{payer}", PRICE, custom_data=custom_data, atc=next(ATCS))
    path = f"/app/v1/nfc/payments?customData={custom_data.hex()}"
    owner = await _login(api, "852-11112222")
    assert (await api.get(path, headers=owner)).status_code == 404  # before Alipay+'s pay arrives

    payment_id = await pos.paid(request)

    found = await api.get(path, headers=owner)
    assert found.status_code == 200, found.text
    assert found.json() | {"paymentTime": None} == {
        "paymentRequestId": request.payment_request_id,
        "paymentId": payment_id,
        "status": "SUCCESS",
        "resultCode": "SUCCESS",
        "payToAmount": {"currency": "IDR", "value": "8000"},
        "paymentTime": None,
        "tokenReferenceId": f"tok-{payer}",
    }
    assert found.json()["paymentTime"]
    stranger = await _login(api, "852-33334444")
    assert (await api.get(path, headers=stranger)).status_code == 404
    assert (await api.get(path)).status_code == 401
    assert (await api.get("/app/v1/nfc/payments?customData=XYZ", headers=owner)).status_code == 422
    too_long = "00" * 15
    assert (await api.get(f"/app/v1/nfc/payments?customData={too_long}", headers=owner)).status_code == 422
