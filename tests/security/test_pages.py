"""Issue 13, item 6: our payment pages (the Easy Pay verification page, the MPM confirmation page).

The reproductions replayed, and what they must get now:

* pages sent no X-Frame-Options, CSP or Cache-Control: every answer of both pages (the page, a
  wrong code, the redirect after the right one, an invalid link, a refusal) carries them all;
* a cross-origin POST to the verification page used up an attempt: a post without the form's
  token, with a wrong one, or from another origin is answered 403, and the workflow's state shows
  the attempts untouched and no debit;
* ``paymentRedirectUrl`` sent the browser anywhere (``https://evil.example/...?status=success``):
  only an allow-listed http(s) host gets the 303; anything else ends on our own result page, the
  payment itself as final as ever.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import Amount, KeyRegistry, PayRequest, Verifier
from api import pages
from api.main import create_app
from api.routers import mpm, verification
from api.services import Services
from sandbox.alipayplus.driver import easy_pay_order
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.code_service import CodeService
from tests.api.conftest import AlipayPlusCaller, code_service_transport, result_of
from tests.api.test_mpm import KRW_USER, Order, Phone, access_token, krw_balance, mpm_pay, ordered, status_shown
from tests.page_steps import back_to, handed_on, shown_after
from wallet.ledger import Ledger
from wallet.orders import PaymentState
from wallet.settings import Settings
from wallet.states import PaymentStatus
from workflows.payment_order import PaymentOrderWorkflow

pytestmark = pytest.mark.timeout(60)

PIN_USER = ("852-11112222", "2160220037535021")
OTP_USER = ("852-95303585", "2160220037535020")  # seed 004's sample user (SMS OTP)
PIN, WRONG = "246810", "135791"
PRICE = Amount(currency="IDR", value=5000)
ALIPAY_RESULT = "https://ac.alipay.com/page/result?order=7"  # an Alipay+ result page (allow-listed)
EVIL = "https://evil.example/x?status=success"
EVIL_ORIGIN = "https://evil.example"
_UTC8 = timezone(timedelta(hours=8))
HEADERS = {
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "referrer-policy": "strict-origin",
    "x-content-type-options": "nosniff",
}
CSP_DIRECTIVES = ["default-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"]


# --- the API in process, as tests/api has it ---------------------------------------------------


async def _running(settings: Settings, client: Client) -> AsyncIterator[FastAPI]:
    application = create_app(settings, client, code_service_transport=code_service_transport(CodeService()))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def app(settings: Settings, client: Client, worker: Worker, database: Ledger) -> AsyncIterator[FastAPI]:
    async for application in _running(settings, client):
        yield application


@pytest.fixture(scope="module")
async def narrow_app(settings: Settings, client: Client, worker: Worker, database: Ledger) -> AsyncIterator[FastAPI]:
    """The API with MPM's redirects narrowed to one merchant (``MPP_MPM_REDIRECT_HOSTS``)."""
    narrowed = settings.model_copy(update={"mpm_redirect_hosts": ["merchant.example"]})
    async for application in _running(narrowed, client):
        yield application


def _http(app: FastAPI, settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url)


