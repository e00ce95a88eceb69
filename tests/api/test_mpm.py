"""Merchant-presented mode over HTTP (seed 003): applyToken, pay, the confirmation page, the app.

Alipay+'s calls are signed and their answers checked (``AlipayPlusCaller``); the wallet app
is a ``Phone``: its own HTTP client and cookie jar on the same in-process API, signed in by
PIN as a user would be. Payments are paid by the KRW demo user, seed 003's sample payer
(100 JPY quoted at 10 KRW/JPY: 1000 KRW).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import inspect, select, text, update
from sqlmodel import col
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from alipayplus import Amount, ApplyTokenRequest, InquiryPaymentRequest, PayRequest, Result, ResultCode
from api.code_identification import (
    INVALID_CODE_MESSAGE,
    LOCAL_CODE_MESSAGE,
    RETRY_LATER_MESSAGE,
    CodeIdentification,
    CodeServiceUnavailable,
    Verdict,
)
from api.main import create_app
from api.pages import form_fields
from api.routers.mpm import WALLET_HOME, next_location
from api.services import Services
from sandbox.alipayplus.driver import ACQUIRER_ID, apply_token_request, easy_pay_order
from sandbox.code_service import ENTRY_CODE_PREFIX, ORDER_CODE_PREFIX, CodeService
from tests.api.conftest import result_of
from tests.page_steps import back_to
from wallet.ledger import Ledger
from wallet.oauth import Authorizations, TokenLifetimes
from wallet.orders import USER_CANCELLED, PaymentState
from wallet.records import OAuthToken
from wallet.secrets import token_digest
from wallet.settings import CodeSolution, Settings
from wallet.states import PaymentStatus

from .conftest import AlipayPlusCaller, code_service_transport

APPLY_TOKEN, PAY, INQUIRY = ApplyTokenRequest.PATH, PayRequest.PATH, InquiryPaymentRequest.PATH


class User(NamedTuple):
    login_id: str
    customer_id: str


KRW_USER = User("82-1012345678", "2160220037535031")  # seed 003's sample payer
PIN_USER = User("852-11112222", "2160220037535021")
FROZEN_USER = User("852-33334444", "2160220037535022")
PIN = "246810"
ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
MERCHANT_PAGE = "https://merchant.example/paid?order=7"

# Seed 003, step 1.2: the request sample, verbatim (its trailing comma is a documentation typo).
SEED_APPLY_TOKEN = b"""{
"acquirerId":"10221880000000****",
"pspId":"10220880000000****",
"authCode": "663A8FA9D83648EE8AA11FF68298****",
"grantType": "AUTHORIZATION_CODE",
}"""

# Seed 003, step 5: the merchant-presented mode pay request sample, verbatim.
SEED_PAY = b"""{
  "order": {
    "referenceOrderId": "OrderID_010101****",
    "orderDescription": "SHOES",
    "orderAmount": {
      "value": "100",
      "currency": "JPY"
    },
    "merchant": {
      "referenceMerchantId": "M00xxxxx0001",
      "merchantMCC": "1405",
      "merchantName": "UGG",
      "merchantAddress": {
        "region": "JP",
        "city": "xxx"
      },
      "store": {
        "referenceStoreId": "S00xxxx0001",
        "storeName": "UGG-2",
        "storeMCC": "1405"
      }
    }
  },
  "acquirerId": "102218800000000****",
  "pspId": "102217200000000****",
  "paymentRequestId": "201811291907410100070000007****",
  "paymentAmount": {
    "value": "100",
    "currency": "JPY"
  },
  "paymentMethod": {
    "paymentMethodType": "CONNECT_WALLET",
    "paymentMethodId": "281006050000000000125733DAHJ****",
    "customerId": "2160xxxxxxxxxxx1"
  },
  "payToAmount": {
    "value": "1000",
    "currency": "KRW"
  },
  "paymentQuote": {
    "quoteId": "1234567",
    "quoteCurrencyPair": "JPY/KRW",
    "quotePrice": "10.0000"
  },
  "paymentFactor": {
    "isInStorePayment": "true",
    "isCashierPayment": "true"
  }
}"""
SEED_PAY_REQUEST_ID = "201811291907410100070000007****"


# --- helpers: what Alipay+ sends -------------------------------------------------------------


def replace_once(body: bytes, old: str, new: str) -> bytes:
    assert body.count(old.encode()) == 1, old
    return body.replace(old.encode(), new.encode())


def seed_pay(settings: Settings, access_token: str, customer_id: str = KRW_USER.customer_id) -> bytes:
    """Seed 003's pay sample with its masked ids made real: our pspId, the session's token and payer."""
    body = replace_once(SEED_PAY, "102217200000000****", settings.psp_id)
    body = replace_once(body, "281006050000000000125733DAHJ****", access_token)
    return replace_once(body, "2160xxxxxxxxxxx1", customer_id)


def mpm_pay(
    settings: Settings,
    access_token: str,
    customer_id: str = KRW_USER.customer_id,
    *,
    redirect_url: str | None = None,
) -> dict[str, Any]:
    """The seed's pay as a dict for a new order (a fresh paymentRequestId), to edit and send."""
    body: dict[str, Any] = json.loads(seed_pay(settings, access_token, customer_id))
    body["paymentRequestId"] = f"mpm-{uuid.uuid4().hex}"
    if redirect_url:
        body["paymentRedirectUrl"] = redirect_url
    return body


