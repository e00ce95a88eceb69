"""Merchant-presented mode on the sandbox Alipay+: sessions from our applyToken, order and entry
codes, the cashier page, and the MPM pay it sends us.

A fake MPP stands in for our API: it checks Alipay+'s signature on applyToken and pay and answers
signed with the MPP's key, so every call here crosses the real signed wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from alipayplus import (
    Amount,
    ApplyTokenRequest,
    ApplyTokenResponse,
    GrantType,
    Message,
    NotifyPaymentRequest,
    PayRequest,
    PayResponse,
    Result,
    ResultCode,
    ResultStatus,
    Signer,
    Verifier,
)
from alipayplus.sdk import (
    CodeType,
    CreateSessionRequest,
    CreateSessionResponse,
    DecodeRequest,
    DecodeResponse,
    FetchConfigRequest,
    FetchConfigResponse,
)
from sandbox.alipayplus.app import create_app
from sandbox.alipayplus.driver import (
    ACQUIRER_ID,
    ALIPAYPLUS_ACQUIRER_ID,
    AlipayPlusDriver,
    apply_token_request,
    convert_amount,
)
from sandbox.alipayplus.mpm import SandboxMpm, parse_major_amount
from sandbox.alipayplus.peer import SandboxAlipayPlus

from .conftest import ALIPAYPLUS_URL

MPP_URL = "http://mpp.test"
PSP_ID = "1022160000000000000"
UTC8 = timedelta(hours=8)
ORDER_CODES = "/sandbox/merchant/orderCodes"


@dataclass
class Clock:
    now: datetime = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **elapsed: float) -> None:
        self.now += timedelta(**elapsed)


@dataclass
class FakeWallet:
    """Our applyToken and pay, reduced to: check Alipay+'s signature, answer signed as scripted."""

    signer: Signer
    verifier: Verifier
    clock: Clock
    access_token_ttl: timedelta = timedelta(hours=1)
    pay_answers: list[PayResponse] = field(default_factory=list)  # default: U with a paymentUrl
    sign_pay_answers: bool = True
    token_requests: list[ApplyTokenRequest] = field(default_factory=list)
    pays: list[PayRequest] = field(default_factory=list)
    _auth_codes: dict[str, str | None] = field(default_factory=dict)  # authCode -> customerId, None once used
    _issued: int = 0

    def issue_auth_code(self, customer_id: str) -> str:
        code = f"AC{len(self._auth_codes):030d}"
        self._auth_codes[code] = customer_id
        return code

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post(ApplyTokenRequest.PATH)
        async def apply_token(request: Request) -> Response:
            token_request = ApplyTokenRequest.from_wire(await self._verified(request))
            self.token_requests.append(token_request)
            return self._signed(ApplyTokenRequest.PATH, self._token_answer(token_request))

        @app.post(PayRequest.PATH)
        async def pay(request: Request) -> Response:
            pay_request = PayRequest.from_wire(await self._verified(request))
            self.pays.append(pay_request)
            answer = self.pay_answers.pop(0) if self.pay_answers else self._in_process(pay_request)
            if not self.sign_pay_answers:
                return Response(content=answer.to_wire())
            return self._signed(PayRequest.PATH, answer)

        return app

    async def _verified(self, request: Request) -> bytes:
        body = await request.body()
        self.verifier.check(request.url.path, request.headers, body)  # raises: a 500, the test fails
        return body

    def _signed(self, path: str, message: Message) -> Response:
        body = message.to_wire()
        return Response(content=body, headers=self.signer.headers(path, body, response=True))

    def _token_answer(self, request: ApplyTokenRequest) -> ApplyTokenResponse:
        if request.grant_type is GrantType.REFRESH_TOKEN:
            customer_id: str | None = (request.refresh_token or "").removeprefix("RT-").rsplit("-", 1)[0]
        elif request.auth_code not in self._auth_codes:
            return ApplyTokenResponse(result=Result.of(ResultCode.INVALID_CODE))
        else:
            customer_id = self._auth_codes[request.auth_code]
            if customer_id is None:
                return ApplyTokenResponse(result=Result.of(ResultCode.USED_CODE))
            self._auth_codes[request.auth_code] = None
        self._issued += 1
        return ApplyTokenResponse(
            result=Result.success(),
            access_token=f"AT-{customer_id}-{self._issued}",
            access_token_expiry_time=self.clock() + self.access_token_ttl,
            refresh_token=f"RT-{customer_id}-{self._issued}",
            refresh_token_expiry_time=self.clock() + timedelta(days=600),
            customer_id=customer_id,
        )

    @staticmethod
    def _in_process(request: PayRequest) -> PayResponse:
        return PayResponse(
            result=Result.of(ResultCode.PAYMENT_IN_PROCESS),
            payment_request_id=request.payment_request_id,
            payment_url=f"{MPP_URL}/app/v1/payments/{request.payment_request_id}",
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wallet(mpp_signer: Signer, alipayplus_verifier: Verifier, clock: Clock) -> FakeWallet:
    return FakeWallet(mpp_signer, alipayplus_verifier, clock)


@pytest.fixture
async def mpm(peer: SandboxAlipayPlus, wallet: FakeWallet, clock: Clock) -> AsyncIterator[SandboxMpm]:
    transport = httpx.ASGITransport(app=wallet.app())
    async with AlipayPlusDriver.for_peer(peer, MPP_URL, transport=transport) as driver:
        yield SandboxMpm(driver, ALIPAYPLUS_URL, psp_id=PSP_ID, clock=clock, peer=peer)


@pytest.fixture
def hooked(mpm: SandboxMpm) -> list[PayRequest]:
    """The pay requests ``on_pay_in_process`` was told about."""
    told: list[PayRequest] = []

    async def start_inquiries(request: PayRequest) -> None:
        told.append(request)

    mpm.on_pay_in_process = start_inquiries
    return told


@pytest.fixture
async def sandbox(peer: SandboxAlipayPlus, mpm: SandboxMpm) -> AsyncIterator[httpx.AsyncClient]:
    """The client SDK's (and the merchant's) HTTP client to the sandbox, in process."""
    transport = httpx.ASGITransport(app=create_app(peer, mpm=mpm))
    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=transport) as client:
        yield client