@pytest.fixture(scope="module")
async def api(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with _http(app, settings) as http:
        yield http


@pytest.fixture(scope="module")
def mpp_verifier(settings: Settings) -> Verifier:
    keys = KeyRegistry()
    keys.add_file(settings.client_id, settings.key_version, settings.mpp_public_key_file)
    return Verifier(settings.client_id, keys)


@pytest.fixture(scope="module")
def alipay(api: httpx.AsyncClient, alipayplus: SandboxAlipayPlus, mpp_verifier: Verifier) -> AlipayPlusCaller:
    return AlipayPlusCaller(api, alipayplus, mpp_verifier)


@pytest.fixture
def services(app: FastAPI) -> Services:
    return app.state.services  # type: ignore[no-any-return]


@pytest.fixture
async def user(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The payer's browser: its own client, no cookies shared with Alipay+'s."""
    async with _http(app, settings) as http:
        yield http


# --- helpers ---------------------------------------------------------------------------------


@dataclass
class Payment:
    request: PayRequest
    payment_id: str
    page: str  # the verification page's path

    @property
    def workflow_id(self) -> str:
        return f"pay/{self.request.payment_request_id}"


async def ordered_easy_pay(
    alipay: AlipayPlusCaller,
    env: WorkflowEnvironment,
    settings: Settings,
    redirect_url: str | None = ALIPAY_RESULT,
    login_id: str = PIN_USER[0],
) -> Payment:
    """pay #2 for a new order: it waits for the user on the verification page."""
    request = easy_pay_order(f"sec-{uuid.uuid4().hex}", login_id, PRICE, settings.psp_id, redirect_url=redirect_url)
    expiry = (await env.get_current_time() + timedelta(minutes=10)).astimezone(_UTC8).replace(microsecond=0)
    request = request.model_copy(update={"payment_expiry_time": expiry})
    created = await alipay.call(PayRequest.PATH, request.to_wire())
    assert result_of(created) == ("U", "PAYMENT_IN_PROCESS"), created
    return Payment(
        request, created["paymentId"], f"/easypay/verify/{request.payment_request_id}/{created['paymentId']}"
    )


async def state_of(client: Client, workflow_id: str) -> PaymentState:
    state: PaymentState = await client.get_workflow_handle(workflow_id).query(PaymentOrderWorkflow.state)
    return state


def pin_balance(database: Ledger) -> int:
    return database.balance(Ledger.user_account_id(PIN_USER[1]))


def assert_page_headers(response: httpx.Response) -> None:
    """Every header the pages must send, whatever the answer."""
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.status_code, name, response.headers.get(name))
    csp = response.headers.get("content-security-policy", "")
    for directive in CSP_DIRECTIVES:
        assert directive in [part.strip() for part in csp.split(";")] or re.search(
            rf"(^|; ){re.escape(directive)}( |;|$)", csp
        ), (directive, csp)
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, csp
    for style in re.findall(r"<style>(.*?)</style>", response.text, re.DOTALL):  # the page renders as styled
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp, (response.status_code, csp)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 403, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/html")
    assert "Nothing was changed" in response.text
    assert_page_headers(response)


def form_of(page: httpx.Response, action_suffix: str = "") -> dict[str, str]:
    fields = pages.form_fields(page.text, action_suffix)
    assert fields.get(pages.CSRF_FIELD), page.text
    return fields


# --- headers ---------------------------------------------------------------------------------


async def test_every_verification_page_answer_carries_the_headers(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, user: httpx.AsyncClient
) -> None:
    payment = await ordered_easy_pay(alipay, env, settings)

    shown = await user.get(payment.page)
    form = form_of(shown)
    wrong = await user.post(payment.page, data={"code": WRONG, **form})
    unreadable = await user.post(payment.page, data={"code": "1" * 17, **form})  # over the field's limit
    told = await shown_after(user, wrong)
    right = await user.post(payment.page, data={"code": PIN, **form})
    final = await user.get(payment.page)  # the page once paid: our result page, on to Alipay+'s
    forged = await user.post(payment.page, data={"code": PIN})
    invalid = f"/easypay/verify/{payment.request.payment_request_id}/{uuid.uuid4().hex}"
    not_found = await user.get(invalid)

    assert shown.status_code == 200 and back_to(payment.page, wrong) and "Wrong PIN" in told.text
    assert unreadable.status_code == 422 and "1" * 17 not in unreadable.text  # an HTML page, nothing echoed
    assert back_to(payment.page, right)
    assert final.status_code == 200 and (handed_on(final) or "").startswith(ALIPAY_RESULT)
    assert not_found.status_code == 404
    assert_refused(forged)
    for response in (shown, wrong, told, unreadable, right, final, not_found):
        assert_page_headers(response)


async def test_every_mpm_page_answer_carries_the_headers(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, app: FastAPI, database: Ledger
) -> None:
    order = await ordered(alipay, settings, mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER)))
    async with _http(app, settings) as stranger_http, _http(app, settings) as payer_http:
        stranger, payer = Phone(stranger_http), Phone(payer_http)
        assert (await payer.login(KRW_USER)).status_code == 200

        sign_in = await stranger.open(order.page)
        not_found = await payer.open(f"/mpm/pay/{order.payment_request_id}/{uuid.uuid4().hex}")
        shown = await payer.open(order.page)
        forged = await payer.http.post(order.page, data={"action": "confirm"})
        confirmed = await payer.press(order.page, "confirm")

    assert sign_in.status_code == 401 and not_found.status_code == 404 and shown.status_code == 200
    assert confirmed.status_code == 200 and status_shown(confirmed) == "success"
    assert_refused(forged)
    for response in (sign_in, not_found, shown, confirmed):
        assert_page_headers(response)