def wire(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def apply_token_body(settings: Settings, *, auth_code: str | None = None, refresh_token: str | None = None) -> bytes:
    return apply_token_request(auth_code=auth_code, refresh_token=refresh_token, psp_id=settings.psp_id).to_wire()


def inquiry_body(settings: Settings, payment_request_id: str) -> bytes:
    return InquiryPaymentRequest(
        acquirer_id=ACQUIRER_ID, psp_id=settings.psp_id, payment_request_id=payment_request_id
    ).to_wire()


def expiry(answer: dict[str, Any], field: str) -> datetime:
    parsed = datetime.fromisoformat(answer[field])
    assert parsed.tzinfo is not None, answer[field]
    return parsed


def status_shown(page: httpx.Response) -> str:
    """The outcome our result page states (``<p id="status">``)."""
    found = re.search(r'<p id="status"[^>]*>\s*(\w+)\s*</p>', page.text)
    assert found, page.text
    return found.group(1)


def link_shown(page: httpx.Response) -> str:
    """Where our result page's link leads (``<a id="next">``)."""
    found = re.search(r'<a id="next" href="([^"]*)"', page.text)
    assert found, page.text
    return html.unescape(found.group(1))


async def assert_no_workflow(client: Client, workflow_id: str) -> None:
    with pytest.raises(RPCError) as raised:
        await client.get_workflow_handle(workflow_id).describe()
    assert raised.value.status is RPCStatusCode.NOT_FOUND


# --- helpers: the wallet app --------------------------------------------------------------


@dataclass
class Phone:
    """The wallet app (and its web view) on one phone: its own cookie jar."""

    http: httpx.AsyncClient
    session_token: str = ""
    forms: dict[str, dict[str, str]] = field(default_factory=dict)  # page → its form's hidden fields (token)
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def login(self, user: User, pin: str = PIN) -> httpx.Response:
        response = await self.http.post("/app/v1/login", json={"loginId": user.login_id, "pin": pin})
        if response.status_code == 200:
            self.session_token = response.json()["sessionToken"]
        return response

    async def auth_code(self) -> str:
        """getAuthCode from Alipay+'s client SDK, answered by our server (seed 003, step 1.1)."""
        response = await self.http.post("/app/v1/authCode", json={"scopes": "BASE_USER_INFO"})
        assert response.status_code == 200, response.text
        code: str = response.json()["authCode"]
        return code

    async def identify(self, code_value: str) -> httpx.Response:
        return await self.http.post("/app/v1/codes/identify", json={"codeValue": code_value})

    async def open(self, page: str, user_agent: str = ANDROID) -> httpx.Response:
        shown = await self.http.get(page, headers={"User-Agent": user_agent})
        if fields := form_fields(shown.text):
            self.forms[page] = fields
        return shown

    async def press(self, page: str, action: str, user_agent: str = ANDROID) -> httpx.Response:
        """A button on the page as last shown (opened first if it never was), with its form's token."""
        async with self._opening:
            if page not in self.forms:
                await self.open(page, user_agent)
        data = {**self.forms.get(page, {}), "action": action}
        pressed = await self.http.post(page, data=data, headers={"User-Agent": user_agent})
        if back_to(page, pressed):  # our result page: the post says 303 back to the page, as the web view follows
            return await self.http.get(pressed.headers["location"], headers={"User-Agent": user_agent})
        return pressed


Phones = Callable[[], Phone]


@pytest.fixture
async def phones(app: FastAPI, settings: Settings) -> AsyncIterator[Phones]:
    """New phones on the API in process; each keeps its own session cookie."""
    async with AsyncExitStack() as stack:

        def new_phone() -> Phone:
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url)
            stack.push_async_callback(http.aclose)
            return Phone(http)

        yield new_phone


async def signed_in(phones: Phones, user: User) -> Phone:
    phone = phones()
    response = await phone.login(user)
    assert response.status_code == 200, response.text
    return phone


@pytest.fixture
def services(app: FastAPI) -> Services:
    return app.state.services  # type: ignore[no-any-return]


async def token_pair(alipay: AlipayPlusCaller, services: Services, settings: Settings, user: User) -> dict[str, Any]:
    """A token pair Alipay+ got for ``user`` through applyToken (the authCode issued as the app would)."""
    code = services.authorizations.issue_auth_code(user.customer_id, "BASE_USER_INFO")
    answer = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=code.auth_code))
    assert result_of(answer) == ("S", "SUCCESS"), answer
    return answer


async def access_token(alipay: AlipayPlusCaller, services: Services, settings: Settings, user: User) -> str:
    token: str = (await token_pair(alipay, services, settings, user))["accessToken"]
    return token


@dataclass
class Order:
    payment_request_id: str
    payment_id: str
    page: str  # the confirmation page's path


async def ordered(alipay: AlipayPlusCaller, settings: Settings, body: dict[str, Any]) -> Order:
    """pay for an MPM order: in process, the user sent to our confirmation page."""
    answer = await alipay.call(PAY, wire(body))
    assert result_of(answer) == ("U", "PAYMENT_IN_PROCESS"), answer
    payment_request_id, payment_id = body["paymentRequestId"], answer["paymentId"]
    page = f"/mpm/pay/{payment_request_id}/{payment_id}"
    assert answer["paymentUrl"] == f"{settings.public_base_url}{page}"
    return Order(payment_request_id, payment_id, page)


def krw_balance(database: Ledger) -> int:
    return database.balance(Ledger.user_account_id(KRW_USER.customer_id))


# --- applyToken ----------------------------------------------------------------------------


async def test_an_auth_code_from_the_app_is_exchanged_for_a_token_pair(
    alipay: AlipayPlusCaller, phones: Phones, settings: Settings
) -> None:
    phone = await signed_in(phones, PIN_USER)
    auth_code = await phone.auth_code()
    asked_at = datetime.now(UTC)

    answer = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=auth_code))

    assert result_of(answer) == ("S", "SUCCESS")
    assert len(auth_code) <= 32
    assert 0 < len(answer["accessToken"]) <= 128 and 0 < len(answer["refreshToken"]) <= 128
    assert answer["accessToken"] != answer["refreshToken"]
    assert expiry(answer, "accessTokenExpiryTime") > asked_at + timedelta(minutes=10)
    assert expiry(answer, "refreshTokenExpiryTime") > asked_at + timedelta(days=548)  # more than 1.5 years
    assert answer["customerId"] == PIN_USER.customer_id


