"""Alipay+'s client SDK inside the wallet app, against a fake Alipay+ (httpx.MockTransport).

The fake speaks the ``alipayplus.sdk`` messages as the sandbox does (contract: sessions
from an authCode, decode of order and entry codes, a merchant cashier page that redirects
to the Alipay+ URL), counts what the SDK asks, and runs on the test's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from alipayplus import Result, ResultCode, ResultStatus
from alipayplus.sdk import (
    AcceptanceMarkLogo,
    CodeType,
    CreateSessionRequest,
    CreateSessionResponse,
    DecodeRequest,
    DecodeResponse,
    FetchConfigRequest,
    FetchConfigResponse,
    RegionAcceptanceMarks,
)
from hce_device.alipayplus_client_sdk import AlipayPlusClientSdk, AlipayPlusSdkError, DeviceInfo

ALIPAYPLUS = "http://alipayplus.test"
PSP_ID = "1022160000000000000"
ORDER_CODE = "https://qr.alipayplus.sandbox/o/order-1"
EXPIRED_ORDER_CODE = "https://qr.alipayplus.sandbox/o/order-expired"
FROZEN_USER_CODE = "https://qr.alipayplus.sandbox/o/order-frozen"
UNKNOWN_CODE = "https://qr.alipayplus.sandbox/o/never-issued"
ENTRY_CODE = "https://qr.alipayplus.sandbox/e/SG-KOPI-01"
CASHIER_PATH = "/sandbox/merchant/cashier/SG-KOPI-01"
CASHIER_PAGE = (
    "<!doctype html><h1>Kopi Corner</h1>"
    f'<form id=cashier method=post action="{CASHIER_PATH}">'
    "<input type=hidden name=storeId value=SG-KOPI-01>"
    "<label>Amount (SGD) <input name=amount inputmode=decimal required></label>"
    "<button type=submit>Pay with Alipay+</button></form>"
)
PAYMENT_URL = "http://mpp.test/mpm/pay/pr-1/p-1"
INVALID_MESSAGE = "This code is not valid. Check you scanned the merchant's Alipay+ code and try again."
EXPIRED_MESSAGE = "This code has expired. Ask the merchant for a new code and scan again."
REGIONS = {"SG": ["Alipay+"], "HK": ["Alipay+", "AlipayHK"], "JP": ["Alipay+"], "KR": ["Alipay+", "Kakao Pay"]}


class Clock:
    """The device's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def alipayplus_url(code_value: str, base: str = ALIPAYPLUS) -> str:
    """The "Alipay+ URL" a cashier page redirects to (seed 003, step 14)."""
    return f"{base}/aplus/decode?{urlencode({'codeValue': code_value})}"


