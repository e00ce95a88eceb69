"""A signed corpus of input that can never succeed: each gets a final F/PARAM_ILLEGAL naming the field.

Times at the edge of the calendar (they parse, then overflow when converted to UTC), a NUL in an
identifier and a redirect URL longer than its column (PostgreSQL refuses both rows) used to be
answered U, so Alipay+ would have retried them forever. The message layer now refuses them,
identically on SQLite and PostgreSQL; valid boundary values still pass.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from alipayplus import CancelPaymentRequest, InquiryPaymentRequest, PayRequest, RefundRequest
from alipayplus.nfc import AdjustRefundRequest, AdjustRefundScenario, TokenActivationNotificationRequest
from api.services import Services
from sandbox.alipayplus.driver import ACQUIRER_ID, adjust_refund_request, nfc_pay_request, refund_request
from tests.alipayplus.test_messages import inside
from tests.api.conftest import drop_at, new_id, result_of, set_at
from wallet.settings import Settings

from .conftest import AlipayPlusCaller, BodyEdit
from .test_inbound import PIN_USER, PRICE, assert_no_workflow, new_order
from .test_mpm import KRW_USER, access_token, mpm_pay
from .test_token_activation import notification

PAY, INQUIRY, REFUND, CANCEL, ADJUST, TOKEN = (
    PayRequest.PATH,
    InquiryPaymentRequest.PATH,
    RefundRequest.PATH,
    CancelPaymentRequest.PATH,
    AdjustRefundRequest.PATH,
    TokenActivationNotificationRequest.PATH,
)
EARLIEST = "0001-01-01T00:00:00+14:00"  # parses, but is before datetime.min in UTC
LATEST = "9999-12-31T23:59:59-14:00"  # parses, but is after datetime.max in UTC
YEAR_2999 = "2999-01-01T00:00:00+08:00"  # converts, but no real payment or token is dated so
NUL = "\u0000"
URL_COLUMN = 2048  # PaymentRecord.redirect_url


@dataclass
class Sender:
    """What the corpus needs to build a realistic request before breaking one field of it."""

    alipay: AlipayPlusCaller
    env: WorkflowEnvironment
    settings: Settings
    services: Services

    async def easy_pay(self) -> dict[str, Any]:
        """Easy Pay's pay #2 for a real user, expiring in 10 minutes."""
        return json.loads((await new_order(self.env, self.settings)).to_wire())

    async def mpm(self) -> dict[str, Any]:
        """An MPM pay with a real access token from applyToken."""
        return mpm_pay(self.settings, await access_token(self.alipay, self.services, self.settings, KRW_USER))

    async def nfc(self) -> dict[str, Any]:
        request = nfc_pay_request(new_id("nfc"), PIN_USER[1], new_id("tok"), PRICE, psp_id=self.settings.psp_id)
        return json.loads(request.to_wire())

    async def refund(self) -> dict[str, Any]:
        payment = await new_order(self.env, self.settings)
        return json.loads(refund_request(payment, new_id("paid"), new_id("refund"), PRICE).to_wire())

    async def cancel(self) -> dict[str, Any]:
        return self._payment_call(CancelPaymentRequest)

    async def inquiry(self) -> dict[str, Any]:
        return self._payment_call(InquiryPaymentRequest)

    async def adjust(self) -> dict[str, Any]:
        request = adjust_refund_request(
            new_id("adjust"),
            AdjustRefundScenario.UNLINKED_REFUND,
            PRICE,
            customer_id=PIN_USER[1],
            psp_id=self.settings.psp_id,
        )
        return json.loads(request.to_wire())

    async def token(self) -> dict[str, Any]:
        return notification()

    def _payment_call(self, message: type[CancelPaymentRequest] | type[InquiryPaymentRequest]) -> dict[str, Any]:
        request = message(acquirer_id=ACQUIRER_ID, psp_id=self.settings.psp_id, payment_request_id=new_id("x"))
        return json.loads(request.to_wire())


Build = Callable[[Sender], Awaitable[dict[str, Any]]]


def _nul_inside(*path: str) -> BodyEdit:
    return inside(path, NUL)


def _url(length: int) -> str:
    url = "https://acquirer.example/result?order=" + "x" * (length - 38)
    assert len(url) == length
    return url