async def sdk_call(sandbox: httpx.AsyncClient, path: str, request: Message, answer: type[Any]) -> Any:
    response = await sandbox.post(path, content=request.to_wire())
    assert response.status_code == 200  # always: the result says how it went
    return answer.from_wire(response.content)


async def create_session(sandbox: httpx.AsyncClient, auth_code: str) -> CreateSessionResponse:
    request = CreateSessionRequest(auth_code=auth_code, psp_id=PSP_ID)
    answer: CreateSessionResponse = await sdk_call(sandbox, CreateSessionRequest.PATH, request, CreateSessionResponse)
    return answer


async def session_for(sandbox: httpx.AsyncClient, wallet: FakeWallet, customer_id: str = "2160000000000001") -> str:
    answer = await create_session(sandbox, wallet.issue_auth_code(customer_id))
    assert answer.result.is_success and answer.session_id
    return answer.session_id


async def decode(sandbox: httpx.AsyncClient, session_id: str, code_value: str) -> DecodeResponse:
    request = DecodeRequest(session_id=session_id, code_value=code_value)
    answer: DecodeResponse = await sdk_call(sandbox, DecodeRequest.PATH, request, DecodeResponse)
    return answer


async def order_code(sandbox: httpx.AsyncClient, currency: str = "SGD", value: str = "250", **extra: str) -> str:
    body = {"amount": {"currency": currency, "value": value}, "description": "2 kopi", "codeExpiresInSeconds": "120"}
    response = await sandbox.post(ORDER_CODES, json=body | extra)
    assert response.status_code == 200, response.text
    code_value: str = response.json()["codeValue"]
    return code_value


def failure(answer: DecodeResponse) -> tuple[ResultStatus, str]:
    return answer.result.result_status, answer.result.result_code


# --- builders and money --------------------------------------------------------------------


