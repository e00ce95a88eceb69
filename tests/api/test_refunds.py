"""Alipay+ → MPP over HTTP: refund and cancelPayment, signed both ways.

Payments are made through the API as Alipay+ and the user make them: pay #2, then the PIN on
the verification page. Every answer is HTTP 200 and signed (``AlipayPlusCaller.check``), and
the ledger checks out after each test. The cancel window's end is covered by the time-skipping
workflow tests, not here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from alipayplus import (
    Amount,
    CancelPaymentRequest,
    InquiryPaymentRequest,
    PayRequest,
    RefundRequest,
)
from api.pages import form_fields
from sandbox.alipayplus.driver import ACQUIRER_ID, easy_pay_order, refund_request
from tests.api.conftest import new_id, result_of, set_at
from tests.page_steps import back_to, handed_on, shown_after, status_handed_on
from wallet.ledger import Ledger
from wallet.settings import Settings

from .conftest import AlipayPlusCaller

PAY, INQUIRY, REFUND, CANCEL = (
    PayRequest.PATH,
    InquiryPaymentRequest.PATH,
    RefundRequest.PATH,
    CancelPaymentRequest.PATH,
)
PIN_USER = ("852-11112222", "2160220037535021")
PIN = "246810"
PRICE = Amount(currency="IDR", value=5000)
REDIRECT = "https://ac.alipay.com/result?order=refunds"  # Alipay+'s result page (MPP_REDIRECT_HOSTS)
ACCOUNT = Ledger.user_account_id(PIN_USER[1])
_UTC8 = timezone(timedelta(hours=8))


def idr(value: int) -> Amount:
    return Amount(currency="IDR", value=value)


@dataclass
class Payment:
    request: PayRequest
    payment_id: str
    page: str  # the verification page's path

    def refund(self, amount: Amount, refund_request_id: str | None = None, **changes: Any) -> RefundRequest:
        request = refund_request(self.request, self.payment_id, refund_request_id or new_id("refund"), amount)
        return request.model_copy(update=changes) if changes else request


@dataclass
class Wallet:
    """Alipay+ and the PIN user, on the API in process."""

    alipay: AlipayPlusCaller
    env: WorkflowEnvironment
    settings: Settings
    database: Ledger

    async def order_request(self, payment_request_id: str) -> PayRequest:
        """pay #2's request, expiring 10 minutes after the server's clock (which may be ahead)."""
        request = easy_pay_order(payment_request_id, PIN_USER[0], PRICE, self.settings.psp_id, redirect_url=REDIRECT)
        expiry = (await self.env.get_current_time() + timedelta(minutes=10)).astimezone(_UTC8).replace(microsecond=0)
        return request.model_copy(update={"payment_expiry_time": expiry})

    async def order(self) -> Payment:
        """pay #2: the order waits for the user on the verification page."""
        request = await self.order_request(new_id("pay"))
        created = await self.alipay.call(PAY, request.to_wire())
        assert result_of(created) == ("U", "PAYMENT_IN_PROCESS"), created
        return Payment(request, created["paymentId"], urlsplit(created["paymentUrl"]).path)

    async def paid(self) -> Payment:
        """pay #2, then the right PIN: debited, final."""
        payment = await self.order()
        form = form_fields((await self.alipay.http.get(payment.page)).text)  # the page's token
        right = await self.alipay.http.post(payment.page, data={"code": PIN, **form})
        assert back_to(payment.page, right)
        assert status_handed_on(await shown_after(self.alipay.http, right)) == "success"
        # Debited and recorded (not awaiting the workflow's end: that would let the test server skip time).
        inquiry = await self.inquire(payment.request.payment_request_id)
        assert result_of(inquiry, "paymentResult") == ("S", "SUCCESS"), inquiry
        return payment

    async def refund(self, request: RefundRequest) -> dict[str, Any]:
        return await self.alipay.call(REFUND, request.to_wire())

    async def cancel(self, payment_request_id: str) -> dict[str, Any]:
        body = CancelPaymentRequest(
            acquirer_id=ACQUIRER_ID, psp_id=self.settings.psp_id, payment_request_id=payment_request_id
        ).to_wire()
        return await self.alipay.call(CANCEL, body)

    async def inquire(self, payment_request_id: str) -> dict[str, Any]:
        body = InquiryPaymentRequest(
            acquirer_id=ACQUIRER_ID, psp_id=self.settings.psp_id, payment_request_id=payment_request_id
        ).to_wire()
        return await self.alipay.call(INQUIRY, body)

    def balance(self) -> int:
        return self.database.balance(ACCOUNT)