async def test_an_auth_code_works_only_once(alipay: AlipayPlusCaller, phones: Phones, settings: Settings) -> None:
    auth_code = await (await signed_in(phones, PIN_USER)).auth_code()
    body = apply_token_body(settings, auth_code=auth_code)

    first = await alipay.call(APPLY_TOKEN, body)
    again = await alipay.call(APPLY_TOKEN, body)

    assert result_of(first) == ("S", "SUCCESS")
    assert result_of(again) == ("F", "USED_CODE")
    assert set(again) == {"result"}


async def test_an_auth_code_we_never_issued_is_invalid(alipay: AlipayPlusCaller, settings: Settings) -> None:
    answer = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=uuid.uuid4().hex.upper()))

    assert result_of(answer) == ("F", "INVALID_CODE")
    assert set(answer) == {"result"}


async def test_an_expired_auth_code_is_refused(
    alipay: AlipayPlusCaller, services: Services, settings: Settings
) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    back_then = Authorizations(
        services.records,
        settings.secret_key,
        TokenLifetimes(settings.auth_code_ttl, settings.mpm_access_token_ttl, settings.mpm_refresh_token_ttl),
        clock=lambda: an_hour_ago,
    )
    code = back_then.issue_auth_code(PIN_USER.customer_id, "BASE_USER_INFO")  # expired 55 minutes ago

    answer = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=code.auth_code))

    assert result_of(answer) == ("F", "EXPIRED_CODE")


async def test_a_refresh_gives_a_new_pair_and_retires_the_old_access_token(
    alipay: AlipayPlusCaller, services: Services, settings: Settings
) -> None:
    old = await token_pair(alipay, services, settings, KRW_USER)

    new = await alipay.call(APPLY_TOKEN, apply_token_body(settings, refresh_token=old["refreshToken"]))
    with_old = await alipay.call(PAY, wire(mpm_pay(settings, old["accessToken"])))
    with_new = await alipay.call(PAY, wire(mpm_pay(settings, new["accessToken"])))

    assert result_of(new) == ("S", "SUCCESS") and new["customerId"] == KRW_USER.customer_id
    assert new["accessToken"] != old["accessToken"] and new["refreshToken"] != old["refreshToken"]
    assert result_of(with_old) == ("F", "INVALID_TOKEN") and "paymentUrl" not in with_old
    assert result_of(with_new) == ("U", "PAYMENT_IN_PROCESS")


async def test_the_same_refresh_again_within_five_minutes_gets_the_same_new_pair(
    alipay: AlipayPlusCaller, services: Services, settings: Settings
) -> None:
    old = await token_pair(alipay, services, settings, PIN_USER)
    body = apply_token_body(settings, refresh_token=old["refreshToken"])

    first = await alipay.call(APPLY_TOKEN, body)
    replayed = await alipay.call(APPLY_TOKEN, body)

    assert result_of(first) == ("S", "SUCCESS")
    assert replayed == first  # tokens, expiry times, customerId


async def test_a_replay_after_the_new_pair_was_refreshed_in_turn_is_invalid(
    alipay: AlipayPlusCaller, services: Services, settings: Settings
) -> None:
    old = await token_pair(alipay, services, settings, PIN_USER)
    body = apply_token_body(settings, refresh_token=old["refreshToken"])
    first = await alipay.call(APPLY_TOKEN, body)
    second = await alipay.call(APPLY_TOKEN, apply_token_body(settings, refresh_token=first["refreshToken"]))

    replayed = await alipay.call(APPLY_TOKEN, body)  # within five minutes, but its pair is retired too

    assert result_of(second) == ("S", "SUCCESS")
    assert result_of(replayed) == ("F", "INVALID_REFRESH_TOKEN")


async def test_the_same_refresh_after_five_minutes_is_invalid(
    alipay: AlipayPlusCaller, services: Services, settings: Settings
) -> None:
    old = await token_pair(alipay, services, settings, PIN_USER)
    body = apply_token_body(settings, refresh_token=old["refreshToken"])
    first = await alipay.call(APPLY_TOKEN, body)
    with services.records.begin() as connection:  # the refresh happened six minutes ago
        connection.execute(
            update(OAuthToken)
            .where(col(OAuthToken.refresh_token_digest) == token_digest(old["refreshToken"]))
            .values(retired_at=datetime.now(UTC) - timedelta(minutes=6))
        )

    late = await alipay.call(APPLY_TOKEN, body)
    successor = await alipay.call(APPLY_TOKEN, apply_token_body(settings, refresh_token=first["refreshToken"]))

    assert result_of(late) == ("F", "INVALID_REFRESH_TOKEN") and set(late) == {"result"}
    assert result_of(successor) == ("S", "SUCCESS")  # the pair it was swapped for still refreshes


async def test_a_refresh_token_we_never_issued_is_invalid(alipay: AlipayPlusCaller, settings: Settings) -> None:
    answer = await alipay.call(APPLY_TOKEN, apply_token_body(settings, refresh_token=f"RT{uuid.uuid4().hex}"))

    assert result_of(answer) == ("F", "INVALID_REFRESH_TOKEN")