def test_apply_token_request_chooses_the_grant_and_alipayplus_as_acquirer() -> None:
    by_code = apply_token_request(auth_code="AC1")
    refresh = apply_token_request(refresh_token="RT1", psp_id="P1")

    assert (by_code.grant_type, by_code.auth_code, by_code.psp_id) == (GrantType.AUTHORIZATION_CODE, "AC1", PSP_ID)
    assert (refresh.grant_type, refresh.refresh_token, refresh.psp_id) == (GrantType.REFRESH_TOKEN, "RT1", "P1")
    assert by_code.acquirer_id == refresh.acquirer_id == ALIPAYPLUS_ACQUIRER_ID == "2052666000000000"
    with pytest.raises(ValueError, match="exactly one"):
        apply_token_request(auth_code="AC1", refresh_token="RT1")


@pytest.mark.parametrize(
    ("amount", "rate", "currency", "expected"),
    [
        (Amount(currency="SGD", value=250), Decimal("11850.25"), "IDR", 2962562),  # 29625.625 -> .62 (half even)
        (Amount(currency="SGD", value=250), Decimal("11850.27"), "IDR", 2962568),  # 29625.675 -> .68
        (Amount(currency="SGD", value=250), Decimal("1001"), "KRW", 2502),  # 2502.5 -> 2502, KRW has no decimals
        (Amount(currency="SGD", value=350), Decimal("1001"), "KRW", 3504),  # 3503.5 -> 3504
        (Amount(currency="JPY", value=100), Decimal("10.0000"), "KRW", 1000),  # seed 003's sample
        (Amount(currency="KRW", value=1000), Decimal("0.00075"), "KWD", 750),  # 0.75 KWD, 3 decimals
    ],
)
def test_conversion_is_exact_in_major_units_rounding_half_even(
    amount: Amount, rate: Decimal, currency: str, expected: int
) -> None:
    assert convert_amount(amount, rate, currency) == Amount(currency=currency, value=expected)


@pytest.mark.parametrize(
    ("text", "currency", "value"), [("12.50", "SGD", 1250), (" 3 ", "SGD", 300), ("12000", "KRW", 12000)]
)
def test_cashier_amounts_are_read_in_major_units(text: str, currency: str, value: int) -> None:
    assert parse_major_amount(text, currency) == Amount(currency=currency, value=value)