@pytest.fixture
async def wallet(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, database: Ledger
) -> AsyncIterator[Wallet]:
    yield Wallet(alipay, env, settings, database)
    check = database.check()
    assert check.ok and check.returns_within_debits, check


async def assert_no_workflow(client: Client, workflow_id: str) -> None:
    with pytest.raises(RPCError) as raised:
        await client.get_workflow_handle(workflow_id).describe()
    assert raised.value.status is RPCStatusCode.NOT_FOUND


# --- refund ---------------------------------------------------------------------------------


async def test_full_refund_credits_the_user_exactly(wallet: Wallet) -> None:
    payment = await wallet.paid()
    before = wallet.balance()

    answer = await wallet.refund(payment.refund(PRICE))

    assert result_of(answer) == ("S", "SUCCESS")
    assert answer["refundId"] and len(answer["refundId"]) <= 64
    assert datetime.fromisoformat(answer["refundTime"]).tzinfo is not None
    assert wallet.balance() == before + PRICE.value


async def test_partial_refunds_up_to_the_amount_paid(wallet: Wallet) -> None:
    payment = await wallet.paid()
    before = wallet.balance()

    first = await wallet.refund(payment.refund(idr(2000)))
    second = await wallet.refund(payment.refund(idr(2000)))
    too_much = await wallet.refund(payment.refund(idr(1001)))
    assert wallet.balance() == before + 4000
    rest = await wallet.refund(payment.refund(idr(1000)))
    nothing_left = await wallet.refund(payment.refund(idr(1)))

    assert result_of(first) == result_of(second) == ("S", "SUCCESS")
    assert first["refundId"] != second["refundId"]
    assert result_of(too_much) == ("F", "REFUND_AMOUNT_EXCEED") and "refundId" not in too_much
    assert result_of(rest) == ("S", "SUCCESS")
    assert result_of(nothing_left) == ("F", "REFUND_AMOUNT_EXCEED")
    assert wallet.balance() == before + PRICE.value


async def test_repeated_refund_gets_the_same_answer_and_credits_once(wallet: Wallet) -> None:
    payment = await wallet.paid()
    before = wallet.balance()
    request = payment.refund(idr(1500))

    first = await wallet.refund(request)
    again = await wallet.refund(request)
    changed = await wallet.refund(request.model_copy(update={"refund_amount": idr(1600)}))
    after_change = await wallet.refund(request)

    assert result_of(first) == ("S", "SUCCESS")
    assert result_of(again) == ("S", "SUCCESS")
    assert (again["refundId"], again["refundTime"]) == (first["refundId"], first["refundTime"])
    assert result_of(changed) == ("F", "REPEAT_REQ_INCONSISTENT") and "refundId" not in changed
    assert after_change["refundId"] == first["refundId"]
    assert wallet.balance() == before + 1500


async def test_refund_of_an_unknown_payment(wallet: Wallet, settings: Settings) -> None:
    phantom = easy_pay_order(new_id("phantom"), PIN_USER[0], PRICE, settings.psp_id)
    before = wallet.balance()

    answer = await wallet.refund(refund_request(phantom, uuid.uuid4().hex, new_id("refund"), PRICE))

    assert result_of(answer) == ("F", "ORDER_NOT_EXIST") and "refundId" not in answer
    assert wallet.balance() == before