async def test_the_csp_admits_the_pages_own_styles_and_nothing_inline_else(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, user: httpx.AsyncClient
) -> None:
    """The templates keep their inline <style>: each is allowed by its hash, so they render as before."""
    payment = await ordered_easy_pay(alipay, env, settings, login_id=OTP_USER[0])
    shown = await user.get(payment.page)
    csp = shown.headers["content-security-policy"]

    styles = re.findall(r"<style>(.*?)</style>", shown.text, re.DOTALL)
    assert styles
    for style in styles:
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "<script" not in shown.text and " style=" not in shown.text
    assert "script-src 'none'" in csp
    # Chromium applies form-action to a form post's redirect: Alipay+'s result page must be allowed.
    assert "https://ac.alipay.com:*" in csp.split("form-action", 1)[1].split(";")[0]


# --- form tokens -------------------------------------------------------------------------------


def _other_tokens(settings: Settings, payment: Payment) -> dict[str, dict[str, str]]:
    """Forged form fields: none at all, a made-up token, and real tokens for something else."""
    prid = payment.request.payment_request_id
    return {
        "missing": {},
        "empty": {pages.CSRF_FIELD: ""},
        "made up": {pages.CSRF_FIELD: base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=")},
        "non-ascii": {pages.CSRF_FIELD: "é" * 43},
        "the resend form's": {
            pages.CSRF_FIELD: pages.form_token(settings.secret_key, verification.RESEND_FORM, prid, payment.payment_id)
        },
        "another payment's": {
            pages.CSRF_FIELD: pages.form_token(settings.secret_key, verification.CODE_FORM, prid, uuid.uuid4().hex)
        },
        "another key's": {
            pages.CSRF_FIELD: pages.form_token(
                b"not the server secret", verification.CODE_FORM, prid, payment.payment_id
            )
        },
    }


@pytest.mark.parametrize(
    "forgery",
    ["missing", "empty", "made up", "non-ascii", "the resend form's", "another payment's", "another key's"],
)
async def test_a_post_without_the_pages_token_is_refused_and_uses_no_attempt(
    alipay: AlipayPlusCaller,
    env: WorkflowEnvironment,
    settings: Settings,
    client: Client,
    database: Ledger,
    user: httpx.AsyncClient,
    forgery: str,
) -> None:
    payment = await ordered_easy_pay(alipay, env, settings)
    fields = _other_tokens(settings, payment)[forgery]
    before = pin_balance(database)

    wrong = await user.post(payment.page, data={"code": WRONG, **fields})
    right = await user.post(payment.page, data={"code": PIN, **fields})
    state = await state_of(client, payment.workflow_id)

    assert_refused(wrong)
    assert_refused(right)
    assert state.status is PaymentStatus.PROCESSING and state.attempts_left == settings.verification_attempts
    assert pin_balance(database) == before  # no debit

    # The page's own form still works, with every attempt left.
    form = form_of(await user.get(payment.page))
    answered = await shown_after(user, await user.post(payment.page, data={"code": WRONG, **form}))
    assert f"{settings.verification_attempts - 1} attempts left" in answered.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL_ORIGIN},
        {"Origin": "null"},  # a sandboxed frame or data: URL on another site
        {"Origin": "http://testserver.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host is not us either
        {"Origin": EVIL_ORIGIN, "Sec-Fetch-Site": "cross-site"},
    ],
    ids=["origin", "null origin", "look-alike origin", "cross-site", "same-site", "both"],
)
async def test_a_cross_origin_post_is_refused_even_with_the_token(
    alipay: AlipayPlusCaller,
    env: WorkflowEnvironment,
    settings: Settings,
    client: Client,
    database: Ledger,
    user: httpx.AsyncClient,
    headers: dict[str, str],
) -> None:
    payment = await ordered_easy_pay(alipay, env, settings)
    form = form_of(await user.get(payment.page))
    before = pin_balance(database)

    wrong = await user.post(payment.page, data={"code": WRONG, **form}, headers=headers)
    right = await user.post(payment.page, data={"code": PIN, **form}, headers=headers)
    state = await state_of(client, payment.workflow_id)

    assert_refused(wrong)
    assert_refused(right)
    assert "another site" in right.text
    assert state.status is PaymentStatus.PROCESSING and state.attempts_left == settings.verification_attempts
    assert pin_balance(database) == before