@pytest.mark.parametrize(
    ("text", "currency", "hint"),
    [("12.505", "SGD", "at most 2 decimals"), ("1.5", "KRW", "at most 0 decimals"), ("abc", "SGD", "e.g. 12.50")],
)
def test_unusable_cashier_amounts_say_what_to_fix(text: str, currency: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        parse_major_amount(text, currency)


@pytest.mark.parametrize("text", ["0", "-1", "0.001", "NaN", "sNaN", "Infinity", ""])
def test_cashier_amounts_must_be_above_zero(text: str) -> None:
    with pytest.raises(ValueError, match="SGD"):
        parse_major_amount(text, "SGD")


# --- fetchConfig -------------------------------------------------------------------------------


async def test_fetch_config_gives_acceptance_marks_per_region_and_counts_fetches(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm
) -> None:
    answers = [
        await sdk_call(sandbox, FetchConfigRequest.PATH, FetchConfigRequest(sdk_version="1.0"), FetchConfigResponse)
        for _ in range(2)
    ]

    assert mpm.config_fetches == 2
    config = answers[0]
    assert config.result.is_success and config.config_version
    regions = {marks.region: [logo.name for logo in marks.logos] for marks in config.acceptance_marks}
    assert {"SG", "HK", "JP", "KR", "MY", "TH", "ID"} <= set(regions)
    assert all(names[0] == "Alipay+" for names in regions.values())
    assert "DANA" in regions["ID"] and "Kakao Pay" in regions["KR"]
    logo = await sandbox.get(config.acceptance_marks[0].logos[0].logo_url)
    assert logo.status_code == 200 and logo.headers["content-type"].startswith("image/svg+xml")


# --- createSession -------------------------------------------------------------------------------


async def test_create_session_exchanges_the_auth_code_through_our_signed_apply_token(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet, clock: Clock
) -> None:
    answer = await create_session(sandbox, wallet.issue_auth_code("2160000000000001"))

    assert answer.result.is_success and answer.session_id
    [token_request] = wallet.token_requests
    assert token_request.grant_type is GrantType.AUTHORIZATION_CODE
    assert (token_request.acquirer_id, token_request.psp_id) == ("2052666000000000", PSP_ID)
    assert answer.session_expiry_time == clock.now + timedelta(minutes=30)
    assert answer.session_expiry_time is not None and answer.session_expiry_time.utcoffset() == UTC8
    session = mpm.sessions[answer.session_id]
    assert (session.customer_id, session.access_token) == ("2160000000000001", "AT-2160000000000001-1")
    assert mpm.refresh_tokens == {"2160000000000001": "RT-2160000000000001-1"}


async def test_create_session_passes_an_apply_token_failure_through(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet
) -> None:
    auth_code = wallet.issue_auth_code("2160000000000001")
    assert (await create_session(sandbox, auth_code)).result.is_success

    again = await create_session(sandbox, auth_code)

    assert (again.result.result_status, again.result.result_code) == (ResultStatus.FAIL, ResultCode.USED_CODE)
    assert again.session_id is None and len(mpm.sessions) == 1


async def test_create_session_refuses_a_psp_it_does_not_know(sandbox: httpx.AsyncClient, wallet: FakeWallet) -> None:
    request = CreateSessionRequest(auth_code=wallet.issue_auth_code("C1"), psp_id="1022160000000009999")

    answer = await sdk_call(sandbox, CreateSessionRequest.PATH, request, CreateSessionResponse)

    assert (answer.result.result_code, wallet.token_requests) == (ResultCode.PARAM_ILLEGAL, [])
    assert "pspId" in answer.result.result_message


async def test_a_malformed_create_session_gets_param_illegal_naming_the_field(sandbox: httpx.AsyncClient) -> None:
    response = await sandbox.post(CreateSessionRequest.PATH, json={"authCode": "A" * 33, "pspId": PSP_ID})

    result = CreateSessionResponse.from_wire(response.content).result
    assert (response.status_code, result.result_code) == (200, ResultCode.PARAM_ILLEGAL)
    assert (result.result_message or "").startswith("authCode")


# --- sessions expire -----------------------------------------------------------------------------


async def test_a_session_lives_30_minutes(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet, clock: Clock
) -> None:
    session_id = await session_for(sandbox, wallet)
    entry_code = mpm.entry_code(mpm.stores["SG-KOPI-01"])

    clock.advance(minutes=29, seconds=59)
    still = await decode(sandbox, session_id, entry_code)
    clock.advance(seconds=1)
    expired = await decode(sandbox, session_id, entry_code)

    assert still.result.is_success
    assert failure(expired) == (ResultStatus.FAIL, ResultCode.SESSION_EXPIRED)
    assert session_id not in mpm.sessions


async def test_session_ttl_is_configurable_and_unknown_sessions_are_expired(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet, clock: Clock
) -> None:
    mpm.session_ttl = timedelta(minutes=5)
    session_id = await session_for(sandbox, wallet)
    clock.advance(minutes=5)
    code_value = await order_code(sandbox)

    for session in (session_id, "no-such-session"):
        assert failure(await decode(sandbox, session, code_value)) == (ResultStatus.FAIL, ResultCode.SESSION_EXPIRED)
    assert wallet.pays == []


# --- order codes ---------------------------------------------------------------------------------


async def test_an_order_code_decodes_into_our_mpm_pay(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet, clock: Clock, hooked: list[PayRequest]
) -> None:
    mpm.exchange_rates["SGD/IDR"] = Decimal("11850.25")
    session_id = await session_for(sandbox, wallet, "2160000000000001")
    code_value = await order_code(sandbox, "SGD", "250")

    answer = await decode(sandbox, session_id, code_value)

    [pay] = wallet.pays
    assert answer.result.is_success and answer.code_type is CodeType.ORDER_CODE
    assert answer.payment_request_id == pay.payment_request_id
    assert answer.payment_url == f"{MPP_URL}/app/v1/payments/{pay.payment_request_id}"
    assert (pay.acquirer_id, pay.psp_id) == (ACQUIRER_ID, PSP_ID)
    assert pay.payment_amount == pay.order.order_amount == Amount(currency="SGD", value=250)
    assert pay.pay_to_amount == Amount(currency="IDR", value=2962562)  # 2.50 x 11850.25 = 29625.625 -> 29625.62
    assert pay.payment_quote is not None
    assert (pay.payment_quote.quote_currency_pair, pay.payment_quote.quote_price) == ("SGD/IDR", "11850.25")
    assert pay.payment_quote.quote_id
    method = pay.payment_method
    assert (method.payment_method_type, method.payment_method_id, method.customer_id) == (
        "CONNECT_WALLET",
        "AT-2160000000000001-1",
        "2160000000000001",
    )
    assert pay.payment_factor.is_in_store_payment and pay.payment_factor.is_cashier_payment
    assert not pay.payment_factor.is_agreement_payment
    assert pay.payment_expiry_time == clock.now + timedelta(seconds=120)
    assert pay.payment_expiry_time is not None and pay.payment_expiry_time.utcoffset() == UTC8
    assert pay.payment_notify_url == f"{ALIPAYPLUS_URL}{NotifyPaymentRequest.PATH}"
    assert pay.payment_redirect_url is None
    assert pay.order.order_description == "2 kopi"
    assert pay.order.merchant is not None and pay.order.merchant.merchant_address is not None
    assert pay.order.merchant.merchant_address.region == "SG"
    assert hooked == [pay]
    [exchange] = mpm.payments(pay.payment_request_id)
    assert exchange.response is not None and exchange.response.payment_url == answer.payment_url


async def test_the_pay_on_the_wire_says_true_as_strings(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet
) -> None:
    session_id = await session_for(sandbox, wallet)
    await decode(sandbox, session_id, await order_code(sandbox, redirectUrl="https://shop.example/done"))

    sent = (await sandbox.get("/sandbox/mpm/payments")).json()

    [exchange] = sent
    assert exchange["request"]["paymentFactor"] == {
        "isAgreementPayment": "false",
        "isEasyPayScenario": "false",
        "isPaymentEvaluation": "false",
        "isAuthorizationAndPay": "false",
        "isInStorePayment": "true",
        "isCashierPayment": "true",
    }
    assert exchange["request"]["paymentRedirectUrl"] == "https://shop.example/done"
    assert exchange["response"]["result"]["resultCode"] == "PAYMENT_IN_PROCESS" and exchange["error"] is None


async def test_a_quote_into_a_currency_without_decimals(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet
) -> None:
    mpm.mpp_currency = "KRW"
    mpm.exchange_rates["SGD/KRW"] = Decimal("1001")
    session_id = await session_for(sandbox, wallet)

    await decode(sandbox, session_id, await order_code(sandbox, "SGD", "250"))

    [pay] = wallet.pays
    assert pay.pay_to_amount == Amount(currency="KRW", value=2502)  # 2502.5 -> 2502
    assert pay.payment_quote is not None and pay.payment_quote.quote_currency_pair == "SGD/KRW"


async def test_no_quote_when_the_merchant_charges_in_our_currency(
    sandbox: httpx.AsyncClient, wallet: FakeWallet
) -> None:
    session_id = await session_for(sandbox, wallet)

    await decode(sandbox, session_id, await order_code(sandbox, "IDR", "5000000"))

    [pay] = wallet.pays
    assert pay.pay_to_amount == pay.payment_amount == Amount(currency="IDR", value=5000000)
    assert pay.payment_quote is None and b"paymentQuote" not in pay.to_wire()


async def test_decoding_the_same_order_code_again_resends_the_same_pay(
    sandbox: httpx.AsyncClient, wallet: FakeWallet, hooked: list[PayRequest]
) -> None:
    session_id = await session_for(sandbox, wallet)
    code_value = await order_code(sandbox)

    first = await decode(sandbox, session_id, code_value)
    second = await decode(sandbox, await session_for(sandbox, wallet), code_value)  # same user, new session

    assert first.payment_request_id is not None and first.payment_request_id == second.payment_request_id
    assert len(wallet.pays) == 2 and wallet.pays[0] == wallet.pays[1]  # our pay sees an idempotent repeat
    assert len(hooked) == 1  # one inquiry schedule per payment


async def test_another_user_cannot_pay_an_order_code_already_decoded(
    sandbox: httpx.AsyncClient, wallet: FakeWallet
) -> None:
    code_value = await order_code(sandbox)
    await decode(sandbox, await session_for(sandbox, wallet, "2160000000000001"), code_value)

    answer = await decode(sandbox, await session_for(sandbox, wallet, "2160000000000002"), code_value)

    assert failure(answer) == (ResultStatus.FAIL, ResultCode.USED_CODE)
    assert "new code" in (answer.result.result_message or "") and len(wallet.pays) == 1


async def test_our_f_answer_is_passed_through(
    sandbox: httpx.AsyncClient, wallet: FakeWallet, hooked: list[PayRequest]
) -> None:
    wallet.pay_answers.append(PayResponse(result=Result.of(ResultCode.USER_BALANCE_NOT_ENOUGH)))
    session_id = await session_for(sandbox, wallet)

    answer = await decode(sandbox, session_id, await order_code(sandbox))

    assert failure(answer) == (ResultStatus.FAIL, ResultCode.USER_BALANCE_NOT_ENOUGH)
    assert answer.result.result_message == "The user's balance is not enough"
    assert answer.payment_request_id == wallet.pays[0].payment_request_id and answer.payment_url is None
    assert hooked == []


async def test_our_s_answer_decodes_without_a_payment_url(sandbox: httpx.AsyncClient, wallet: FakeWallet) -> None:
    wallet.pay_answers.append(PayResponse(result=Result.success(), payment_id="P1", customer_id="2160000000000001"))

    answer = await decode(sandbox, await session_for(sandbox, wallet), await order_code(sandbox))

    assert answer.result.is_success and answer.code_type is CodeType.ORDER_CODE and answer.payment_url is None


async def test_no_usable_pay_answer_is_unknown_and_starts_the_inquiries(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet, hooked: list[PayRequest]
) -> None:
    wallet.sign_pay_answers = False

    answer = await decode(sandbox, await session_for(sandbox, wallet), await order_code(sandbox))

    assert failure(answer) == (ResultStatus.UNKNOWN, ResultCode.UNKNOWN_EXCEPTION)
    assert answer.payment_request_id == wallet.pays[0].payment_request_id
    assert hooked == wallet.pays
    [exchange] = mpm.payments()
    assert exchange.response is None and exchange.error is not None and "INVALID_CLIENT" in exchange.error  # unsigned


async def test_a_failing_hook_does_not_fail_the_decode(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet
) -> None:
    calls: list[str] = []

    async def broken(request: PayRequest) -> None:
        calls.append(request.payment_request_id)
        raise RuntimeError("Temporal is down")

    mpm.on_pay_in_process = broken
    session_id = await session_for(sandbox, wallet)
    code_value = await order_code(sandbox)

    first = await decode(sandbox, session_id, code_value)
    await decode(sandbox, session_id, code_value)

    assert first.result.is_success and first.payment_url
    assert len(calls) == 2  # not marked as told: the next decode tries again


async def test_an_expired_order_code_is_refused_with_a_message_for_the_user(
    sandbox: httpx.AsyncClient, wallet: FakeWallet, clock: Clock
) -> None:
    session_id = await session_for(sandbox, wallet)
    code_value = await order_code(sandbox, codeExpiresInSeconds="60")

    clock.advance(seconds=60)
    answer = await decode(sandbox, session_id, code_value)

    assert failure(answer) == (ResultStatus.FAIL, ResultCode.EXPIRED_CODE)
    assert answer.result.result_message == "This code has expired. Ask the merchant for a new code and scan again."
    assert wallet.pays == []


@pytest.mark.parametrize(
    "code_value",
    [
        "https://qr.alipayplus.sandbox/o/not-a-code-anyone-made",
        "https://qr.alipayplus.sandbox/e/NO-SUCH-STORE",
        "00020101021126360014ID.CO.QRIS.WWW",
    ],
)
async def test_an_unknown_code_is_invalid_with_a_message_for_the_user(
    sandbox: httpx.AsyncClient, wallet: FakeWallet, code_value: str
) -> None:
    answer = await decode(sandbox, await session_for(sandbox, wallet), code_value)

    assert failure(answer) == (ResultStatus.FAIL, ResultCode.INVALID_CODE)
    assert answer.result.result_message == (
        "This code is not valid. Check you scanned the merchant's Alipay+ code and try again."
    )
    assert wallet.pays == []


async def test_order_codes_are_unguessable_and_carry_the_merchants_options(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet, clock: Clock
) -> None:
    codes = {await order_code(sandbox) for _ in range(3)}
    custom = await order_code(sandbox, "KRW", "12000", paymentExpiresInSeconds="90", storeId="KR-MART-01")

    assert len(codes) == 3
    assert all(code.startswith("https://qr.alipayplus.sandbox/o/") and len(code) >= 32 + 32 for code in codes)
    await decode(sandbox, await session_for(sandbox, wallet), custom)
    [pay] = wallet.pays
    assert pay.payment_expiry_time == clock.now + timedelta(seconds=90)
    assert pay.order.merchant is not None and pay.order.merchant.store is not None
    assert pay.order.merchant.store.reference_store_id == "KR-MART-01"
    assert pay.pay_to_amount == Amount(currency="IDR", value=14079000)  # 12000 KRW x 11.7325 = 140790.00 IDR


async def test_an_order_code_needs_a_rate_into_our_currency(sandbox: httpx.AsyncClient) -> None:
    response = await sandbox.post(
        ORDER_CODES, json={"amount": {"currency": "EUR", "value": "100"}, "description": "croissant"}
    )

    assert response.status_code == 422 and "EUR/IDR" in response.json()["detail"]


async def test_a_rate_withdrawn_before_decoding_is_currency_not_support(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet
) -> None:
    code_value = await order_code(sandbox, "SGD")
    del mpm.exchange_rates["SGD/IDR"]

    answer = await decode(sandbox, await session_for(sandbox, wallet), code_value)

    assert failure(answer) == (ResultStatus.FAIL, ResultCode.CURRENCY_NOT_SUPPORT) and wallet.pays == []


async def test_an_expired_access_token_is_refreshed_before_paying(
    sandbox: httpx.AsyncClient, mpm: SandboxMpm, wallet: FakeWallet, clock: Clock
) -> None:
    wallet.access_token_ttl = timedelta(minutes=10)
    session_id = await session_for(sandbox, wallet, "2160000000000001")
    clock.advance(minutes=11)

    answer = await decode(sandbox, session_id, await order_code(sandbox))

    assert answer.result.is_success
    refresh = wallet.token_requests[-1]
    assert (refresh.grant_type, refresh.refresh_token) == (GrantType.REFRESH_TOKEN, "RT-2160000000000001-1")
    assert refresh.acquirer_id == "2052666000000000"
    assert wallet.pays[0].payment_method.payment_method_id == "AT-2160000000000001-2"
    assert mpm.refresh_tokens["2160000000000001"] == "RT-2160000000000001-2"


async def test_a_malformed_decode_gets_param_illegal_naming_the_field(sandbox: httpx.AsyncClient) -> None:
    response = await sandbox.post(DecodeRequest.PATH, json={"sessionId": "s1"})

    result = DecodeResponse.from_wire(response.content).result
    assert (response.status_code, result.result_code) == (200, ResultCode.PARAM_ILLEGAL)
    assert (result.result_message or "").startswith("codeValue")


# --- entry codes and the cashier page ---------------------------------------------------------------


async def test_entry_codes_are_listed_and_decode_to_the_stores_cashier_page(
    sandbox: httpx.AsyncClient, wallet: FakeWallet
) -> None:
    listed = (await sandbox.get("/sandbox/merchant/entryCodes")).json()
    singapore = next(entry for entry in listed if entry["storeId"] == "SG-KOPI-01")

    answer = await decode(sandbox, await session_for(sandbox, wallet), singapore["codeValue"])

    assert singapore == {
        "codeValue": "https://qr.alipayplus.sandbox/e/SG-KOPI-01",
        "storeId": "SG-KOPI-01",
        "currency": "SGD",
    }
    assert {entry["currency"] for entry in listed} >= {"SGD", "KRW"}
    assert answer.result.is_success and answer.code_type is CodeType.ENTRY_CODE
    assert answer.redirect_url == f"{ALIPAYPLUS_URL}/sandbox/merchant/cashier/SG-KOPI-01"
    assert answer.payment_request_id is None and wallet.pays == []


async def test_the_cashier_page_asks_for_an_amount(sandbox: httpx.AsyncClient) -> None:
    page = await sandbox.get("/sandbox/merchant/cashier/SG-KOPI-01")
    missing = await sandbox.get("/sandbox/merchant/cashier/NOPE")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'action="/sandbox/merchant/cashier/SG-KOPI-01"' in page.text and "name=amount" in page.text
    assert "SGD" in page.text
    assert missing.status_code == 404


async def test_the_cashier_turns_the_amount_into_an_order_code_that_pays_it(
    sandbox: httpx.AsyncClient, peer: SandboxAlipayPlus, wallet: FakeWallet
) -> None:
    session_id = await session_for(sandbox, wallet)

    response = await sandbox.post("/sandbox/merchant/cashier/SG-KOPI-01", data={"amount": "12.50"})

    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == ALIPAYPLUS_URL and location.path.endswith("/aplus/decode")
    [code_value] = parse_qs(location.query)["codeValue"]
    assert code_value.startswith("https://qr.alipayplus.sandbox/o/")
    answer = await decode(sandbox, session_id, code_value)
    [pay] = wallet.pays
    assert answer.result.is_success and answer.payment_url
    assert pay.payment_amount == Amount(currency="SGD", value=1250)
    result_url = urlsplit(pay.payment_redirect_url or "")
    assert result_url.path == "/sandbox/merchant/result"
    assert parse_qs(result_url.query)["referenceOrderId"] == [pay.order.reference_order_id]
    # the merchant's result page: processing until Alipay+ hears the result from our notifyPayment
    result_page = f"{result_url.path}?{result_url.query}"
    assert "<strong id=status>processing</strong>" in (await sandbox.get(result_page)).text
    notice = NotifyPaymentRequest(payment_result=Result.success(), payment_request_id=pay.payment_request_id)
    peer.record_notification(notice, json.loads(notice.to_wire()))
    page = (await sandbox.get(result_page)).text
    assert "<strong id=status>success</strong>" in page and "SGD 12.50" in page


async def test_the_cashier_says_what_to_fix_in_the_amount(sandbox: httpx.AsyncClient, mpm: SandboxMpm) -> None:
    response = await sandbox.post("/sandbox/merchant/cashier/KR-MART-01", data={"amount": "1.5"})

    assert response.status_code == 422 and "id=error" in response.text
    assert "KRW with at most 0 decimals" in response.text
    assert mpm.order_codes == {}


async def test_the_alipayplus_url_explains_itself_to_a_plain_browser(sandbox: httpx.AsyncClient) -> None:
    page = await sandbox.get("/aplus/decode", params={"codeValue": "https://qr.alipayplus.sandbox/o/<x>"})
    assert page.status_code == 200 and "https://qr.alipayplus.sandbox/o/&lt;x&gt;" in page.text


async def test_an_unknown_order_has_no_result_page(sandbox: httpx.AsyncClient) -> None:
    page = await sandbox.get("/sandbox/merchant/result", params={"referenceOrderId": "nope"})
    assert page.status_code == 404 and "<p id=status>unknown</p>" in page.text


async def test_merchant_controls_are_local_only(peer: SandboxAlipayPlus, mpm: SandboxMpm) -> None:
    transport = httpx.ASGITransport(app=create_app(peer, mpm=mpm), client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=transport) as remote:
        assert (await remote.get("/sandbox/merchant/entryCodes")).status_code == 403
        assert (await remote.post(ORDER_CODES, json={})).status_code == 403
        assert (await remote.get("/sandbox/mpm/payments")).status_code == 403
        # the client SDK's endpoints are not controls
        assert (await remote.post(FetchConfigRequest.PATH, content=b"{}")).status_code == 200


async def test_the_sandbox_serves_no_mpm_unless_given_one(http: httpx.AsyncClient) -> None:
    assert (await http.post(DecodeRequest.PATH, json={"sessionId": "s", "codeValue": "c"})).status_code == 404
    assert (await http.get("/sandbox/merchant/entryCodes")).status_code == 404