# case: (path, request before the edit, the edit, the field the answer must name)
CORPUS: dict[str, tuple[str, Build, BodyEdit, str]] = {
    "easy pay expiry at year 1": (PAY, Sender.easy_pay, set_at("paymentExpiryTime", EARLIEST), "paymentExpiryTime"),
    "easy pay expiry at year 9999": (PAY, Sender.easy_pay, set_at("paymentExpiryTime", LATEST), "paymentExpiryTime"),
    "easy pay expiry in 2999": (PAY, Sender.easy_pay, set_at("paymentExpiryTime", YEAR_2999), "paymentExpiryTime"),
    "mpm expiry at year 1": (PAY, Sender.mpm, set_at("paymentExpiryTime", EARLIEST), "paymentExpiryTime"),
    "mpm expiry at year 9999": (PAY, Sender.mpm, set_at("paymentExpiryTime", LATEST), "paymentExpiryTime"),
    "token serviceRequestTime at year 1": (
        TOKEN,
        Sender.token,
        set_at("serviceRequestTime", EARLIEST),
        "serviceRequestTime",
    ),
    "token tokenActivatedTime at year 9999": (
        TOKEN,
        Sender.token,
        set_at("tokenActivatedTime", LATEST),
        "tokenActivatedTime",
    ),
    "token tokenActivatedTime in 2999": (
        TOKEN,
        Sender.token,
        set_at("tokenActivatedTime", YEAR_2999),
        "tokenActivatedTime",
    ),
    "token serviceRequestTime in 2999": (
        TOKEN,
        Sender.token,
        set_at("serviceRequestTime", YEAR_2999),
        "serviceRequestTime",
    ),
    "NUL in pay's paymentRequestId": (PAY, Sender.easy_pay, _nul_inside("paymentRequestId"), "paymentRequestId"),
    "NUL in userLoginId": (
        PAY,
        Sender.easy_pay,
        _nul_inside("paymentMethod", "paymentMethodMetaData", "userLoginId"),
        "paymentMethod.paymentMethodMetaData.userLoginId",
    ),
    "NUL in refundRequestId": (REFUND, Sender.refund, _nul_inside("refundRequestId"), "refundRequestId"),
    "NUL in cancel's paymentRequestId": (
        CANCEL,
        Sender.cancel,
        _nul_inside("paymentRequestId"),
        "paymentRequestId",
    ),
    "NUL in inquiry's paymentRequestId": (
        INQUIRY,
        Sender.inquiry,
        _nul_inside("paymentRequestId"),
        "paymentRequestId",
    ),
    "NUL in adjustRefund's refundRequestId": (
        ADJUST,
        Sender.adjust,
        _nul_inside("refundRequestId"),
        "refundRequestId",
    ),
    "NUL in the order's description": (
        PAY,
        Sender.easy_pay,
        _nul_inside("order", "orderDescription"),
        "order.orderDescription",
    ),
    "NUL in tokenReferenceId": (TOKEN, Sender.token, _nul_inside("tokenReferenceId"), "tokenReferenceId"),
    "redirect URL over its column": (
        PAY,
        Sender.easy_pay,
        set_at("paymentRedirectUrl", _url(URL_COLUMN + 1)),
        "paymentRedirectUrl",
    ),
    "NFC pay without nfcPaymentInfo": (PAY, Sender.nfc, drop_at("nfcPaymentInfo"), "nfcPaymentInfo"),
}


@pytest.fixture
def sender(alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, app: FastAPI) -> Sender:
    return Sender(alipay, env, settings, app.state.services)


@pytest.mark.parametrize("case", list(CORPUS))
async def test_input_that_can_never_succeed_is_a_final_param_illegal(case: str, sender: Sender, client: Client) -> None:
    path, build, edit, field = CORPUS[case]
    body = await build(sender)
    edit(body)

    answer = await sender.alipay.call(path, json.dumps(body).encode())  # HTTP 200, signed

    assert result_of(answer) == ("F", "PARAM_ILLEGAL"), answer
    assert answer["result"]["resultMessage"].startswith(f"{field}: "), answer
    assert set(answer) == {"result"}
    if path == PAY and NUL not in body["paymentRequestId"]:
        await assert_no_workflow(client, f"pay/{body['paymentRequestId']}")


# --- the boundaries themselves are still served -----------------------------------------------


async def test_a_redirect_url_as_long_as_its_column_is_accepted(sender: Sender) -> None:
    body = await sender.easy_pay()
    body["paymentRedirectUrl"] = _url(URL_COLUMN)

    answer = await sender.alipay.call(PAY, json.dumps(body).encode())

    assert result_of(answer) == ("U", "PAYMENT_IN_PROCESS"), answer
    assert answer["paymentUrl"]


@pytest.mark.parametrize(
    ("service_request_time", "token_activated_time"),
    [("2000-01-01T00:00:00Z", "2000-01-01T08:00:00+08:00"), ("2099-12-31T23:59:59Z", "2100-01-01T07:59:59+08:00")],
    ids=["first instants", "last instants"],
)
async def test_times_at_the_edges_of_the_range_are_accepted(
    sender: Sender, service_request_time: str, token_activated_time: str
) -> None:
    body = notification(serviceRequestTime=service_request_time, tokenActivatedTime=token_activated_time)

    answer = await sender.alipay.call(TOKEN, json.dumps(body).encode())

    assert result_of(answer) == ("S", "SUCCESS"), answer