async def test_our_own_origin_and_same_origin_fetches_are_accepted(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, client: Client, user: httpx.AsyncClient
) -> None:
    """What a browser sends with our own form (Referrer-Policy strict-origin keeps ``Origin`` real)."""
    payment = await ordered_easy_pay(alipay, env, settings)
    form = form_of(await user.get(payment.page))
    ours = {"Origin": settings.public_base_url, "Sec-Fetch-Site": "same-origin"}

    wrong = await user.post(payment.page, data={"code": WRONG, **form}, headers=ours)
    right = await user.post(payment.page, data={"code": PIN, **form}, headers=ours)

    assert back_to(payment.page, wrong) and back_to(payment.page, right)
    assert (await state_of(client, payment.workflow_id)).status is PaymentStatus.SUCCESS


async def test_resend_needs_its_own_forms_token(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, client: Client, user: httpx.AsyncClient
) -> None:
    payment = await ordered_easy_pay(alipay, env, settings, login_id=OTP_USER[0])
    shown = await user.get(payment.page)
    code_form, resend_form = form_of(shown), form_of(shown, "/resend")
    resend = f"{payment.page}/resend"
    before = await state_of(client, payment.workflow_id)
    for _ in range(50):  # the first code goes out after pay #2 is answered: wait until it is on record
        if before.otp_challenge_id is not None:
            break
        await asyncio.sleep(0.1)
        before = await state_of(client, payment.workflow_id)
    assert before.otp_challenge_id is not None

    forged = await user.post(resend)
    with_code_token = await user.post(resend, data=code_form)
    cross_site = await user.post(resend, data=resend_form, headers={"Origin": EVIL_ORIGIN})
    after = await state_of(client, payment.workflow_id)
    resent = await user.post(resend, data=resend_form)

    for refused in (forged, with_code_token, cross_site):
        assert_refused(refused)
    assert after.otp_challenge_id == before.otp_challenge_id  # no new code was sent
    assert back_to(payment.page, resent) and "A new code was sent" in (await shown_after(user, resent)).text
    assert_page_headers(resent)


async def test_the_page_after_a_resend_posts_the_code_to_the_page_not_to_resend(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, user: httpx.AsyncClient
) -> None:
    """The forms' actions name the page (they used to be relative to the URL the answer came from)."""
    payment = await ordered_easy_pay(alipay, env, settings, login_id=OTP_USER[0])
    resent = await user.post(f"{payment.page}/resend", data=form_of(await user.get(payment.page), "/resend"))
    shown = await shown_after(user, resent)

    actions = re.findall(r'<form id="[a-z-]+" method="post" action="([^"]*)"', shown.text)

    assert back_to(payment.page, resent)  # the browser is back on the page, not on …/resend
    assert actions == [payment.page, f"{payment.page}/resend", f"{payment.page}/cancel"]