async def test_an_expired_refresh_token_is_refused(
    alipay: AlipayPlusCaller, services: Services, settings: Settings
) -> None:
    old = await token_pair(alipay, services, settings, PIN_USER)
    with services.records.begin() as connection:  # its two years have passed
        connection.execute(
            update(OAuthToken)
            .where(col(OAuthToken.refresh_token_digest) == token_digest(old["refreshToken"]))
            .values(refresh_token_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    answer = await alipay.call(APPLY_TOKEN, apply_token_body(settings, refresh_token=old["refreshToken"]))

    assert result_of(answer) == ("F", "EXPIRED_REFRESH_TOKEN")


@pytest.mark.parametrize(
    ("grant_type", "field"), [("AUTHORIZATION_CODE", "authCode"), ("REFRESH_TOKEN", "refreshToken")]
)
async def test_a_grant_without_its_credential_is_param_illegal_naming_the_field(
    alipay: AlipayPlusCaller, settings: Settings, grant_type: str, field: str
) -> None:
    body = {"pspId": settings.psp_id, "acquirerId": "2052666000000000", "grantType": grant_type}

    answer = await alipay.call(APPLY_TOKEN, wire(body))

    assert result_of(answer) == ("F", "PARAM_ILLEGAL")
    assert field in answer["result"]["resultMessage"]


async def test_a_tampered_apply_token_is_refused_and_leaves_the_auth_code_usable(
    alipay: AlipayPlusCaller, phones: Phones, settings: Settings
) -> None:
    auth_code = await (await signed_in(phones, PIN_USER)).auth_code()
    body = apply_token_body(settings, auth_code=auth_code)
    signed_for_another = alipay.peer.signer.headers(APPLY_TOKEN, apply_token_body(settings, auth_code="0" * 32))

    refused = await alipay.call(APPLY_TOKEN, body, signed_for_another)
    genuine = await alipay.call(APPLY_TOKEN, body)

    assert result_of(refused) == ("F", "INVALID_SIGNATURE") and set(refused) == {"result"}
    assert result_of(genuine) == ("S", "SUCCESS")


async def test_the_database_holds_no_plain_secret(
    alipay: AlipayPlusCaller, phones: Phones, services: Services, settings: Settings
) -> None:
    phone = await signed_in(phones, PIN_USER)
    auth_code = await phone.auth_code()
    pair = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=auth_code))
    refreshed = await alipay.call(APPLY_TOKEN, apply_token_body(settings, refresh_token=pair["refreshToken"]))
    secrets = [
        phone.session_token,
        auth_code,
        pair["accessToken"],
        pair["refreshToken"],
        refreshed["accessToken"],
        refreshed["refreshToken"],
    ]
    assert all(secrets)

    with services.records.connect() as connection:
        stored = " ".join(
            str(value)
            for table in inspect(connection).get_table_names()
            for row in connection.execute(text(f'SELECT * FROM "{table}"'))
            for value in row
        )
        digests = set(connection.execute(select(col(OAuthToken.access_token_digest))).scalars())

    assert [secret for secret in secrets if secret in stored] == []
    assert token_digest(refreshed["accessToken"]) in digests  # the pair is there, as its digest


async def test_the_seed_apply_token_sample_verbatim_is_param_illegal(alipay: AlipayPlusCaller) -> None:
    answer = await alipay.call(APPLY_TOKEN, SEED_APPLY_TOKEN)  # its trailing comma is not JSON

    assert result_of(answer) == ("F", "PARAM_ILLEGAL")
    assert "JSON" in answer["result"]["resultMessage"]
    assert set(answer) == {"result"}


async def test_the_seed_apply_token_sample_repaired_answers_as_the_seed_response(
    alipay: AlipayPlusCaller, phones: Phones, settings: Settings
) -> None:
    auth_code = await (await signed_in(phones, KRW_USER)).auth_code()
    repaired = replace_once(SEED_APPLY_TOKEN, '"AUTHORIZATION_CODE",\n}', '"AUTHORIZATION_CODE"\n}')
    foreign_psp = replace_once(repaired, "663A8FA9D83648EE8AA11FF68298****", auth_code)
    ours = replace_once(foreign_psp, "10220880000000****", settings.psp_id)

    refused = await alipay.call(APPLY_TOKEN, foreign_psp)  # the masked pspId is not ours
    answer = await alipay.call(APPLY_TOKEN, ours)

    assert result_of(refused) == ("F", "PARAM_ILLEGAL") and "pspId" in refused["result"]["resultMessage"]
    assert set(answer) == {
        "result",
        "accessToken",
        "accessTokenExpiryTime",
        "refreshToken",
        "refreshTokenExpiryTime",
        "customerId",
    }
    assert answer["result"] == {"resultCode": "SUCCESS", "resultMessage": "Success", "resultStatus": "S"}
    time_format = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"  # as "2019-06-06T12:12:12+08:00"
    assert re.fullmatch(time_format, answer["accessTokenExpiryTime"])
    assert re.fullmatch(time_format, answer["refreshTokenExpiryTime"])
    assert answer["customerId"] == KRW_USER.customer_id


# --- pay: merchant-presented mode ----------------------------------------------------------


async def test_the_seed_pay_sample_is_paid_once_the_user_confirms(
    alipay: AlipayPlusCaller, phones: Phones, settings: Settings, database: Ledger
) -> None:
    phone = await signed_in(phones, KRW_USER)
    pair = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=await phone.auth_code()))
    body = seed_pay(settings, pair["accessToken"])
    before = krw_balance(database)

    created = await alipay.call(PAY, body)

    assert result_of(created) == ("U", "PAYMENT_IN_PROCESS")
    page = f"/mpm/pay/{SEED_PAY_REQUEST_ID}/{created['paymentId']}"
    assert created["paymentUrl"] == f"{settings.public_base_url}{page}"
    assert created["customerId"] == KRW_USER.customer_id

    shown = await phone.open(page)
    assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/html")
    assert "UGG" in shown.text and "KRW 1,000" in shown.text and "JPY 100" in shown.text
    assert krw_balance(database) == before

    confirmed = await phone.press(page, "confirm")
    assert confirmed.status_code == 200  # no paymentRedirectUrl: our result page
    assert status_shown(confirmed) == "success"

    inquiry = await alipay.call(INQUIRY, inquiry_body(settings, SEED_PAY_REQUEST_ID))
    assert result_of(inquiry) == ("S", "SUCCESS")
    assert result_of(inquiry, "paymentResult") == ("S", "SUCCESS")
    assert inquiry["paymentId"] == created["paymentId"] and inquiry["customerId"] == KRW_USER.customer_id
    assert inquiry["payToAmount"] == {"currency": "KRW", "value": "1000"}
    assert inquiry["paymentAmount"] == {"currency": "JPY", "value": "100"}
    assert krw_balance(database) == before - 1000

    # The form sent again and pay repeated move no more money.
    again = await phone.press(page, "confirm")
    repeated = await alipay.call(PAY, body)
    assert again.status_code == 200 and status_shown(again) == "success"
    assert result_of(repeated) == ("S", "SUCCESS") and repeated["paymentId"] == created["paymentId"]
    assert krw_balance(database) == before - 1000
    assert database.check().ok