@dataclass
class FakeAlipayPlus:
    """Alipay+'s client-SDK endpoints and a merchant's cashier page, with what was asked of them."""

    clock: Clock
    session_ttl: timedelta = timedelta(minutes=30)
    # code value → (paymentRequestId, paymentUrl) of the payment our pay opened for it
    payments: dict[str, tuple[str, str]] = field(default_factory=lambda: {ORDER_CODE: ("pr-1", PAYMENT_URL)})
    cashier_redirect: str = alipayplus_url(ORDER_CODE)  # where the cashier page sends the web view
    cashier_page: str = CASHIER_PAGE
    refuse_sessions: Result | None = None
    fail_config_fetches: bool = False
    terse: bool = False  # refusals with a bare message, not one meant for users
    sessions: dict[str, datetime] = field(default_factory=dict)
    auth_codes: list[str] = field(default_factory=list)
    config_fetches: int = 0
    decodes: list[DecodeRequest] = field(default_factory=list)
    merchant_redirects: dict[str, str] = field(default_factory=dict)  # more merchant pages: path → Location
    amounts_posted: list[dict[str, list[str]]] = field(default_factory=list)
    web_requests: list[httpx.Request] = field(default_factory=list)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def decoded(self) -> list[str]:
        return [request.code_value for request in self.decodes]

    def drop_sessions(self) -> None:
        """Alipay+ forgets its sessions before their expiry time (a restart, a revocation)."""
        self.sessions.clear()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)  # let concurrent callers interleave, as on a network
        path = request.url.path
        if path == CreateSessionRequest.PATH:
            return _answer(self._create_session(CreateSessionRequest.from_wire(request.content)))
        if path == FetchConfigRequest.PATH:
            self.config_fetches += 1
            if self.fail_config_fetches:
                return httpx.Response(503)
            return _answer(_config())
        if path == DecodeRequest.PATH:
            answer = self._decode(DecodeRequest.from_wire(request.content))
            if self.terse and not answer.result.is_success:
                answer.result = Result.of(ResultCode(answer.result.result_code), "err")
            return _answer(answer)
        self.web_requests.append(request)
        if path == CASHIER_PATH and request.method == "GET":
            return httpx.Response(200, text=self.cashier_page)
        if path == CASHIER_PATH:
            form = parse_qs(request.content.decode())
            self.amounts_posted.append(form)
            if form["amount"] == ["0"]:
                problem = "<p id=error role=alert>Enter an amount above zero in SGD, e.g. 12.50.</p>"
                return httpx.Response(422, text=problem + self.cashier_page)
            return httpx.Response(302, headers={"Location": self.cashier_redirect})
        if path in self.merchant_redirects:
            return httpx.Response(302, headers={"Location": self.merchant_redirects[path]})
        return httpx.Response(404, text="<p>no such page</p>")

    def _create_session(self, request: CreateSessionRequest) -> CreateSessionResponse:
        self.auth_codes.append(request.auth_code)
        if self.refuse_sessions is not None:
            return CreateSessionResponse(result=self.refuse_sessions)
        session_id = f"session-{len(self.auth_codes)}"
        expires_at = self.clock() + self.session_ttl
        self.sessions[session_id] = expires_at
        return CreateSessionResponse(result=Result.success(), session_id=session_id, session_expiry_time=expires_at)

    def _decode(self, request: DecodeRequest) -> DecodeResponse:
        self.decodes.append(request)
        expires_at = self.sessions.get(request.session_id)
        if expires_at is None or expires_at <= self.clock():
            return DecodeResponse(result=Result.of(ResultCode.SESSION_EXPIRED))
        if request.code_value == ENTRY_CODE:
            return DecodeResponse(
                result=Result.success(), code_type=CodeType.ENTRY_CODE, redirect_url=f"{ALIPAYPLUS}{CASHIER_PATH}"
            )
        if request.code_value == EXPIRED_ORDER_CODE:
            return DecodeResponse(result=Result.of(ResultCode.EXPIRED_CODE, EXPIRED_MESSAGE))
        if request.code_value == FROZEN_USER_CODE:  # our pay's F answer, passed on
            return DecodeResponse(
                result=Result.of(ResultCode.USER_STATUS_ABNORMAL),
                code_type=CodeType.ORDER_CODE,
                payment_request_id="pr-frozen",
            )
        if request.code_value in self.payments:
            payment_request_id, payment_url = self.payments[request.code_value]
            return DecodeResponse(
                result=Result.success(),
                code_type=CodeType.ORDER_CODE,
                payment_request_id=payment_request_id,
                payment_url=payment_url,
            )
        return DecodeResponse(result=Result.of(ResultCode.INVALID_CODE, INVALID_MESSAGE))


def _answer(message: CreateSessionResponse | DecodeResponse | FetchConfigResponse) -> httpx.Response:
    return httpx.Response(200, content=message.to_wire(), headers={"Content-Type": "application/json"})


def _config() -> FetchConfigResponse:
    marks = [
        RegionAcceptanceMarks(
            region=region,
            logos=[AcceptanceMarkLogo(name=name, logo_url=f"{ALIPAYPLUS}/logos/{name}") for name in names],
        )
        for region, names in REGIONS.items()
    ]
    return FetchConfigResponse(result=Result.success(), config_version="7", acceptance_marks=marks)


class AuthCodes:
    """The app's getAuthCode answer: a fresh authCode each time, as our server issues them."""

    def __init__(self) -> None:
        self.issued = 0

    async def __call__(self) -> str:
        await asyncio.sleep(0)  # the app asks our server
        self.issued += 1
        return f"AUTHCODE{self.issued:04d}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def alipayplus(clock: Clock) -> FakeAlipayPlus:
    return FakeAlipayPlus(clock)