async def test_mpm_confirm_needs_the_token_of_this_pages_session(
    alipay: AlipayPlusCaller,
    services: Services,
    settings: Settings,
    client: Client,
    app: FastAPI,
    database: Ledger,
) -> None:
    order: Order = await ordered(
        alipay, settings, mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER))
    )
    before = krw_balance(database)
    async with _http(app, settings) as payer_http, _http(app, settings) as other_http:
        payer, other_session = Phone(payer_http), Phone(other_http)
        assert (await payer.login(KRW_USER)).status_code == 200
        assert (await other_session.login(KRW_USER)).status_code == 200  # the same user, signed in elsewhere
        form = form_of(await payer.open(order.page))
        others = form_of(await other_session.open(order.page))

        refused = [
            await payer.http.post(order.page, data={"action": "confirm"}),
            await payer.http.post(order.page, data={"action": "confirm", **others}),  # another session's page
            await payer.http.post(order.page, data={"action": "cancel", pages.CSRF_FIELD: "x"}),
            await payer.http.post(order.page, data={"action": "confirm", **form}, headers={"Origin": EVIL_ORIGIN}),
        ]
        state = await state_of(client, f"pay/{order.payment_request_id}")
        confirmed = await shown_after(payer.http, await payer.http.post(order.page, data={"action": "confirm", **form}))

    assert form != others
    for response in refused:
        assert_refused(response)
    assert state.status is PaymentStatus.PROCESSING  # neither confirmed nor cancelled
    assert confirmed.status_code == 200 and status_shown(confirmed) == "success"
    assert krw_balance(database) == before - 1000


# --- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_url",
    [
        "https://evil.example/x",  # with status=success added: the reproduction
        "javascript:alert(document.domain)//",
        "//evil.example/x",
        "https://ac.alipay.com.evil.example/x",
        "https://ac.alipay.com@evil.example/x",
        "http://evil.example/ac.alipay.com",
    ],
    ids=["other host", "javascript", "scheme-relative", "look-alike host", "user info", "host in path"],
)
async def test_a_redirect_off_the_allow_list_ends_on_our_result_page(
    alipay: AlipayPlusCaller,
    env: WorkflowEnvironment,
    settings: Settings,
    client: Client,
    database: Ledger,
    user: httpx.AsyncClient,
    redirect_url: str,
) -> None:
    payment = await ordered_easy_pay(alipay, env, settings, redirect_url=redirect_url)
    before = pin_balance(database)
    form = form_of(await user.get(payment.page))

    right = await user.post(payment.page, data={"code": PIN, **form})
    shown = await shown_after(user, right)
    again = await user.get(payment.page)
    state = await state_of(client, payment.workflow_id)

    assert back_to(payment.page, right)  # never off to the merchant's address straight from the post
    for response in (shown, again):
        assert response.status_code == 200 and "location" not in response.headers, response.headers
        assert "<h1>Payment successful</h1>" in response.text and "evil" not in response.text
        assert handed_on(response) is None  # no Continue to an address off the allow-list
        assert_page_headers(response)
    assert state.status is PaymentStatus.SUCCESS and state.redirect_url  # the payment itself is as final as ever
    assert pin_balance(database) == before - PRICE.value


async def test_the_reproductions_redirect_is_refused_after_a_failure_too(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, user: httpx.AsyncClient
) -> None:
    payment = await ordered_easy_pay(alipay, env, settings, redirect_url=EVIL)
    form = form_of(await user.get(payment.page))

    answers = [
        await user.post(payment.page, data={"code": WRONG, **form}) for _ in range(settings.verification_attempts)
    ]
    shown = await shown_after(user, answers[-1])

    assert back_to(payment.page, answers[-1]) and shown.status_code == 200 and "location" not in shown.headers
    assert "<h1>Payment failed</h1>" in shown.text and "evil" not in shown.text
    assert "Wrong PIN entered too many times." in shown.text