@pytest.mark.parametrize("field", ["paymentAmount", "payToAmount"])
async def test_a_zero_amount_is_param_illegal(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, client: Client, field: str
) -> None:
    body = mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER))
    body[field]["value"] = "0"

    answer = await alipay.call(PAY, wire(body))

    assert result_of(answer) == ("F", "PARAM_ILLEGAL") and f"{field}.value" in answer["result"]["resultMessage"]
    await assert_no_workflow(client, f"pay/{body['paymentRequestId']}")


@pytest.mark.parametrize("is_cashier_payment", [None, "false"], ids=["missing", "false"])
async def test_in_store_without_cashier_payment_is_param_illegal(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, client: Client, is_cashier_payment: str | None
) -> None:
    body = mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER))
    if is_cashier_payment is None:
        del body["paymentFactor"]["isCashierPayment"]
    else:
        body["paymentFactor"]["isCashierPayment"] = is_cashier_payment

    answer = await alipay.call(PAY, wire(body))

    assert result_of(answer) == ("F", "PARAM_ILLEGAL")
    assert "paymentFactor.isCashierPayment" in answer["result"]["resultMessage"]
    await assert_no_workflow(client, f"pay/{body['paymentRequestId']}")


async def test_a_frozen_payer_is_refused_as_abnormal(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, database: Ledger
) -> None:
    token = await access_token(alipay, services, settings, FROZEN_USER)
    body = mpm_pay(settings, token, FROZEN_USER.customer_id)
    postings = database.check().postings

    answer = await alipay.call(PAY, wire(body))
    inquiry = await alipay.call(INQUIRY, inquiry_body(settings, body["paymentRequestId"]))

    assert result_of(answer) == ("F", "USER_STATUS_ABNORMAL")
    assert "paymentUrl" not in answer and "paymentId" not in answer
    assert result_of(inquiry, "paymentResult") == ("F", "USER_STATUS_ABNORMAL")
    assert database.check().postings == postings


async def test_a_token_of_another_customer_is_invalid(
    alipay: AlipayPlusCaller, services: Services, settings: Settings
) -> None:
    token = await access_token(alipay, services, settings, PIN_USER)

    answer = await alipay.call(PAY, wire(mpm_pay(settings, token, KRW_USER.customer_id)))

    assert result_of(answer) == ("F", "INVALID_TOKEN") and "paymentUrl" not in answer


async def test_a_repeated_payment_request_id_with_another_amount_is_inconsistent(
    alipay: AlipayPlusCaller, services: Services, settings: Settings
) -> None:
    body = mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER))
    first = await alipay.call(PAY, wire(body))
    body["payToAmount"]["value"] = "999"

    changed = await alipay.call(PAY, wire(body))
    inquiry = await alipay.call(INQUIRY, inquiry_body(settings, body["paymentRequestId"]))

    assert result_of(first) == ("U", "PAYMENT_IN_PROCESS")
    assert result_of(changed) == ("F", "REPEAT_REQ_INCONSISTENT")
    assert "paymentId" not in changed and "paymentUrl" not in changed
    assert result_of(inquiry, "paymentResult") == ("U", "PAYMENT_IN_PROCESS")
    assert inquiry["payToAmount"] == {"currency": "KRW", "value": "1000"}  # the order is as first sent


@pytest.mark.parametrize("currency", ["JPY", "USD", "EUR", "KWD", "THB", "XOF"])
async def test_the_merchant_may_charge_in_any_iso_4217_currency(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, currency: str
) -> None:
    body = mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER))
    body["order"]["orderAmount"]["currency"] = body["paymentAmount"]["currency"] = currency
    body["paymentQuote"]["quoteCurrencyPair"] = f"{currency}/KRW"

    answer = await alipay.call(PAY, wire(body))

    assert result_of(answer) == ("U", "PAYMENT_IN_PROCESS") and answer["paymentUrl"]


# --- the confirmation page -----------------------------------------------------------------


async def test_the_page_asks_to_sign_in_first(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, phones: Phones, database: Ledger
) -> None:
    order = await ordered(alipay, settings, mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER)))
    before = krw_balance(database)
    stranger = phones()

    shown = await stranger.open(order.page)
    pressed = await stranger.press(order.page, "confirm")

    assert shown.status_code == pressed.status_code == 401
    assert "Sign in" in shown.text
    assert krw_balance(database) == before


async def test_the_page_is_not_found_for_another_customer(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, phones: Phones, database: Ledger
) -> None:
    order = await ordered(alipay, settings, mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER)))
    before = krw_balance(database)
    someone_else = await signed_in(phones, PIN_USER)

    shown = await someone_else.open(order.page)
    pressed = await someone_else.press(order.page, "confirm")
    inquiry = await alipay.call(INQUIRY, inquiry_body(settings, order.payment_request_id))

    assert shown.status_code == 404
    assert pressed.status_code == 403  # no page shown to them, so no form token: refused before the lookup
    assert result_of(inquiry, "paymentResult") == ("U", "PAYMENT_IN_PROCESS")
    assert krw_balance(database) == before