@pytest.fixture
def auth_codes() -> AuthCodes:
    return AuthCodes()


@pytest.fixture
def make_sdk(alipayplus: FakeAlipayPlus, clock: Clock, auth_codes: AuthCodes) -> Callable[..., AlipayPlusClientSdk]:
    def make(device: DeviceInfo | None = None, **options: timedelta) -> AlipayPlusClientSdk:
        return AlipayPlusClientSdk(
            ALIPAYPLUS,
            PSP_ID,
            auth_codes,
            device or DeviceInfo(),
            transport=alipayplus.transport,
            clock=clock,
            **options,
        )

    return make


# --- step 1: the session ----------------------------------------------------------------------


async def test_one_session_serves_many_decodes(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus, auth_codes: AuthCodes
) -> None:
    async with make_sdk() as sdk:
        session_id = await sdk.ensure_session()
        outcomes = [await sdk.decode(ORDER_CODE) for _ in range(3)]

    assert session_id == "session-1" and alipayplus.auth_codes == ["AUTHCODE0001"] and auth_codes.issued == 1
    assert {request.session_id for request in alipayplus.decodes} == {"session-1"}
    assert [outcome.payment_url for outcome in outcomes] == [PAYMENT_URL] * 3


async def test_a_session_past_its_expiry_time_is_created_anew(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus, clock: Clock
) -> None:
    async with make_sdk() as sdk:
        await sdk.decode(ORDER_CODE)
        clock.now += timedelta(minutes=29)
        await sdk.decode(ORDER_CODE)
        still_first = len(alipayplus.auth_codes)
        clock.now += timedelta(minutes=1)  # the 30 minutes Alipay+ gave it are over
        outcome = await sdk.decode(ORDER_CODE)

    assert still_first == 1 and alipayplus.auth_codes == ["AUTHCODE0001", "AUTHCODE0002"]
    # the SDK knew before asking: no decode was sent with the stale session
    assert [request.session_id for request in alipayplus.decodes] == ["session-1", "session-1", "session-2"]
    assert outcome.payment_url == PAYMENT_URL