@pytest.mark.parametrize(
    "redirect_url",
    [ALIPAY_RESULT, "http://127.0.0.1:8001/sandbox/result?paymentRequestId=1", "https://AC.Alipay.com/page"],
    ids=["alipay+", "sandbox", "upper-case host"],
)
async def test_an_allowed_host_is_handed_the_user_with_status_success(
    alipay: AlipayPlusCaller, env: WorkflowEnvironment, settings: Settings, user: httpx.AsyncClient, redirect_url: str
) -> None:
    payment = await ordered_easy_pay(alipay, env, settings, redirect_url=redirect_url)
    form = form_of(await user.get(payment.page))

    right = await user.post(payment.page, data={"code": PIN, **form})
    shown = await shown_after(user, right)

    assert back_to(payment.page, right) and 'data-outcome="success"' in shown.text
    continue_to = handed_on(shown) or ""
    assert continue_to.startswith(redirect_url.replace("&", "&amp;")) or continue_to.startswith(redirect_url)
    assert re.search(r"[?&]status=success$", continue_to)
    assert_page_headers(shown)


async def test_mpm_refuses_a_script_as_the_merchants_address(
    alipay: AlipayPlusCaller, services: Services, settings: Settings, app: FastAPI
) -> None:
    """Never a script (before, a scan-to-pay with one was sent to the wallet's home: now our result page)."""
    body = mpm_pay(settings, await access_token(alipay, services, settings, KRW_USER), redirect_url="javascript:x()")
    order = await ordered(alipay, settings, body)
    async with _http(app, settings) as http:
        payer = Phone(http)
        await payer.login(KRW_USER)
        confirmed = await payer.press(order.page, "confirm")

    assert confirmed.status_code == 200 and status_shown(confirmed) == "success"
    assert "javascript" not in confirmed.text
    assert_page_headers(confirmed)


@pytest.mark.parametrize(
    ("redirect_url", "goes_to"),
    [
        ("https://merchant.example/paid?order=7", "https://merchant.example/paid?order=7"),
        ("https://evil.example/paid", None),
        ("https://merchant.example.evil.example/paid", None),
    ],
    ids=["allowed merchant", "other host", "look-alike host"],
)
async def test_mpm_redirects_follow_their_own_allow_list_when_narrowed(
    narrow_app: FastAPI,
    alipayplus: SandboxAlipayPlus,
    mpp_verifier: Verifier,
    settings: Settings,
    database: Ledger,
    redirect_url: str,
    goes_to: str | None,
) -> None:
    async with _http(narrow_app, settings) as http, _http(narrow_app, settings) as phone_http:
        caller = AlipayPlusCaller(http, alipayplus, mpp_verifier)
        services: Services = narrow_app.state.services
        body = mpm_pay(settings, await access_token(caller, services, settings, KRW_USER), redirect_url=redirect_url)
        order = await ordered(caller, settings, body)
        payer = Phone(phone_http)
        await payer.login(KRW_USER)
        confirmed = await payer.press(order.page, "confirm")

    if goes_to is None:
        assert confirmed.status_code == 200 and status_shown(confirmed) == "success"
        assert "evil" not in confirmed.text
    else:
        assert confirmed.status_code == 303 and confirmed.headers["location"] == goes_to
    assert_page_headers(confirmed)


# --- the rules, one by one -------------------------------------------------------------------

HOSTS = ["ac.alipay.com", "*.alipayplus.example", "127.0.0.1"]


