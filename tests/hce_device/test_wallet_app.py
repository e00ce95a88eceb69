"""The wallet app against fakes of our API (the contract's app endpoints and confirmation page),
of Alipay+ (the client SDK's endpoints, see the SDK's tests) and of a merchant's web page."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from html import escape
from http.cookies import SimpleCookie
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from alipayplus import ResultCode
from hce_device.alipayplus_client_sdk import DeviceInfo
from hce_device.wallet_app import (
    WALLET_HOME,
    Destination,
    NotSignedIn,
    PaymentStatus,
    Verdict,
    WalletApp,
    WalletAppError,
)

from .test_alipayplus_client_sdk import (
    ALIPAYPLUS,
    ENTRY_CODE,
    INVALID_MESSAGE,
    ORDER_CODE,
    PSP_ID,
    UNKNOWN_CODE,
    Clock,
    FakeAlipayPlus,
)

API = "http://mpp.test"
MERCHANT = "http://merchant.test"
LOGIN_ID, PIN, CUSTOMER_ID = "852-11112222", "246810", "2188000000000001"
ANDROID = DeviceInfo(os="Android", mcc="525")
IPHONE = DeviceInfo(os="iOS", time_zone="Asia/Hong_Kong")
WAP_PAGE = f"{MERCHANT}/result?order=7"  # the merchant's paymentRedirectUrl
OUR_PAGE = f"{API}/mpm/pay/pr-1/p-pr-1"
Outcome = Literal["success", "fail", "cancelled"]


@dataclass
class FakePayment:
    """One payment our pay opened, as its confirmation page sees it."""

    redirect_url: str | None = None
    in_store: bool = True  # scan-to-pay
    confirm_fails: bool = False  # e.g. the balance is not enough
    outcome: Outcome | None = None  # None: waiting for the user


@dataclass
class FakeMpp:
    """Our API's app-facing endpoints and the MPM confirmation page, per the contract."""

    payments: dict[str, FakePayment] = field(default_factory=dict)  # path → payment
    sessions: dict[str, str] = field(default_factory=dict)  # token → customer
    issued_auth_codes: list[str] = field(default_factory=list)
    logins: int = 0
    requests: list[httpx.Request] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def payment(self, payment: FakePayment, name: str = "pr-1") -> str:
        """Open a payment; its paymentUrl."""
        path = f"/mpm/pay/{name}/p-{name}"
        self.payments[path] = payment
        return f"{API}{path}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/app/v1/login":
            body = json.loads(request.content)
            if (body["loginId"], body["pin"]) != (LOGIN_ID, PIN):
                return httpx.Response(401, json={"detail": "Wrong login or PIN."})
            self.logins += 1
            issued = f"token-{self.logins}"
            self.sessions[issued] = CUSTOMER_ID
            answer = {"sessionToken": issued, "customerId": CUSTOMER_ID, "expiresAt": "2026-12-07T12:00:00+00:00"}
            return httpx.Response(200, json=answer, headers={"Set-Cookie": f"mpp_session={issued}; HttpOnly; Path=/"})
        token = _bearer(request) if path.startswith("/app/") else _session_cookie(request)
        if path == "/app/v1/logout":
            self.sessions.pop(token or "", None)
            return httpx.Response(204)
        if token not in self.sessions:
            if path.startswith("/app/"):
                return httpx.Response(401, json={"detail": "Sign in to the wallet first."})
            return httpx.Response(401, text="<h1>Sign in</h1><p>Open this payment from the wallet app.</p>")
        if path == "/app/v1/authCode":
            assert json.loads(request.content) == {"scopes": "BASE_USER_INFO"}
            self.issued_auth_codes.append(f"AC{len(self.issued_auth_codes) + 1:030d}")
            return httpx.Response(200, json={"authCode": self.issued_auth_codes[-1], "expiresAt": "2026-12-07"})
        if path == "/app/v1/codes/identify":
            return httpx.Response(200, json=_verdict(json.loads(request.content)["codeValue"]))
        if path in self.payments:
            return self._page(request, self.payments[path])
        return httpx.Response(404, text="<h1>Not found</h1>")

    def _page(self, request: httpx.Request, payment: FakePayment) -> httpx.Response:
        if request.method == "POST":
            action = parse_qs(request.content.decode())["action"][0]
            self.actions.append(action)
            if payment.outcome is None:
                confirmed: Outcome = "fail" if payment.confirm_fails else "success"
                payment.outcome = confirmed if action == "confirm" else "cancelled"
        if payment.outcome is None:
            return httpx.Response(
                200,
                text=f'<h1>Pay Kopi Corner</h1><form method="post" action="{request.url.path}">'
                '<button name="action" value="confirm">Confirm payment</button>'
                '<button name="action" value="cancel">Cancel</button></form>',
            )
        return self._leave(request, payment, payment.outcome)

    def _leave(self, request: httpx.Request, payment: FakePayment, outcome: Outcome) -> httpx.Response:
        """The contract's redirect rules (seed 003, step 7)."""
        ios = "iPhone" in request.headers["User-Agent"]
        url = payment.redirect_url
        if outcome == "success" and url:
            if urlsplit(url).scheme not in ("http", "https"):
                return httpx.Response(303, headers={"Location": WALLET_HOME if payment.in_store else url})
            if not ios:
                return httpx.Response(303, headers={"Location": url})
        return httpx.Response(
            200,
            text=f'<main><p id="status" hidden>{outcome}</p><h1>Payment {escape(outcome)}</h1>'
            f'<a id="next" href="{WALLET_HOME}">Back to the wallet</a></main>',
        )

    def paths(self) -> list[str]:
        return [f"{request.method} {request.url.path}" for request in self.requests]