async def test_the_page_is_not_found_with_a_wrong_payment_id(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, phones: Phones
) -> None:
    order = await ordered(alipay, settings, mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER)))
    payer = await signed_in(phones, KRW_USER)

    guessed = await payer.open(f"/mpm/pay/{order.payment_request_id}/{uuid.uuid4().hex}")
    unknown = await payer.open(f"/mpm/pay/mpm-{uuid.uuid4().hex}/{order.payment_id}")

    assert guessed.status_code == unknown.status_code == 404
    assert (await payer.open(order.page)).status_code == 200


async def test_an_easy_pay_payment_has_no_mpm_page(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, phones: Phones
) -> None:
    request = easy_pay_order(
        f"ep-{uuid.uuid4().hex}", PIN_USER.login_id, Amount(currency="IDR", value=5000), settings.psp_id
    )
    request = request.model_copy(update={"payment_expiry_time": await env.get_current_time() + timedelta(minutes=10)})
    created = await alipay.call(PAY, request.to_wire())
    assert result_of(created) == ("U", "PAYMENT_IN_PROCESS")
    payer = await signed_in(phones, PIN_USER)

    shown = await payer.open(f"/mpm/pay/{request.payment_request_id}/{created['paymentId']}")

    assert shown.status_code == 404


async def test_cancel_on_the_page_closes_the_order_and_says_cancelled(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, phones: Phones, database: Ledger
) -> None:
    body = mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER), redirect_url=MERCHANT_PAGE)
    order = await ordered(alipay, settings, body)
    payer = await signed_in(phones, KRW_USER)
    before = krw_balance(database)

    cancelled = await payer.press(order.page, "cancel")
    inquiry = await alipay.call(INQUIRY, inquiry_body(settings, order.payment_request_id))

    assert cancelled.status_code == 200 and status_shown(cancelled) == "cancelled"
    assert result_of(inquiry, "paymentResult") == ("F", "ORDER_IS_CLOSED")
    assert inquiry["paymentResult"]["resultMessage"] == USER_CANCELLED
    assert krw_balance(database) == before


async def test_confirm_tapped_twice_shows_the_payment_once_paid(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, phones: Phones, database: Ledger
) -> None:
    order = await ordered(alipay, settings, mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER)))
    payer = await signed_in(phones, KRW_USER)
    before = krw_balance(database)

    taps = await asyncio.gather(payer.press(order.page, "confirm"), payer.press(order.page, "confirm"))

    assert [(tap.status_code, status_shown(tap)) for tap in taps] == [(200, "success"), (200, "success")]
    assert krw_balance(database) == before - 1000


@pytest.mark.parametrize(
    ("user_agent", "redirect_url", "way_back"),
    [
        (ANDROID, MERCHANT_PAGE, MERCHANT_PAGE),  # the optional way back to the merchant's WAP page
        (IPHONE, MERCHANT_PAGE, WALLET_HOME),  # not on iOS
        (ANDROID, "merchantapp://result", WALLET_HOME),  # scan-to-pay: never back into a merchant app
        (ANDROID, "javascript:alert(document.domain)", WALLET_HOME),  # never a script on our origin
        (ANDROID, None, WALLET_HOME),
    ],
    ids=["android-https", "iphone-https", "app-scheme", "script", "no-redirect-url"],
)
async def test_after_cancelling_the_result_page_links_back_only_where_the_seed_allows(
    alipay: AlipayPlusCaller,
    services: Services,
    settings: Settings,
    phones: Phones,
    user_agent: str,
    redirect_url: str | None,
    way_back: str,
) -> None:
    body = mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER), redirect_url=redirect_url)
    order = await ordered(alipay, settings, body)
    payer = await signed_in(phones, KRW_USER)

    cancelled = await payer.press(order.page, "cancel", user_agent)

    assert cancelled.status_code == 200 and status_shown(cancelled) == "cancelled"
    assert link_shown(cancelled) == way_back


@pytest.mark.parametrize(
    ("user_agent", "redirect_url", "goes_to"),
    [
        (ANDROID, MERCHANT_PAGE, MERCHANT_PAGE),
        (ANDROID, "http://merchant.example/paid", "http://merchant.example/paid"),
        (IPHONE, MERCHANT_PAGE, None),  # iOS: no merchant WAP page, our result page instead
        (ANDROID, "merchantapp://result", WALLET_HOME),  # scan-to-pay: never back into a merchant app
        (IPHONE, "merchantapp://result", WALLET_HOME),
        (ANDROID, None, None),  # no paymentRedirectUrl: our result page
    ],
    ids=["android-https", "android-http", "iphone-https", "android-app", "iphone-app", "no-redirect-url"],
)
async def test_after_paying_the_user_goes_where_the_seed_says(
    alipay: AlipayPlusCaller,
    services: Services,
    settings: Settings,
    phones: Phones,
    user_agent: str,
    redirect_url: str | None,
    goes_to: str | None,
) -> None:
    body = mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER), redirect_url=redirect_url)
    order = await ordered(alipay, settings, body)
    payer = await signed_in(phones, KRW_USER)

    confirmed = await payer.press(order.page, "confirm", user_agent)

    if goes_to is None:
        assert confirmed.status_code == 200 and status_shown(confirmed) == "success"
    else:
        assert confirmed.status_code == 303 and confirmed.headers["location"] == goes_to
    inquiry = await alipay.call(INQUIRY, inquiry_body(settings, order.payment_request_id))
    assert result_of(inquiry, "paymentResult") == ("S", "SUCCESS")