@pytest.mark.parametrize(
    "url",
    [
        "https://ac.alipay.com/page?x=1&status=success",
        "HTTPS://AC.ALIPAY.COM/page",
        "http://127.0.0.1:8001/sandbox/result?status=fail",
        "https://pay.alipayplus.example/r",
        "https://a.b.alipayplus.example:8443/r",
    ],
)
def test_allowed_redirects(url: str) -> None:
    assert pages.allowed_redirect(url, HOSTS) == url


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "https://evil.example/x?status=success",
        "javascript:alert(1)//?status=success",
        "JavaScript:alert(1)",
        "//evil.example/x?status=success",
        "/relative/path",
        "https://ac.alipay.com.evil.example/",
        "https://evil.example/ac.alipay.com",
        "https://evil.example?@ac.alipay.com/",
        "https://evil.example#@ac.alipay.com/",
        "https://ac.alipay.com@evil.example/",
        "https://user:pw@ac.alipay.com/",
        "https://evil.example\\@ac.alipay.com/",
        "https://ac.alipay.com\\.evil.example/",
        "https:/ac.alipay.com/",
        "https:ac.alipay.com/",
        "https:///evil.example/",
        " https://ac.alipay.com/",
        "https://ac.alipay.com/\n",
        "https://ac.alipay.com:99999/",
        "https://ac.alipay.com:port/",
        "https://alipayplus.example/",  # *.suffix is for hosts under it, not the suffix itself
        "https://evilalipayplus.example/",
        "https://ac。alipay。com/",
        "https://ac.alipay.com./",
        "data:text/html,<script>alert(1)</script>",
        "ftp://ac.alipay.com/",
        "https://[::1]/",
        "mppwallet://home",  # app schemes only where the page allows them (MPM)
    ],
)
def test_refused_redirects(url: str | None) -> None:
    assert pages.allowed_redirect(url, HOSTS) is None


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("merchantapp://result?order=7", True),
        ("mppwallet://home", True),
        ("https://anywhere.example/paid", True),  # MPM's default: any merchant page (seed 003)
        ("javascript:alert(1)", False),
        ("JAVASCRIPT:alert(1)", False),
        (" javascript:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("vbscript:msgbox(1)", False),
        ("data:text/html,x", False),
        ("file:///etc/passwd", False),
        ("blob:https://evil.example/1", False),
        ("//evil.example/paid", False),
    ],
)
def test_mpm_redirects_take_app_schemes_but_never_a_script(url: str, allowed: bool) -> None:
    assert (pages.allowed_redirect(url, ["*"], app_schemes=True) == url) is allowed


def test_malformed_allow_list_entries_match_nothing() -> None:
    hosts = ["https://ac.alipay.com", "ac.alipay.com/page", "*ac.alipay.com", "ac.alipay.com;", ""]

    assert pages.allowed_redirect("https://ac.alipay.com/page", hosts) is None
    assert mpm.REDIRECTS.csp(Settings(mpm_redirect_hosts=hosts)).count("ac.alipay.com") == 0


def test_the_form_action_lists_exactly_the_allowed_hosts(settings: Settings) -> None:
    easy_pay = verification.REDIRECTS.csp(settings.model_copy(update={"redirect_hosts": ["*.alipay.com", "x.test"]}))
    form_action = easy_pay.split("form-action ", 1)[1].split(";")[0].split()

    assert form_action == [
        "'self'",
        "https://*.alipay.com:*",
        "http://*.alipay.com:*",
        "https://x.test:*",
        "http://x.test:*",
    ]
    assert "mppwallet:" in mpm.REDIRECTS.csp(settings).split("form-action ", 1)[1].split(";")[0]


def test_form_tokens_are_bound_to_form_payment_and_session() -> None:
    key = b"k" * 32
    token = pages.form_token(key, "easypay.code", "pr-1", "p-1")

    assert token == pages.form_token(key, "easypay.code", "pr-1", "p-1")  # stateless: the same page, the same token
    assert len(token) == 43
    assert (
        len(
            {
                token,
                pages.form_token(key, "easypay.resend", "pr-1", "p-1"),
                pages.form_token(key, "easypay.code", "pr-2", "p-1"),
                pages.form_token(key, "easypay.code", "pr-1", "p-2"),
                pages.form_token(key, "easypay.code", "pr-1", "p-1", "session"),
                pages.form_token(b"j" * 32, "easypay.code", "pr-1", "p-1"),
                pages.form_token(key, "easypay.code", "pr-1p-1", ""),  # no ambiguity in how the parts are joined
            }
        )
        == 7
    )