def _session_cookie(request: httpx.Request) -> str | None:
    cookies = SimpleCookie(request.headers.get("Cookie", ""))
    return cookies["mpp_session"].value if "mpp_session" in cookies else None


def _bearer(request: httpx.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme == "Bearer" else None


def _verdict(code_value: str) -> dict[str, str | None]:
    if code_value.startswith("https://qr.alipayplus.sandbox/"):
        verdict, message, action = "ALIPAY_PLUS", "", "DECODE"
    elif code_value.startswith("mppwallet:pay/"):
        verdict, message, action = "LOCAL", "Pay a wallet friend.", None
    elif code_value == "busy":
        verdict, message, action = "RETRY_LATER", "We could not check this code just now. Try again.", None
    else:
        verdict, message, action = "INVALID", "This code is not valid for payment.", None
    return {"verdict": verdict, "message": message, "postCodeMatchAction": action, "acDecodeConfig": None}


@dataclass
class Merchant:
    """A merchant's web result page, behind one redirect as real ones often are."""

    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/result":
            return httpx.Response(302, headers={"Location": f"/result/shown?{request.url.query.decode()}"})
        return httpx.Response(200, text="<p>Thanks! Paid.</p>")


@dataclass
class World:
    mpp: FakeMpp
    alipayplus: FakeAlipayPlus
    merchant: Merchant

    def transport(self) -> httpx.MockTransport:
        async def route(request: httpx.Request) -> httpx.Response:
            host = request.url.host
            if host == urlsplit(API).hostname:
                return self.mpp.handle(request)
            if host == urlsplit(MERCHANT).hostname:
                return self.merchant.handle(request)
            return await self.alipayplus.handle(request)

        return httpx.MockTransport(route)


@pytest.fixture
def world() -> World:
    alipayplus = FakeAlipayPlus(Clock())
    alipayplus.payments.clear()
    return World(FakeMpp(), alipayplus, Merchant())


@pytest.fixture
async def make_app(world: World) -> AsyncIterator[Callable[[DeviceInfo], WalletApp]]:
    apps: list[WalletApp] = []

    def make(device: DeviceInfo) -> WalletApp:
        app = WalletApp(API, ALIPAYPLUS, PSP_ID, device, transport=world.transport(), clock=world.alipayplus.clock)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.aclose()


@pytest.fixture
async def app(make_app: Callable[[DeviceInfo], WalletApp]) -> WalletApp:
    app = make_app(ANDROID)
    await app.login(LOGIN_ID, PIN)
    return app


def order_code(world: World, payment: FakePayment, name: str = "pr-1") -> str:
    """A merchant's order code whose decode opens ``payment`` at our API."""
    code = f"https://qr.alipayplus.sandbox/o/{name}"
    world.alipayplus.payments[code] = (name, world.mpp.payment(payment, name))
    return code


# --- the login ---------------------------------------------------------------------------------


async def test_login_signs_the_app_calls_in_with_a_bearer_token(world: World, app: WalletApp) -> None:
    await app.scan("https://example.com/menu")

    login, identify = world.mpp.requests
    assert json.loads(login.content) == {"loginId": LOGIN_ID, "pin": PIN}
    assert identify.headers["Authorization"] == "Bearer token-1" and app.customer_id == CUSTOMER_ID
    assert "Android" in identify.headers["User-Agent"]


async def test_a_wrong_pin_is_not_signed_in(world: World, make_app: Callable[[DeviceInfo], WalletApp]) -> None:
    app = make_app(ANDROID)
    with pytest.raises(NotSignedIn, match="Wrong login or PIN"):
        await app.login(LOGIN_ID, "000000")

    assert app.customer_id is None
    with pytest.raises(NotSignedIn):
        await app.scan(ORDER_CODE)


@pytest.mark.parametrize("action", ["scan", "auth code"])
async def test_an_action_needing_the_login_without_it_raises_before_asking_anyone(
    world: World, make_app: Callable[[DeviceInfo], WalletApp], action: str
) -> None:
    app = make_app(ANDROID)
    with pytest.raises(NotSignedIn, match="Sign in to the wallet first"):
        await (app.scan(ORDER_CODE) if action == "scan" else app.get_auth_code())

    assert world.mpp.requests == [] and world.alipayplus.decodes == []


async def test_logout_revokes_the_session_and_forgets_the_alipayplus_one(world: World, app: WalletApp) -> None:
    code = order_code(world, FakePayment())
    await app.scan(code)
    await app.logout()
    logout = world.mpp.requests[-1]
    with pytest.raises(NotSignedIn):
        await app.scan(code)
    await app.login(LOGIN_ID, PIN)
    await app.scan(code)

    assert (logout.url.path, logout.headers["Authorization"]) == ("/app/v1/logout", "Bearer token-1")
    assert list(world.mpp.sessions) == ["token-2"] and app.customer_id == CUSTOMER_ID
    # after signing in again the client SDK needed a new session: a second authCode
    assert world.alipayplus.auth_codes == world.mpp.issued_auth_codes and len(world.mpp.issued_auth_codes) == 2


async def test_a_session_our_api_no_longer_accepts_signs_the_app_out(world: World, app: WalletApp) -> None:
    world.mpp.sessions.clear()  # expired at the server
    with pytest.raises(NotSignedIn, match="Sign in to the wallet first"):
        await app.scan(ORDER_CODE)

    assert app.customer_id is None


# --- the scan page -----------------------------------------------------------------------------


async def test_the_scan_page_shows_the_logos_of_where_the_phone_is(app: WalletApp) -> None:
    here = await app.scan_page_logos()  # carrier 525: Singapore
    elsewhere = await app.scan_page_logos("US")

    assert [logo.name for logo in here] == ["Alipay+"] and elsewhere == []


@pytest.mark.parametrize(
    ("code_value", "verdict", "message"),
    [
        ("mppwallet:pay/friend-7", Verdict.LOCAL, "Pay a wallet friend."),
        ("https://example.com/menu", Verdict.INVALID, "This code is not valid for payment."),
        ("busy", Verdict.RETRY_LATER, "We could not check this code just now. Try again."),
    ],
)
async def test_codes_alipayplus_is_not_asked_about(
    world: World, app: WalletApp, code_value: str, verdict: Verdict, message: str
) -> None:
    scanned = await app.scan(code_value)

    assert (scanned.verdict, scanned.message, scanned.decoded, scanned.page) == (verdict, message, None, None)
    assert json.loads(world.mpp.requests[-1].content) == {"codeValue": code_value}
    assert world.alipayplus.decodes == [] and world.alipayplus.auth_codes == []


async def test_an_alipayplus_code_is_decoded_with_a_session_from_our_auth_code(world: World, app: WalletApp) -> None:
    code = order_code(world, FakePayment())
    scanned = await app.scan(code)

    assert scanned.verdict is Verdict.ALIPAY_PLUS and scanned.page is not None and scanned.decoded is not None
    assert world.alipayplus.auth_codes == world.mpp.issued_auth_codes == [f"AC{1:030d}"]
    assert world.alipayplus.decoded == [code] and scanned.decoded.payment_request_id == "pr-1"
    # our page opened in the web view with the login cookie, not the app's bearer header
    opened = world.mpp.requests[-1]
    assert (opened.method, str(opened.url)) == ("GET", scanned.page.url)
    assert _session_cookie(opened) == "token-1" and "Authorization" not in opened.headers
    assert 'value="confirm"' in scanned.page.html


async def test_a_code_alipayplus_refuses_shows_its_message(world: World, app: WalletApp) -> None:
    scanned = await app.scan(UNKNOWN_CODE)

    assert scanned.verdict is Verdict.ALIPAY_PLUS and scanned.page is None and scanned.decoded is not None
    assert scanned.message == INVALID_MESSAGE and scanned.decoded.result_code == ResultCode.INVALID_CODE
    assert not any(request.url.path.startswith("/mpm/") for request in world.mpp.requests)


async def test_an_entry_code_takes_the_amount_the_user_types(world: World, app: WalletApp) -> None:
    world.alipayplus.cashier_redirect = f"{ALIPAYPLUS}/aplus/decode?codeValue={order_code(world, FakePayment())}"
    scanned = await app.scan(ENTRY_CODE, amount=Decimal("12.50"))

    assert world.alipayplus.amounts_posted[0]["amount"] == ["12.50"]
    assert world.alipayplus.decoded == [ENTRY_CODE, "https://qr.alipayplus.sandbox/o/pr-1"]
    assert scanned.page is not None and scanned.page.url == f"{API}/mpm/pay/pr-1/p-pr-1"


async def test_an_entry_code_scanned_without_an_amount_opens_nothing(world: World, app: WalletApp) -> None:
    scanned = await app.scan(ENTRY_CODE)

    assert scanned.page is None and scanned.message == "This code needs the amount entered on the merchant's page."
    assert world.alipayplus.web_requests == []


# --- our confirmation page and where it leads --------------------------------------------------


@pytest.mark.parametrize(
    ("device", "redirect_url", "options", "status", "destination", "url"),
    [
        (ANDROID, WAP_PAGE, {}, "success", Destination.MERCHANT_PAGE, f"{MERCHANT}/result/shown?order=7"),
        (IPHONE, WAP_PAGE, {}, "success", Destination.RESULT_PAGE, OUR_PAGE),
        (ANDROID, "kopi://orders/7", {"in_store": True}, "success", Destination.WALLET_HOME, WALLET_HOME),
        (IPHONE, "kopi://orders/7", {"in_store": False}, "success", Destination.MERCHANT_APP, "kopi://orders/7"),
        (ANDROID, None, {}, "success", Destination.RESULT_PAGE, OUR_PAGE),
        (ANDROID, WAP_PAGE, {"confirm_fails": True}, "fail", Destination.RESULT_PAGE, OUR_PAGE),
    ],
    ids=["android wap", "ios wap", "merchant app after scan", "merchant app", "no redirect", "failed"],
)
async def test_confirm_goes_where_the_page_sends_the_user(
    world: World,
    make_app: Callable[[DeviceInfo], WalletApp],
    device: DeviceInfo,
    redirect_url: str | None,
    options: dict[str, Any],
    status: str,
    destination: Destination,
    url: str,
) -> None:
    app = make_app(device)
    await app.login(LOGIN_ID, PIN)
    scanned = await app.scan(order_code(world, FakePayment(redirect_url, **options)))
    assert scanned.page is not None
    result = await scanned.page.confirm()

    assert (result.status, result.destination, result.url) == (status, destination, url)
    assert result.next_url == (WALLET_HOME if destination is Destination.RESULT_PAGE else None)
    assert world.mpp.actions == ["confirm"]
    [pressed] = [request for request in world.mpp.requests if request.method == "POST" and "/mpm/" in request.url.path]
    assert ("iPhone" in pressed.headers["User-Agent"]) is (device.os == "iOS")  # our page reads the OS from it
    merchant_opened = [str(request.url) for request in world.merchant.requests]
    assert merchant_opened == ([WAP_PAGE, url] if destination is Destination.MERCHANT_PAGE else [])


async def test_the_merchant_page_gets_none_of_our_login(world: World, app: WalletApp) -> None:
    scanned = await app.scan(order_code(world, FakePayment(WAP_PAGE)))
    assert scanned.page is not None
    await scanned.page.confirm()

    assert [request.url.path for request in world.merchant.requests] == ["/result", "/result/shown"]
    for request in world.merchant.requests:
        assert "mpp_session" not in request.headers.get("Cookie", "") and "Authorization" not in request.headers


async def test_cancel_ends_on_our_result_page(world: World, app: WalletApp) -> None:
    scanned = await app.scan(order_code(world, FakePayment(WAP_PAGE)))
    assert scanned.page is not None
    result = await scanned.page.cancel()

    assert (result.status, result.destination) == (PaymentStatus.CANCELLED, Destination.RESULT_PAGE)
    assert world.mpp.actions == ["cancel"] and world.merchant.requests == []


async def test_a_payment_scanned_again_after_it_ended_shows_where_it_ended(world: World, app: WalletApp) -> None:
    code = order_code(world, FakePayment())
    first = await app.scan(code)
    assert first.page is not None
    await first.page.confirm()
    again = await app.scan(code)

    assert again.page is None and again.result is not None
    assert (again.result.status, again.result.destination) == (PaymentStatus.SUCCESS, Destination.RESULT_PAGE)
    assert again.message == "This payment has already ended: success." and world.mpp.actions == ["confirm"]


async def test_pressing_a_button_after_the_login_ended_is_not_signed_in(world: World, app: WalletApp) -> None:
    scanned = await app.scan(order_code(world, FakePayment()))
    assert scanned.page is not None
    world.mpp.sessions.clear()

    with pytest.raises(NotSignedIn):
        await scanned.page.confirm()
    assert world.mpp.actions == []


async def test_a_page_without_a_result_is_an_error(world: World, app: WalletApp) -> None:
    code = "https://qr.alipayplus.sandbox/o/gone"
    world.alipayplus.payments[code] = ("gone", f"{API}/mpm/pay/gone/p-gone")  # a paymentUrl our API does not know

    with pytest.raises(WalletAppError, match="HTTP 404"):
        await app.scan(code)