def final_state(status: PaymentStatus, redirect_url: str | None, *, in_store_payment: bool = True) -> PaymentState:
    code = {PaymentStatus.SUCCESS: ResultCode.SUCCESS, PaymentStatus.CLOSED: ResultCode.ORDER_IS_CLOSED}
    return PaymentState(
        payment_request_id="mpm-1",
        payment_id="p-1",
        status=status,
        payment_result=Result.of(code.get(status, ResultCode.USER_BALANCE_NOT_ENOUGH)),
        customer_id=KRW_USER.customer_id,
        payment_time=None,
        payment_amount=Amount(currency="JPY", value=100),
        pay_to_amount=Amount(currency="KRW", value=1000),
        merchant_name="UGG",
        order_description="SHOES",
        expires_at=datetime.now(UTC),
        redirect_url=redirect_url,
        product="MPM",
        in_store_payment=in_store_payment,
    )


@pytest.mark.parametrize(
    ("state", "user_agent", "goes_to"),
    [
        (final_state(PaymentStatus.SUCCESS, MERCHANT_PAGE), ANDROID, MERCHANT_PAGE),
        (final_state(PaymentStatus.SUCCESS, MERCHANT_PAGE), "curl/8.0", MERCHANT_PAGE),
        (final_state(PaymentStatus.SUCCESS, MERCHANT_PAGE), IPHONE, None),
        (final_state(PaymentStatus.SUCCESS, "http://merchant.example/"), "Mozilla/5.0 (iPad; CPU OS 17_4)", None),
        (final_state(PaymentStatus.SUCCESS, "merchantapp://result"), IPHONE, WALLET_HOME),
        (
            final_state(PaymentStatus.SUCCESS, "merchantapp://result", in_store_payment=False),
            ANDROID,
            "merchantapp://result",
        ),
        (final_state(PaymentStatus.SUCCESS, None), ANDROID, None),
        (final_state(PaymentStatus.FAIL, MERCHANT_PAGE), ANDROID, None),
        (final_state(PaymentStatus.CLOSED, MERCHANT_PAGE), ANDROID, None),
    ],
    ids=[
        "paid, https, android",
        "paid, https, other device",
        "paid, https, iphone",
        "paid, http, ipad",
        "paid, app scheme, scan-to-pay",
        "paid, app scheme, not in store",
        "paid, no redirect url",
        "failed",
        "closed",
    ],
)
def test_next_location_follows_the_redirect_rules(state: PaymentState, user_agent: str, goes_to: str | None) -> None:
    assert next_location(state, user_agent) == goes_to


# --- the wallet app's API ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login_id", "pin"), [(KRW_USER.login_id, "135791"), ("82-0000000000", PIN)], ids=["wrong PIN", "unknown login"]
)
async def test_login_refuses_a_wrong_login_or_pin_alike(phones: Phones, login_id: str, pin: str) -> None:
    phone = phones()

    response = await phone.login(User(login_id, ""), pin)

    assert response.status_code == 401 and response.json()["detail"] == "Wrong login or PIN."
    assert "mpp_session" not in phone.http.cookies


async def test_login_gives_a_session_for_the_user(phones: Phones) -> None:
    phone = phones()

    response = await phone.login(KRW_USER)

    assert response.status_code == 200
    assert response.json()["customerId"] == KRW_USER.customer_id
    assert phone.http.cookies["mpp_session"] == phone.session_token


async def test_an_auth_code_needs_a_session(phones: Phones) -> None:
    response = await phones().http.post("/app/v1/authCode", json={})

    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


async def test_logout_revokes_the_session(phones: Phones) -> None:
    token = (await signed_in(phones, PIN_USER)).session_token
    app_without_cookies = phones()
    bearer = {"Authorization": f"Bearer {token}"}

    before = await app_without_cookies.http.post("/app/v1/authCode", json={}, headers=bearer)
    logout = await app_without_cookies.http.post("/app/v1/logout", headers=bearer)
    after = await app_without_cookies.http.post("/app/v1/authCode", json={}, headers=bearer)

    assert before.status_code == 200 and len(before.json()["authCode"]) == 32
    assert logout.status_code == 204
    assert after.status_code == 401


async def test_code_identification_needs_a_session(phones: Phones, code_service: CodeService) -> None:
    calls = code_service.identify_calls

    response = await phones().identify(f"{ORDER_CODE_PREFIX}xyz")

    assert response.status_code == 401 and code_service.identify_calls == calls


@pytest.mark.parametrize(
    ("code_value", "action"),
    [(f"{ORDER_CODE_PREFIX}xyz", "DECODE"), (f"{ENTRY_CODE_PREFIX}store-1", "OPEN_URL")],
    ids=["order code", "entry code"],
)
async def test_an_alipayplus_code_goes_to_the_client_sdk(
    phones: Phones, code_service: CodeService, settings: Settings, code_value: str, action: str
) -> None:
    phone = await signed_in(phones, PIN_USER)

    response = await phone.identify(code_value)

    assert response.status_code == 200
    verdict = response.json()
    assert verdict["verdict"] == "ALIPAY_PLUS" and verdict["postCodeMatchAction"] == action
    assert verdict["acDecodeConfig"]  # passed on to the client SDK as the server SDK gave it
    asked = code_service.identified[-1]
    assert asked.code_value == code_value
    assert PIN_USER.customer_id not in asked.open_id  # a keyed hash, never our customer id


async def test_an_unknown_code_is_invalid_with_the_message_for_the_user(phones: Phones) -> None:
    phone = await signed_in(phones, PIN_USER)

    verdict = (await phone.identify("https://shop.example/menu?table=4")).json()

    assert (verdict["verdict"], verdict["message"]) == ("INVALID", INVALID_CODE_MESSAGE)


async def test_our_own_code_is_handled_locally_without_asking_the_sdk(
    phones: Phones, code_service: CodeService
) -> None:
    phone = await signed_in(phones, PIN_USER)
    calls = code_service.identify_calls

    verdict = (await phone.identify("mppwallet://pay?merchant=42")).json()

    assert (verdict["verdict"], verdict["message"]) == ("LOCAL", LOCAL_CODE_MESSAGE)
    assert code_service.identify_calls == calls