async def test_a_session_alipayplus_dropped_is_created_anew_and_the_decode_retried(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    async with make_sdk() as sdk:
        await sdk.decode(ORDER_CODE)
        alipayplus.drop_sessions()
        outcome = await sdk.decode(ORDER_CODE)
        again = await sdk.decode(ORDER_CODE)

    assert [request.session_id for request in alipayplus.decodes] == [
        "session-1",
        "session-1",
        "session-2",
        "session-2",
    ]
    assert len(alipayplus.auth_codes) == 2
    assert outcome.result.is_success and outcome.payment_url == PAYMENT_URL and again.payment_url == PAYMENT_URL


async def test_a_session_expired_answer_is_retried_only_once(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    alipayplus.session_ttl = timedelta(0)  # every session Alipay+ creates is already over
    async with make_sdk() as sdk:
        outcome = await sdk.decode(ORDER_CODE)

    assert len(alipayplus.decodes) == 2 and len(alipayplus.auth_codes) == 2
    assert outcome.result_code == ResultCode.SESSION_EXPIRED and outcome.payment_url is None
    assert outcome.message == "Alipay+ could not be reached just now. Scan the code again."


async def test_concurrent_decodes_share_one_new_session(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    async with make_sdk() as sdk:
        outcomes = await asyncio.gather(*(sdk.decode(ORDER_CODE) for _ in range(4)))

    assert alipayplus.auth_codes == ["AUTHCODE0001"]
    assert all(outcome.payment_url == PAYMENT_URL for outcome in outcomes)


async def test_a_refused_session_is_the_decodes_outcome(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    alipayplus.refuse_sessions = Result.of(ResultCode.USED_CODE)  # our applyToken's F answer, passed on
    async with make_sdk() as sdk:
        with pytest.raises(AlipayPlusSdkError) as refused:
            await sdk.ensure_session()
        outcome = await sdk.decode(ORDER_CODE)

    assert refused.value.result.result_code == ResultCode.USED_CODE
    assert outcome.result_code == ResultCode.USED_CODE and outcome.payment_url is None
    assert alipayplus.decodes == []  # nothing decoded without a session


async def test_a_failing_get_auth_code_reaches_the_app(alipayplus: FakeAlipayPlus, clock: Clock) -> None:
    class SignedOut(Exception):
        pass

    async def signed_out() -> str:
        raise SignedOut("sign in first")

    async with AlipayPlusClientSdk(
        ALIPAYPLUS, PSP_ID, signed_out, DeviceInfo(), transport=alipayplus.transport, clock=clock
    ) as sdk:
        with pytest.raises(SignedOut):
            await sdk.decode(ORDER_CODE)

    assert alipayplus.auth_codes == [] and alipayplus.decodes == []


async def test_forget_session_makes_the_next_decode_ask_for_an_auth_code(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    async with make_sdk() as sdk:
        await sdk.decode(ORDER_CODE)
        sdk.forget_session()
        await sdk.decode(ORDER_CODE)

    assert alipayplus.auth_codes == ["AUTHCODE0001", "AUTHCODE0002"]


# --- step 2: acceptance marks ------------------------------------------------------------------


async def test_the_configuration_is_cached_for_sixty_minutes(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus, clock: Clock
) -> None:
    async with make_sdk() as sdk:
        first = await sdk.get_acceptance_mark_logos("SG")
        clock.now += timedelta(minutes=59, seconds=59)
        await sdk.get_acceptance_mark_logos("HK")
        within_the_hour = alipayplus.config_fetches
        clock.now += timedelta(seconds=1)
        await sdk.get_acceptance_mark_logos("SG")

    assert [logo.name for logo in first] == ["Alipay+"]
    assert within_the_hour == 1 and alipayplus.config_fetches == 2


async def test_the_cache_period_is_configurable(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus, clock: Clock
) -> None:
    async with make_sdk(config_ttl=timedelta(minutes=5)) as sdk:
        await sdk.get_acceptance_mark_logos("SG")
        clock.now += timedelta(minutes=5)
        await sdk.get_acceptance_mark_logos("SG")

    assert alipayplus.config_fetches == 2


@pytest.mark.parametrize(
    ("device", "region", "names"),
    [
        (DeviceInfo(mcc="525"), None, ["Alipay+"]),  # a Singapore carrier
        (DeviceInfo(mcc="454", time_zone="Asia/Singapore"), None, ["Alipay+", "AlipayHK"]),  # the carrier wins
        (DeviceInfo(mcc="441"), None, ["Alipay+"]),  # Japan has two mobile country codes
        (DeviceInfo(time_zone="Asia/Seoul"), None, ["Alipay+", "Kakao Pay"]),  # no SIM: the time zone
        (DeviceInfo(mcc="310", time_zone="Asia/Singapore"), None, []),  # a US carrier: no Alipay+ there
        (DeviceInfo(time_zone="Europe/Paris"), None, []),
        (DeviceInfo(), None, []),  # nothing to tell where the phone is
        (DeviceInfo(mcc="502"), None, []),  # Malaysia: a region this configuration does not list
        (DeviceInfo(mcc="310"), "hk", ["Alipay+", "AlipayHK"]),  # the app says where
        (DeviceInfo(mcc="525"), "US", []),
    ],
    ids=[
        "carrier",
        "carrier over time zone",
        "second JP code",
        "time zone",
        "unsupported carrier",
        "unsupported time zone",
        "unknown",
        "region not in config",
        "region given",
        "region given unsupported",
    ],
)
async def test_logos_follow_the_region(
    make_sdk: Callable[..., AlipayPlusClientSdk], device: DeviceInfo, region: str | None, names: list[str]
) -> None:
    async with make_sdk(device) as sdk:
        logos = await sdk.get_acceptance_mark_logos(region)

    assert [logo.name for logo in logos] == names
    assert all(logo.logo_url.startswith(f"{ALIPAYPLUS}/logos/") for logo in logos)


async def test_a_failed_pull_keeps_the_stale_configuration_and_is_retried(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus, clock: Clock
) -> None:
    async with make_sdk() as sdk:
        alipayplus.fail_config_fetches = True
        nothing_yet = await sdk.get_acceptance_mark_logos("SG")
        alipayplus.fail_config_fetches = False
        fresh = await sdk.get_acceptance_mark_logos("SG")
        clock.now += timedelta(minutes=61)
        alipayplus.fail_config_fetches = True
        stale = await sdk.get_acceptance_mark_logos("SG")
        stale_again = await sdk.get_acceptance_mark_logos("SG")

    assert nothing_yet == [] and [logo.name for logo in fresh] == ["Alipay+"]
    assert stale == fresh and stale_again == fresh
    assert alipayplus.config_fetches == 4  # each failure is retried on the next call


# --- step 4: decode ---------------------------------------------------------------------------


async def test_an_order_code_comes_back_with_our_payment_page(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    async with make_sdk() as sdk:
        outcome = await sdk.decode(ORDER_CODE)

    assert outcome.result.is_success and outcome.code_type is CodeType.ORDER_CODE
    assert (outcome.code_value, outcome.payment_request_id, outcome.payment_url) == (ORDER_CODE, "pr-1", PAYMENT_URL)
    assert alipayplus.decoded == [ORDER_CODE] and alipayplus.web_requests == []  # no merchant page involved


async def test_an_entry_code_goes_through_the_cashier_page_and_the_alipayplus_url_is_intercepted(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    seen_pages: list[str] = []

    def enter_amount(page: str) -> str:
        seen_pages.append(page)
        return "12.50"

    async with make_sdk(DeviceInfo(os="iOS")) as sdk:
        outcome = await sdk.decode(ENTRY_CODE, enter_amount=enter_amount)

    assert seen_pages == [CASHIER_PAGE]
    assert alipayplus.amounts_posted == [{"amount": ["12.50"], "storeId": ["SG-KOPI-01"]}]  # hidden field kept
    assert alipayplus.decoded == [ENTRY_CODE, ORDER_CODE]  # the order code parsed from the Alipay+ URL
    # the web view opened the cashier page and posted the form, and never loaded the Alipay+ URL
    assert [(request.method, request.url.path) for request in alipayplus.web_requests] == [
        ("GET", CASHIER_PATH),
        ("POST", CASHIER_PATH),
    ]
    assert all("iPhone" in request.headers["User-Agent"] for request in alipayplus.web_requests)
    assert outcome.code_type is CodeType.ORDER_CODE and outcome.code_value == ORDER_CODE
    assert (outcome.payment_request_id, outcome.payment_url) == ("pr-1", PAYMENT_URL)


async def test_the_amount_may_be_a_decimal_typed_asynchronously(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    async def enter_amount(page: str) -> Decimal:
        await asyncio.sleep(0)  # the user takes a moment
        return Decimal("0.30")

    async with make_sdk() as sdk:
        outcome = await sdk.decode(ENTRY_CODE, enter_amount=enter_amount)

    assert alipayplus.amounts_posted[0]["amount"] == ["0.30"] and outcome.payment_url == PAYMENT_URL


async def test_redirects_between_merchant_pages_are_followed_up_to_the_alipayplus_url(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    other_code = "https://qr.alipayplus.sandbox/o/order-2"
    alipayplus.payments[other_code] = ("pr-2", "http://mpp.test/mpm/pay/pr-2/p-2")
    alipayplus.cashier_redirect = "/sandbox/merchant/hop"  # relative, as a Location may be
    alipayplus.merchant_redirects["/sandbox/merchant/hop"] = f"/aplus/decode?{urlencode({'codeValue': other_code})}"
    async with make_sdk() as sdk:
        outcome = await sdk.decode(ENTRY_CODE, enter_amount=lambda _page: "3")

    assert [request.url.path for request in alipayplus.web_requests] == [
        CASHIER_PATH,
        CASHIER_PATH,
        "/sandbox/merchant/hop",
    ]
    assert alipayplus.decoded == [ENTRY_CODE, other_code] and outcome.payment_request_id == "pr-2"


async def test_a_merchant_page_that_never_stops_redirecting_is_given_up(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    alipayplus.cashier_redirect = "/sandbox/merchant/hop"
    alipayplus.merchant_redirects["/sandbox/merchant/hop"] = "/sandbox/merchant/hop"
    async with make_sdk() as sdk:
        outcome = await sdk.decode(ENTRY_CODE, enter_amount=lambda _page: "3")

    assert outcome.result_code == ResultCode.PROCESS_FAIL and outcome.payment_url is None
    assert outcome.message == "The merchant's page redirected too often."
    assert alipayplus.decoded == [ENTRY_CODE] and len(alipayplus.web_requests) < 10


async def test_an_entry_code_without_an_amount_to_enter_opens_nothing(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    async with make_sdk() as sdk:
        outcome = await sdk.decode(ENTRY_CODE)

    assert outcome.result_code == ResultCode.PROCESS_FAIL and outcome.code_type is None and outcome.payment_url is None
    assert outcome.message == "This code needs the amount entered on the merchant's page."
    assert alipayplus.web_requests == []


async def test_an_amount_the_merchant_rejects_carries_the_merchants_words(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    async with make_sdk() as sdk:
        outcome = await sdk.decode(ENTRY_CODE, enter_amount=lambda _page: "0")

    assert outcome.result.result_status is ResultStatus.FAIL and outcome.payment_url is None
    assert outcome.message == "Enter an amount above zero in SGD, e.g. 12.50."
    assert alipayplus.decoded == [ENTRY_CODE]  # no order code came back to decode


async def test_a_cashier_page_that_does_not_open_is_a_refusal(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    alipayplus.cashier_page = "<p>Closed for the day</p>"
    async with make_sdk() as sdk:
        no_form = await sdk.decode(ENTRY_CODE, enter_amount=lambda _page: "3")

    assert no_form.message == "The merchant's page has no amount to enter." and no_form.payment_url is None
    assert [request.method for request in alipayplus.web_requests] == ["GET"]


@pytest.mark.parametrize(
    ("code_value", "result_code", "message"),
    [
        (UNKNOWN_CODE, ResultCode.INVALID_CODE, INVALID_MESSAGE),
        (EXPIRED_ORDER_CODE, ResultCode.EXPIRED_CODE, EXPIRED_MESSAGE),
        (FROZEN_USER_CODE, ResultCode.USER_STATUS_ABNORMAL, "The user's account is not active"),  # pay's own words
    ],
    ids=["invalid", "expired", "refused by our pay"],
)
async def test_a_refused_code_carries_its_result_and_the_message_to_show(
    make_sdk: Callable[..., AlipayPlusClientSdk], code_value: str, result_code: ResultCode, message: str
) -> None:
    async with make_sdk() as sdk:
        outcome = await sdk.decode(code_value)

    assert outcome.result.result_status is ResultStatus.FAIL and outcome.result_code == result_code
    assert outcome.message == message and outcome.code_value == code_value and outcome.payment_url is None


async def test_our_words_for_invalid_and_expired_codes_whatever_alipayplus_says(
    make_sdk: Callable[..., AlipayPlusClientSdk], alipayplus: FakeAlipayPlus
) -> None:
    async with make_sdk() as sdk:
        alipayplus.terse = True
        invalid = await sdk.decode(UNKNOWN_CODE)
        expired = await sdk.decode(EXPIRED_ORDER_CODE)

    assert (invalid.message, expired.message) == (INVALID_MESSAGE, EXPIRED_MESSAGE)


async def test_alipayplus_out_of_reach_is_an_unknown_outcome_to_retry(clock: Clock, auth_codes: AuthCodes) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with AlipayPlusClientSdk(
        ALIPAYPLUS, PSP_ID, auth_codes, DeviceInfo(), transport=httpx.MockTransport(down), clock=clock
    ) as sdk:
        outcome = await sdk.decode(ORDER_CODE)
        logos = await sdk.get_acceptance_mark_logos("SG")

    assert outcome.result.result_status is ResultStatus.UNKNOWN and outcome.result_code == ResultCode.UNKNOWN_EXCEPTION
    assert outcome.message == "Alipay+ could not be reached just now. Scan the code again."
    assert logos == []


def test_the_device_user_agent_names_its_os() -> None:
    assert "Android" in DeviceInfo(os="Android").user_agent
    assert "iPhone" in DeviceInfo(os="iOS").user_agent and "Android" not in DeviceInfo(os="iOS").user_agent
    assert DeviceInfo(os="iOS", user_agent="CustomBrowser/2 (iPhone)").user_agent == "CustomBrowser/2 (iPhone)"
