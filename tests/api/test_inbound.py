"""Alipay+ → MPP over HTTP: seed 004's samples, the verification page, and every refusal.

All calls go through ``create_app(settings, client)`` in process, signed with the sandbox
Alipay+'s key; every answer is checked for ``Response-Time`` and a verifying signature.
API calls run in real time on the time-skipping server; order expiry is built from the
server's clock (``env.get_current_time()``), which may be ahead of real time.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from alipayplus import Amount, InquiryPaymentRequest, PayRequest, Signer, format_datetime
from api.pages import form_fields
from sandbox.alipayplus.driver import easy_pay_order, sample_requests
from tests.api.conftest import result_of, set_at
from tests.page_steps import back_to, handed_on, shown_after, status_handed_on
from wallet.ledger import Ledger
from wallet.settings import Settings

from .conftest import AlipayPlusCaller

PAY, INQUIRY = PayRequest.PATH, InquiryPaymentRequest.PATH
SEED_USER = ("852-95303585", "2160220037535020")  # seed 004's sample user (SMS OTP)
PIN_USER = ("852-11112222", "2160220037535021")
PIN = "246810"
PRICE = Amount(currency="IDR", value=5000)
REDIRECT = "https://ac.alipay.com/result?order=42"  # Alipay+'s result page (MPP_REDIRECT_HOSTS)
SAMPLE_EXPIRY = b'"paymentExpiryTime": "2023-09-18T09:47:51+08:00"'
SAMPLE_ORDER_ID = b'"paymentRequestId": "2023091819074101000380025683717"'
_UTC8 = timezone(timedelta(hours=8))


def inquiry_body(payment_request_id: str, settings: Settings) -> bytes:
    return InquiryPaymentRequest(
        acquirer_id="1022188000000000001", psp_id=settings.psp_id, payment_request_id=payment_request_id
    ).to_wire()


async def future_expiry(env: WorkflowEnvironment, minutes: int = 10) -> Any:
    return (await env.get_current_time() + timedelta(minutes=minutes)).astimezone(_UTC8).replace(microsecond=0)


async def new_order(env: WorkflowEnvironment, settings: Settings, login_id: str = PIN_USER[0]) -> PayRequest:
    request = easy_pay_order(f"api-{uuid.uuid4().hex}", login_id, PRICE, settings.psp_id, redirect_url=REDIRECT)
    return request.model_copy(update={"payment_expiry_time": await future_expiry(env)})


async def assert_no_workflow(client: Client, workflow_id: str) -> None:
    with pytest.raises(RPCError) as raised:
        await client.get_workflow_handle(workflow_id).describe()
    assert raised.value.status is RPCStatusCode.NOT_FOUND


# --- seed 004's samples --------------------------------------------------------------------


async def test_seed_evaluation_sample_verbatim(alipay: AlipayPlusCaller) -> None:
    evaluation, _ = sample_requests()

    answer = await alipay.call(PAY, evaluation)

    assert result_of(answer) == ("S", "SUCCESS")
    assert answer["customerId"] == SEED_USER[1]
    assert answer["paymentRequestId"] == "2023091819074101000930025674948"


async def test_an_evaluation_is_answered_without_a_workflow(
    alipay: AlipayPlusCaller, client: Client, database: Ledger
) -> None:
    evaluation, _ = sample_requests()
    postings = database.check().postings

    answers = [await alipay.call(PAY, evaluation) for _ in range(2)]  # a repeat evaluates again

    assert [result_of(answer) for answer in answers] == [("S", "SUCCESS")] * 2
    await assert_no_workflow(client, "evaluation/2023091819074101000930025674948")
    assert database.check().postings == postings  # a read: no money moved


async def test_seed_order_sample_with_future_expiry(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, client: Client, settings: Settings, database: Ledger
) -> None:
    _, sample = sample_requests()
    # The seed's paymentExpiryTime (2023-09-18) is long past: move only that field's string into
    # the future. The verbatim sample shares this paymentRequestId and is tested as expired below,
    # so this copy also gets a fresh paymentRequestId (ids are idempotency keys, never reused).
    payment_request_id = f"seed-{uuid.uuid4().hex}"
    expiry = format_datetime(await future_expiry(env)).encode()
    body = sample.replace(SAMPLE_EXPIRY, b'"paymentExpiryTime": "' + expiry + b'"').replace(
        SAMPLE_ORDER_ID, b'"paymentRequestId": "' + payment_request_id.encode() + b'"'
    )
    assert body != sample and len(body.splitlines()) == len(sample.splitlines())
    balance = database.balance(Ledger.user_account_id(SEED_USER[1]))

    first = await alipay.call(PAY, body)
    again = await alipay.call(PAY, body)
    changed = json.loads(body)
    changed["payToAmount"]["value"] = "51"
    inconsistent = await alipay.call(PAY, json.dumps(changed).encode())

    assert result_of(first) == ("U", "PAYMENT_IN_PROCESS")
    assert first["paymentId"] and first["customerId"] == SEED_USER[1]
    assert first["paymentUrl"] == f"{settings.public_base_url}/easypay/verify/{payment_request_id}/{first['paymentId']}"
    assert result_of(again) == ("U", "PAYMENT_IN_PROCESS")
    assert (again["paymentId"], again["paymentUrl"]) == (first["paymentId"], first["paymentUrl"])
    assert result_of(inconsistent) == ("F", "REPEAT_REQ_INCONSISTENT")
    assert "paymentId" not in inconsistent and "paymentUrl" not in inconsistent
    described = await client.get_workflow_handle(f"pay/{payment_request_id}").describe()
    assert described.status is not None and described.status.name == "RUNNING"  # still waiting for the OTP
    assert database.balance(Ledger.user_account_id(SEED_USER[1])) == balance


async def test_seed_order_sample_verbatim_is_closed(
    alipay: AlipayPlusCaller, settings: Settings, database: Ledger
) -> None:
    _, sample = sample_requests()
    balance = database.balance(Ledger.user_account_id(SEED_USER[1]))

    answer = await alipay.call(PAY, sample)  # paymentExpiryTime 2023-09-18: already past
    inquiry = await alipay.call(INQUIRY, inquiry_body("2023091819074101000380025683717", settings))

    assert result_of(answer) == ("F", "ORDER_IS_CLOSED")
    assert "paymentId" not in answer and "paymentUrl" not in answer
    assert result_of(inquiry) == ("S", "SUCCESS")
    assert (inquiry["paymentResult"]["resultStatus"], inquiry["paymentResult"]["resultCode"]) == (
        "F",
        "ORDER_IS_CLOSED",
    )
    assert inquiry["paymentRequestId"] == "2023091819074101000380025683717"
    assert "paymentId" not in inquiry
    assert database.balance(Ledger.user_account_id(SEED_USER[1])) == balance


# --- the verification page -----------------------------------------------------------------


async def test_pin_verified_on_the_page_debits_once(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, client: Client, settings: Settings, database: Ledger
) -> None:
    request = await new_order(env, settings)
    account = Ledger.user_account_id(PIN_USER[1])
    before = database.balance(account)

    created = await alipay.call(PAY, request.to_wire())
    assert result_of(created) == ("U", "PAYMENT_IN_PROCESS")
    page = urlsplit(created["paymentUrl"]).path
    assert page == f"/easypay/verify/{request.payment_request_id}/{created['paymentId']}"

    shown = await alipay.http.get(page)
    assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/html")
    assert str(PRICE) in shown.text  # "IDR 50.00"
    assert "3 attempts left" in shown.text
    form = form_fields(shown.text)  # the form's token, sent with every post as a browser does

    wrong = await alipay.http.post(page, data={"code": "135791", **form})
    assert back_to(page, wrong)  # 303 back to the page: a reload shows it again, never re-posts
    told = await shown_after(alipay.http, wrong)
    assert "Wrong PIN. 2 attempts left." in told.text and 'role="alert"' in told.text
    assert database.balance(account) == before

    right = await alipay.http.post(page, data={"code": PIN, **form})
    assert back_to(page, right) and "?" not in right.headers["location"]  # final: no notice, our result page
    result = await shown_after(alipay.http, right)
    assert 'data-outcome="success"' in result.text and created["paymentId"] in result.text
    location = handed_on(result) or ""
    assert location.startswith(REDIRECT) and re.search(r"[?&]status=success\b", location)

    inquiry = await alipay.call(INQUIRY, inquiry_body(request.payment_request_id, settings))
    assert result_of(inquiry) == ("S", "SUCCESS")
    assert (inquiry["paymentResult"]["resultStatus"], inquiry["paymentResult"]["resultCode"]) == ("S", "SUCCESS")
    assert inquiry["paymentId"] == created["paymentId"]
    assert inquiry["payToAmount"] == {"currency": "IDR", "value": "5000"}
    assert inquiry["customerId"] == PIN_USER[1] and inquiry["paymentTime"]

    # Typing the PIN again and repeating pay #2 move no more money.
    await client.get_workflow_handle(f"pay/{request.payment_request_id}").result()
    again = await alipay.http.post(page, data={"code": PIN, **form})
    assert back_to(page, again) and status_handed_on(await shown_after(alipay.http, again)) == "success"
    repeated = await alipay.call(PAY, request.to_wire())
    assert result_of(repeated) == ("S", "SUCCESS") and repeated["paymentId"] == created["paymentId"]
    assert database.balance(account) == before - PRICE.value
    assert database.check().ok


async def test_page_with_wrong_payment_id_is_not_found(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings
) -> None:
    request = await new_order(env, settings)
    created = await alipay.call(PAY, request.to_wire())
    assert result_of(created) == ("U", "PAYMENT_IN_PROCESS")
    wrong = f"/easypay/verify/{request.payment_request_id}/{uuid.uuid4().hex}"

    assert (await alipay.http.get(wrong)).status_code == 404
    assert (await alipay.http.post(wrong, data={"code": PIN})).status_code == 403  # no page, so no form token
    assert (
        await alipay.http.get(f"/easypay/verify/unknown-{uuid.uuid4().hex}/{created['paymentId']}")
    ).status_code == 404
    # The guess cost no attempt on the real page.
    assert "3 attempts left" in (await alipay.http.get(urlsplit(created["paymentUrl"]).path)).text


# --- refusals: answered 200, signed, F with the specific code; nothing started or changed ----


def _wire(request: PayRequest) -> dict[str, Any]:
    return json.loads(request.to_wire())


def _edit(
    change: Callable[[dict[str, Any]], object],
) -> Callable[[PayRequest, AlipayPlusCaller], tuple[bytes, dict[str, str]]]:
    """A body with one field broken, correctly signed."""

    def make(request: PayRequest, alipay: AlipayPlusCaller) -> tuple[bytes, dict[str, str]]:
        body = _wire(request)
        change(body)
        raw = json.dumps(body).encode()
        return raw, alipay.peer.signer.headers(PAY, raw)

    return make


def _tampered(request: PayRequest, alipay: AlipayPlusCaller) -> tuple[bytes, dict[str, str]]:
    body = request.to_wire()
    assert body.count(b'"5000"') == 3  # orderAmount, paymentAmount, payToAmount
    return body.replace(b'"5000"', b'"5"'), alipay.peer.signer.headers(PAY, body)


def _unsigned(request: PayRequest, alipay: AlipayPlusCaller) -> tuple[bytes, dict[str, str]]:
    body = request.to_wire()
    headers = alipay.peer.signer.headers(PAY, body)
    del headers["Signature"]
    return body, headers


def _resigned(
    client_id: str | None = None, key_version: str | None = None
) -> Callable[..., tuple[bytes, dict[str, str]]]:
    def make(request: PayRequest, alipay: AlipayPlusCaller) -> tuple[bytes, dict[str, str]]:
        signer = alipay.peer.signer
        other = Signer(client_id or signer.client_id, signer.private_key, key_version or signer.key_version)
        body = request.to_wire()
        return body, other.headers(PAY, body)

    return make


def _other_path(request: PayRequest, alipay: AlipayPlusCaller) -> tuple[bytes, dict[str, str]]:
    body = request.to_wire()
    return body, alipay.peer.signer.headers(INQUIRY, body)


def _not_json(request: PayRequest, alipay: AlipayPlusCaller) -> tuple[bytes, dict[str, str]]:
    body = request.to_wire()[:-7]  # cut off mid-object
    return body, alipay.peer.signer.headers(PAY, body)


REFUSALS: dict[str, tuple[Callable[[PayRequest, AlipayPlusCaller], tuple[bytes, dict[str, str]]], str, str]] = {
    "tampered body": (_tampered, "INVALID_SIGNATURE", ""),
    "no Signature header": (_unsigned, "INVALID_SIGNATURE", "Signature"),
    "wrong Client-Id": (_resigned(client_id="SANDBOX_SOMEONE_ELSE"), "INVALID_CLIENT", "SANDBOX_SOMEONE_ELSE"),
    "unknown keyVersion": (_resigned(key_version="9"), "KEY_NOT_FOUND", "'9'"),
    "signed over another path": (_other_path, "INVALID_SIGNATURE", ""),
    "amount as a number": (_edit(set_at("payToAmount", "value", 50)), "PARAM_ILLEGAL", "payToAmount.value"),
    "amount 1e309": (_edit(set_at("payToAmount", "value", "1e309")), "PARAM_ILLEGAL", "payToAmount.value"),
    "amount -1": (_edit(set_at("paymentAmount", "value", "-1")), "PARAM_ILLEGAL", "paymentAmount.value"),
    "amount 1.5": (_edit(set_at("payToAmount", "value", "1.5")), "PARAM_ILLEGAL", "payToAmount.value"),
    "amount 0": (_edit(set_at("payToAmount", "value", "0")), "PARAM_ILLEGAL", "payToAmount.value"),
    "unknown currency": (_edit(set_at("payToAmount", "currency", "ZZZ")), "PARAM_ILLEGAL", "payToAmount.currency"),
    "no paymentRequestId": (_edit(lambda body: body.pop("paymentRequestId")), "PARAM_ILLEGAL", "paymentRequestId"),
    "foreign pspId": (_edit(set_at("pspId", "1022169999999999999")), "PARAM_ILLEGAL", "pspId"),
    "not JSON": (_not_json, "PARAM_ILLEGAL", "JSON"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_pay_changes_nothing(
    case: str, alipay: AlipayPlusCaller, env: WorkflowEnvironment, client: Client, settings: Settings, database: Ledger
) -> None:
    make, code, named = REFUSALS[case]
    request = await new_order(env, settings)
    body, headers = make(request, alipay)
    postings = database.check().postings

    answer = await alipay.call(PAY, body, headers)

    assert result_of(answer) == ("F", code)
    assert named in answer["result"].get("resultMessage", "")
    assert set(answer) == {"result"}
    await assert_no_workflow(client, f"pay/{request.payment_request_id}")
    await assert_no_workflow(client, f"evaluation/{request.payment_request_id}")
    assert database.check().postings == postings


async def test_refused_inquiry_is_signed_too(alipay: AlipayPlusCaller, settings: Settings) -> None:
    body = inquiry_body(f"api-{uuid.uuid4().hex}", settings)
    answer = await alipay.call(INQUIRY, body.replace(b'"api-', b'"apx-'), alipay.peer.signer.headers(INQUIRY, body))
    assert result_of(answer) == ("F", "INVALID_SIGNATURE")


async def test_body_over_one_mebibyte_is_413(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, client: Client, settings: Settings, database: Ledger
) -> None:
    request = await new_order(env, settings)
    body = _wire(request)
    body["extendInfo"] = "x" * (settings.max_body_bytes + 1)
    raw = json.dumps(body).encode()
    postings = database.check().postings

    response = await alipay.post(PAY, raw)

    assert response.status_code == 413
    await assert_no_workflow(client, f"pay/{request.payment_request_id}")
    assert database.check().postings == postings


async def test_order_for_unknown_user_fails(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, database: Ledger
) -> None:
    request = await new_order(env, settings, login_id="852-00000000")
    postings = database.check().postings

    answer = await alipay.call(PAY, request.to_wire())
    inquiry = await alipay.call(INQUIRY, inquiry_body(request.payment_request_id, settings))

    assert result_of(answer) == ("F", "USER_NOT_EXIST")
    assert "paymentId" not in answer and "paymentUrl" not in answer
    assert (
        inquiry["paymentResult"]["resultStatus"] == "F" and inquiry["paymentResult"]["resultCode"] == "USER_NOT_EXIST"
    )
    assert database.check().postings == postings


async def test_inquiry_for_unknown_payment(alipay: AlipayPlusCaller, client: Client, settings: Settings) -> None:
    payment_request_id = f"api-{uuid.uuid4().hex}"

    answer = await alipay.call(INQUIRY, inquiry_body(payment_request_id, settings))

    assert result_of(answer) == ("F", "ORDER_NOT_EXIST")
    assert set(answer) == {"result"}
    await assert_no_workflow(client, f"pay/{payment_request_id}")