async def test_an_unsure_sdk_is_asked_again(phones: Phones, code_service: CodeService) -> None:
    phone = await signed_in(phones, PIN_USER)
    code_service.script_identify(["U", "U"])
    calls = code_service.identify_calls

    verdict = (await phone.identify(f"{ORDER_CODE_PREFIX}xyz")).json()

    assert verdict["verdict"] == "ALIPAY_PLUS" and verdict["postCodeMatchAction"] == "DECODE"
    assert code_service.identify_calls == calls + 3


async def test_an_sdk_unsure_every_time_means_retry_later(
    phones: Phones, code_service: CodeService, settings: Settings
) -> None:
    phone = await signed_in(phones, PIN_USER)
    code_service.script_identify(["U"] * settings.code_identify_attempts)
    calls = code_service.identify_calls

    verdict = (await phone.identify(f"{ORDER_CODE_PREFIX}xyz")).json()

    assert (verdict["verdict"], verdict["message"]) == ("RETRY_LATER", RETRY_LATER_MESSAGE)
    assert code_service.identify_calls == calls + settings.code_identify_attempts


def test_the_api_initialised_the_server_sdk_at_start_up(app: FastAPI, code_service: CodeService) -> None:
    assert code_service.init_calls == 1


# --- code identification: allowlist and blocklist solutions, start-up -----------------------


PARTNER = "https://partner.example/qr/"  # a partner's codes our own logic handles (allowlist)
BLOCKED = "https://qr.alipayplus.sandbox/o/blocked-"  # codes refused outright (blocklist)


@asynccontextmanager
async def identification(settings: Settings, service: CodeService, **changes: Any) -> AsyncIterator[CodeIdentification]:
    """``CodeIdentification`` with ``changes`` to the settings, talking to ``service``."""
    async with httpx.AsyncClient(transport=code_service_transport(service)) as http:
        yield CodeIdentification(settings.model_copy(update=changes), http)


@pytest.mark.parametrize(
    ("code_value", "verdict", "asks_the_sdk"),
    [
        (f"{PARTNER}123", Verdict.LOCAL, False),
        ("mppwallet://pay?merchant=42", Verdict.LOCAL, False),
        (f"{BLOCKED}1", Verdict.ALIPAY_PLUS, True),  # the blocklist is not this solution's
        ("https://shop.example/menu", Verdict.INVALID, True),
    ],
    ids=["allowlisted", "local", "blocklisted", "unknown"],
)
async def test_the_allowlist_solution_keeps_allowlisted_codes_for_us(
    settings: Settings, code_value: str, verdict: Verdict, asks_the_sdk: bool
) -> None:
    service = CodeService()
    async with identification(
        settings, service, code_solution=CodeSolution.ALLOWLIST, code_allowlist=[PARTNER], code_blocklist=[BLOCKED]
    ) as codes:
        answer = await codes.identify(code_value, PIN_USER.customer_id)

    assert answer.verdict is verdict
    assert service.identify_calls == (1 if asks_the_sdk else 0)


@pytest.mark.parametrize(
    ("code_value", "verdict", "asks_the_sdk"),
    [
        (f"{BLOCKED}1", Verdict.INVALID, False),
        ("mppwallet://pay?merchant=42", Verdict.LOCAL, False),
        (f"{PARTNER}123", Verdict.INVALID, True),  # the allowlist is not this solution's
        (f"{ORDER_CODE_PREFIX}xyz", Verdict.ALIPAY_PLUS, True),
    ],
    ids=["blocklisted", "local", "allowlisted", "alipayplus"],
)
async def test_the_blocklist_solution_refuses_blocklisted_codes(
    settings: Settings, code_value: str, verdict: Verdict, asks_the_sdk: bool
) -> None:
    service = CodeService()
    async with identification(
        settings, service, code_solution=CodeSolution.BLOCKLIST, code_allowlist=[PARTNER], code_blocklist=[BLOCKED]
    ) as codes:
        answer = await codes.identify(code_value, PIN_USER.customer_id)

    assert answer.verdict is verdict
    assert service.identify_calls == (1 if asks_the_sdk else 0)
    if verdict is Verdict.INVALID:
        assert answer.message == INVALID_CODE_MESSAGE


async def test_a_failed_identification_is_an_invalid_code(settings: Settings) -> None:
    service = CodeService()
    service.script_identify(["F"])
    async with identification(settings, service) as codes:
        answer = await codes.identify(f"{ORDER_CODE_PREFIX}xyz", PIN_USER.customer_id)

    assert answer.verdict is Verdict.INVALID and service.identify_calls == 1  # F is not retried


@pytest.mark.parametrize(("status", "code"), [("F", "PROCESS_FAIL"), ("U", "UNKNOWN_EXCEPTION")])
async def test_init_that_is_not_s_stops_start_up_with_the_reason(settings: Settings, status: str, code: str) -> None:
    async with identification(settings, CodeService(init_status=status)) as codes:
        with pytest.raises(CodeServiceUnavailable) as raised:
            await codes.init()

    message = str(raised.value)
    assert "refused to initialise" in message and f"{status}/{code}" in message
    assert settings.code_service_url in message


async def test_an_unreachable_server_sdk_stops_start_up(settings: Settings) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        with pytest.raises(CodeServiceUnavailable, match="could not be initialised.*MPP_CODE_SERVICE_URL"):
            await CodeIdentification(settings, http).init()


@pytest.mark.parametrize("status", ["F", "U"])
async def test_the_api_does_not_start_unless_the_server_sdk_initialises(
    settings: Settings, client: Client, status: str
) -> None:
    service = CodeService(init_status=status)
    application = create_app(settings, client, code_service_transport=code_service_transport(service))

    with pytest.raises(CodeServiceUnavailable):
        async with application.router.lifespan_context(application):
            pytest.fail("the API started without Alipay+'s server SDK")

    assert service.init_calls == 1
    assert not hasattr(application.state, "services")