async def test_refund_with_another_payment_id(wallet: Wallet) -> None:
    payment = await wallet.paid()
    before = wallet.balance()

    answer = await wallet.refund(payment.refund(PRICE, payment_id=uuid.uuid4().hex))

    assert result_of(answer) == ("F", "ORDER_NOT_EXIST")
    assert wallet.balance() == before


async def test_refund_of_a_payment_still_verifying(wallet: Wallet) -> None:
    payment = await wallet.order()
    before = wallet.balance()

    answer = await wallet.refund(payment.refund(PRICE))

    assert result_of(answer) == ("F", "ORDER_STATUS_INVALID") and "refundId" not in answer
    assert wallet.balance() == before
    # the order itself is untouched: the user can still pay it
    assert "3 attempts left" in (await wallet.alipay.http.get(payment.page)).text


async def test_refund_in_another_currency(wallet: Wallet) -> None:
    payment = await wallet.paid()
    before = wallet.balance()

    answer = await wallet.refund(payment.refund(Amount(currency="USD", value=100)))

    assert result_of(answer) == ("F", "PARAM_ILLEGAL")
    assert "refundAmount.currency" in answer["result"]["resultMessage"]
    assert wallet.balance() == before


REFUSALS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "foreign pspId": (set_at("pspId", "1022169999999999999"), "pspId"),
    "no refundRequestId": (lambda body: body.pop("refundRequestId"), "refundRequestId"),
    "amount as a number": (set_at("refundAmount", "value", 50), "refundAmount.value"),
    "amount 1e309": (set_at("refundAmount", "value", "1e309"), "refundAmount.value"),
    "amount -1": (set_at("refundAmount", "value", "-1"), "refundAmount.value"),
    "amount 1.5": (set_at("refundAmount", "value", "1.5"), "refundAmount.value"),
    "amount 0": (set_at("refundAmount", "value", "0"), "refundAmount.value"),
    "refundFromAmount 0": (set_at("refundFromAmount", {"currency": "IDR", "value": "0"}), "refundFromAmount.value"),
}


@pytest.fixture(scope="module")
async def paid_once(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, database: Ledger
) -> Payment:
    """One paid payment that the refused refunds below must leave alone."""
    return await Wallet(alipay, env, settings, database).paid()


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_refund_changes_nothing(
    case: str, wallet: Wallet, paid_once: Payment, client: Client, database: Ledger
) -> None:
    change, named = REFUSALS[case]
    request = paid_once.refund(PRICE)
    body = json.loads(request.to_wire())
    change(body)
    postings = database.check().postings

    answer = await wallet.alipay.call(REFUND, json.dumps(body).encode())

    assert result_of(answer) == ("F", "PARAM_ILLEGAL")
    assert named in answer["result"]["resultMessage"]
    assert set(answer) == {"result"}
    await assert_no_workflow(client, f"refund/{request.refund_request_id}")
    assert database.check().postings == postings


async def test_tampered_refund_is_refused(wallet: Wallet, paid_once: Payment, client: Client) -> None:
    request = paid_once.refund(idr(100))
    body = request.to_wire()
    headers = wallet.alipay.peer.signer.headers(REFUND, body)
    before = wallet.balance()

    answer = await wallet.alipay.call(REFUND, body.replace(b'"100"', b'"5000"'), headers)

    assert result_of(answer) == ("F", "INVALID_SIGNATURE")
    await assert_no_workflow(client, f"refund/{request.refund_request_id}")
    assert wallet.balance() == before


# --- cancelPayment --------------------------------------------------------------------------


async def test_cancel_of_an_unpaid_order_closes_it(wallet: Wallet) -> None:
    payment = await wallet.order()
    request_id = payment.request.payment_request_id
    before, postings = wallet.balance(), wallet.database.check().postings
    form = form_fields((await wallet.alipay.http.get(payment.page)).text)  # the page, open before the cancel

    answer = await wallet.cancel(request_id)
    pin = await wallet.alipay.http.post(payment.page, data={"code": PIN, **form})
    inquiry = await wallet.inquire(request_id)

    assert result_of(answer) == ("S", "SUCCESS") and set(answer) == {"result"}
    # the page no longer takes the PIN: it shows the closed order, on to Alipay+'s result page with status=fail
    assert back_to(payment.page, pin), pin.text
    shown = await shown_after(wallet.alipay.http, pin)
    assert (handed_on(shown) or "").startswith(REDIRECT) and status_handed_on(shown) == "fail"
    assert result_of(inquiry) == ("S", "SUCCESS")
    assert result_of(inquiry, "paymentResult") == ("F", "ORDER_IS_CLOSED")
    assert "paymentId" not in inquiry
    assert wallet.balance() == before and wallet.database.check().postings == postings
    refund = await wallet.refund(payment.refund(PRICE))
    assert result_of(refund) == ("F", "ORDER_STATUS_INVALID")


async def test_cancel_after_success_returns_the_money(wallet: Wallet) -> None:
    before = wallet.balance()
    payment = await wallet.paid()
    request_id = payment.request.payment_request_id
    assert wallet.balance() == before - PRICE.value

    answer = await wallet.cancel(request_id)
    assert wallet.balance() == before  # the whole payToAmount came back
    postings = wallet.database.check().postings
    again = await wallet.cancel(request_id)
    inquiry = await wallet.inquire(request_id)
    refund = await wallet.refund(payment.refund(PRICE))

    assert result_of(answer) == result_of(again) == ("S", "SUCCESS")
    assert result_of(inquiry, "paymentResult") == ("F", "ORDER_IS_CLOSED")
    assert result_of(refund) == ("F", "ORDER_STATUS_INVALID") and "refundId" not in refund
    assert wallet.balance() == before and wallet.database.check().postings == postings  # no second reversal


async def test_cancel_after_a_partial_refund_returns_the_rest(wallet: Wallet) -> None:
    before = wallet.balance()
    payment = await wallet.paid()

    refunded = await wallet.refund(payment.refund(idr(1200)))
    cancelled = await wallet.cancel(payment.request.payment_request_id)

    assert result_of(refunded) == result_of(cancelled) == ("S", "SUCCESS")
    assert wallet.balance() == before  # 1200 by the refund, 3800 by the reversal


async def test_cancel_of_an_unknown_payment_closes_a_late_pay(wallet: Wallet) -> None:
    request_id = new_id("late")
    before = wallet.balance()

    answer = await wallet.cancel(request_id)
    again = await wallet.cancel(request_id)
    inquiry_before = await wallet.inquire(request_id)
    late = await wallet.alipay.call(PAY, (await wallet.order_request(request_id)).to_wire())
    inquiry = await wallet.inquire(request_id)

    assert result_of(answer) == result_of(again) == ("S", "SUCCESS")
    assert result_of(inquiry_before, "paymentResult") == ("F", "ORDER_IS_CLOSED")
    assert result_of(late) == ("F", "ORDER_IS_CLOSED")
    assert "paymentId" not in late and "paymentUrl" not in late
    assert result_of(inquiry) == ("S", "SUCCESS")
    assert result_of(inquiry, "paymentResult") == ("F", "ORDER_IS_CLOSED")
    assert wallet.balance() == before


async def test_tampered_cancel_is_refused(wallet: Wallet, paid_once: Payment) -> None:
    request_id = paid_once.request.payment_request_id
    body = CancelPaymentRequest(
        acquirer_id=ACQUIRER_ID, psp_id=wallet.settings.psp_id, payment_request_id=request_id
    ).to_wire()
    headers = wallet.alipay.peer.signer.headers(CANCEL, body)
    before = wallet.balance()

    answer = await wallet.alipay.call(CANCEL, body.replace(ACQUIRER_ID.encode(), b"1022188000000000002"), headers)

    assert result_of(answer) == ("F", "INVALID_SIGNATURE")
    assert result_of(await wallet.inquire(request_id), "paymentResult") == ("S", "SUCCESS")
    assert wallet.balance() == before
