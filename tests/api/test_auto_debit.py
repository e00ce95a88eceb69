"""Auto Debit over HTTP (spec §§2.1, 7.1-7.3): prepare, our consent page, applyToken, pay with the
agreement's token, cancelToken, and the app's list of agreements.

Alipay+'s calls are signed and their answers checked (``AlipayPlusCaller``); the wallet user is a
``Browser``: its own HTTP client on the same in-process API, with an app session cookie of a fresh
user of our own (``new_user``), so balances, limits and agreements are each test's alone. The API's
worker runs the Auto Debit workflow, so pay is answered final (S or F).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from alipayplus import (
    Amount,
    ApplyTokenRequest,
    CancelTokenRequest,
    InquiryPaymentRequest,
    PaymentFactor,
    PaymentMethod,
    PayRequest,
    PrepareRequest,
)
from api.pages import CSRF_FIELD, form_fields, form_token
from api.routers.consent import CONSENT_FORM
from sandbox.alipayplus.driver import ACQUIRER_ID, PAYMENT_METHOD_TYPE, apply_token_request, easy_pay_order
from tests.api.conftest import AlipayPlusCaller, result_of
from tests.conftest import new_user
from wallet.ledger import Ledger
from wallet.records import Agreement, AgreementStatus, AppSession, OAuthToken, WalletUser
from wallet.secrets import token_digest
from wallet.settings import Settings
from wallet.states import UserStatus

pytestmark = pytest.mark.timeout(60)

PREPARE, CANCEL_TOKEN, APPLY_TOKEN = PrepareRequest.PATH, CancelTokenRequest.PATH, ApplyTokenRequest.PATH
PAY, INQUIRY = PayRequest.PATH, InquiryPaymentRequest.PATH
AUTH_CLIENT_ID = "2188120040699147"  # the merchant's client, as in seed 004
MERCHANT = "Sandbox Subscriptions"
BOUND_PAGE = "https://merchant.example/bound?from=wallet"  # the merchant's authRedirectUrl (MPM_REDIRECT_HOSTS *)
PRICE = Amount(currency="IDR", value=15_000)
FUNDS = 100_000
EVIL_ORIGIN = "https://evil.example"
PAGE_HEADERS = {  # as tests/security/test_pages.py asserts for every page
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "referrer-policy": "strict-origin",
    "x-content-type-options": "nosniff",
}
CSP_DIRECTIVES = ["default-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"]


def wire(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# --- what Alipay+ sends ---------------------------------------------------------------------


def prepare_body(settings: Settings, reference: str | None = None, **changes: Any) -> dict[str, Any]:
    """prepare for a new agreement (a fresh referenceAgreementId unless given), edited by ``changes``."""
    body: dict[str, Any] = {
        "pspId": settings.psp_id,
        "acquirerId": ACQUIRER_ID,
        "authClientId": AUTH_CLIENT_ID,
        "authClientName": MERCHANT,
        "referenceMerchantId": AUTH_CLIENT_ID,
        "referenceAgreementId": reference or f"agr-{uuid.uuid4().hex}",
        "authRedirectUrl": BOUND_PAGE,
        "scopes": ["AGREEMENT_PAY"],
        "authState": f"st-{uuid.uuid4().hex[:8]}",
    }
    body.update(changes)
    return body


def cancel_token_body(settings: Settings, access_token: str) -> dict[str, Any]:
    return {"pspId": settings.psp_id, "acquirerId": ACQUIRER_ID, "accessToken": access_token}


def apply_token_body(settings: Settings, *, auth_code: str | None = None, refresh_token: str | None = None) -> bytes:
    return apply_token_request(auth_code=auth_code, refresh_token=refresh_token, psp_id=settings.psp_id).to_wire()


def auto_debit_pay(
    settings: Settings,
    access_token: str | None,
    amount: Amount = PRICE,
    *,
    customer_id: str | None = None,
    evaluation: bool = False,
) -> dict[str, Any]:
    """The pay Alipay+ sends for an Auto Debit: the agreement's token in ``paymentMethodId``."""
    base = easy_pay_order(f"ad-{uuid.uuid4().hex}", "852-00000000", amount, settings.psp_id)
    request = base.model_copy(
        update={
            "payment_method": PaymentMethod(
                payment_method_type=PAYMENT_METHOD_TYPE, payment_method_id=access_token, customer_id=customer_id
            ),
            "payment_factor": PaymentFactor(
                is_agreement_payment=True, **({"is_payment_evaluation": True} if evaluation else {})
            ),
            "payment_expiry_time": None,
            "payment_redirect_url": None,
        }
    )
    body: dict[str, Any] = json.loads(request.to_wire())
    return body


def inquiry_body(settings: Settings, payment_request_id: str) -> bytes:
    return InquiryPaymentRequest(
        acquirer_id=ACQUIRER_ID, psp_id=settings.psp_id, payment_request_id=payment_request_id
    ).to_wire()


# --- the wallet user ------------------------------------------------------------------------


@dataclass
class Browser:
    """A signed-in wallet user's web view (and app): its own cookie jar on the API in process."""

    http: httpx.AsyncClient
    customer_id: str
    session: str = ""  # the app session's token (its cookie), "" if not signed in

    @property
    def account(self) -> str:
        return Ledger.user_account_id(self.customer_id)

    async def consent(self, page: str, action: str = "agree") -> httpx.Response:
        """The consent page opened and its button pressed, with the page's form token."""
        shown = await self.http.get(page)
        assert shown.status_code == 200, shown.text
        return await self.http.post(page, data={**form_fields(shown.text), "action": action})


Browsers = Callable[..., Browser]


def open_session(engine: Engine, customer_id: str) -> str:
    """An app session of ``customer_id``'s, as a PIN login would give (new users have no PIN)."""
    token = uuid.uuid4().hex
    with Session(engine) as session:
        session.add(
            AppSession(
                token_digest=token_digest(token),
                customer_id=customer_id,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
        session.commit()
    return token


@pytest.fixture
async def browsers(app: FastAPI, settings: Settings, engine: Engine, database: Ledger) -> AsyncIterator[Browsers]:
    """New users of our own (``balance`` IDR minor units, other ``new_user`` options), each signed in."""
    async with AsyncExitStack() as stack:

        def new_browser(balance: int = FUNDS, signed_in: bool = True, **options: Any) -> Browser:
            customer_id = new_user(engine, database, balance, **options)
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url)
            stack.push_async_callback(http.aclose)
            session = open_session(engine, customer_id) if signed_in else ""
            if session:
                http.cookies.set("mpp_session", session)
            return Browser(http, customer_id, session)

        yield new_browser


@dataclass(frozen=True)
class Bound:
    agreement_id: str
    access_token: str
    refresh_token: str
    customer_id: str


async def prepared(alipay: AlipayPlusCaller, settings: Settings, **changes: Any) -> tuple[dict[str, Any], str]:
    """prepare answered S: the body sent and the consent page's path."""
    body = prepare_body(settings, **changes)
    answer = await alipay.call(PREPARE, wire(body))
    assert result_of(answer) == ("S", "SUCCESS"), answer
    auth_url = answer["authUrl"]
    assert auth_url.startswith(f"{settings.public_base_url}/agreements/consent/")
    return body, urlsplit(auth_url).path


async def consent_page_and_user(
    alipay: AlipayPlusCaller, settings: Settings, browsers: Browsers
) -> tuple[str, Browser]:
    """A new agreement's consent page (``prepared``) and a fresh signed-in user to open it."""
    _, page = await prepared(alipay, settings)
    return page, browsers()


def redirect_query(response: httpx.Response) -> dict[str, list[str]]:
    """The merchant page the consent sends the browser to, checked, and its query."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(f"{BOUND_PAGE}&"), location
    return parse_qs(urlsplit(location).query)


async def bind(alipay: AlipayPlusCaller, settings: Settings, browser: Browser) -> Bound:
    """An ACTIVE agreement of the browser's user: prepare, consent on the page, applyToken."""
    _, page = await prepared(alipay, settings)
    query = redirect_query(await browser.consent(page))
    pair = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=query["authCode"][0]))
    assert result_of(pair) == ("S", "SUCCESS"), pair
    assert pair["customerId"] == browser.customer_id
    return Bound(page.rsplit("/", 1)[-1], pair["accessToken"], pair["refreshToken"], browser.customer_id)


def agreement_row(engine: Engine, agreement_id: str) -> Agreement:
    with Session(engine) as session:
        found = session.get(Agreement, agreement_id)
    assert found is not None
    return found


def assert_not_linked(engine: Engine, page: str) -> None:
    """The agreement of consent page ``page`` is still PREPARED, with no user linked."""
    row = agreement_row(engine, page.rsplit("/", 1)[-1])
    assert (row.status, row.customer_id) == (AgreementStatus.PREPARED, None)


def assert_page_headers(response: httpx.Response) -> None:
    for name, value in PAGE_HEADERS.items():
        assert response.headers.get(name) == value, (response.status_code, name, response.headers.get(name))
    csp = response.headers.get("content-security-policy", "")
    for directive in CSP_DIRECTIVES:  # form-action may add the merchant's scheme: our 303 leads there
        assert re.search(rf"(^|; ){re.escape(directive)}( |;|$)", csp), (directive, csp)
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, csp


# --- prepare ----------------------------------------------------------------------------------


async def test_prepare_answers_our_consent_page_and_a_repeat_the_same(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine
) -> None:
    body = prepare_body(settings)

    first = await alipay.call(PREPARE, wire(body))
    again = await alipay.call(PREPARE, wire(body))
    new_state = await alipay.call(PREPARE, wire({**body, "authState": "another"}))  # not a key field

    assert result_of(first) == ("S", "SUCCESS")
    assert first["authUrl"].startswith(f"{settings.public_base_url}/agreements/consent/")
    assert result_of(again) == ("S", "SUCCESS") and again["authUrl"] == first["authUrl"]
    assert result_of(new_state) == ("S", "SUCCESS") and new_state["authUrl"] == first["authUrl"]
    row = agreement_row(engine, first["authUrl"].rsplit("/", 1)[-1])
    assert (row.status, row.customer_id, row.reference_agreement_id) == (
        AgreementStatus.PREPARED,
        None,
        body["referenceAgreementId"],
    )


@pytest.mark.parametrize(
    "change",
    [
        {"authRedirectUrl": "https://merchant.example/elsewhere"},
        {"scopes": ["AGREEMENT_PAY", "USER_INFO"]},
    ],
    ids=["authRedirectUrl", "scopes"],
)
async def test_prepare_again_with_other_key_fields_is_inconsistent(
    alipay: AlipayPlusCaller, settings: Settings, change: dict[str, Any]
) -> None:
    body = prepare_body(settings)
    first = await alipay.call(PREPARE, wire(body))

    changed = await alipay.call(PREPARE, wire({**body, **change}))
    again = await alipay.call(PREPARE, wire(body))

    assert result_of(first) == ("S", "SUCCESS")
    assert result_of(changed) == ("F", "REPEAT_REQ_INCONSISTENT") and "authUrl" not in changed
    assert result_of(again) == ("S", "SUCCESS") and again["authUrl"] == first["authUrl"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scopes": []}, "scopes"),
        ({"scopes": ["AGREEMENT_PAY", "PAY_ANYTHING"]}, "scopes"),
        ({"authState": None}, "authState"),
        ({"authRedirectUrl": "https://merchant.example/" + "x" * 2048}, "authRedirectUrl"),
        ({"referenceAgreementId": "agr-\u0000"}, "referenceAgreementId"),
    ],
    ids=["empty scopes", "unknown scope", "no authState", "long authRedirectUrl", "NUL referenceAgreementId"],
)
async def test_a_bad_prepare_is_param_illegal_naming_the_field(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, change: dict[str, Any], field: str
) -> None:
    body = prepare_body(settings, **change)
    body = {key: value for key, value in body.items() if value is not None}
    before = agreement_count(engine)

    answer = await alipay.call(PREPARE, wire(body))

    assert result_of(answer) == ("F", "PARAM_ILLEGAL") and field in answer["result"]["resultMessage"], answer
    assert "authUrl" not in answer
    assert agreement_count(engine) == before  # nothing stored (a NUL cannot even be looked up on PostgreSQL)


def agreement_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Agreement)).one()


# --- the consent page -------------------------------------------------------------------------


async def test_the_consent_page_asks_to_sign_in_and_changes_nothing(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, browsers: Browsers
) -> None:
    _, page = await prepared(alipay, settings)
    stranger = browsers(signed_in=False)

    shown = await stranger.http.get(page)
    pressed = await stranger.http.post(page, data={"action": "agree"})

    assert shown.status_code == pressed.status_code == 401
    assert "Sign in" in shown.text and "<form" not in shown.text
    assert_page_headers(shown)
    assert_not_linked(engine, page)


async def test_the_consent_page_shows_the_merchant_and_a_form_with_the_page_headers(
    alipay: AlipayPlusCaller, settings: Settings, browsers: Browsers
) -> None:
    _, page = await prepared(alipay, settings, scopes=["AGREEMENT_PAY", "BASE_USER_INFO"])
    user = browsers()

    shown = await user.http.get(page)

    assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/html")
    assert_page_headers(shown)
    assert MERCHANT in shown.text
    assert "Charging your wallet for this merchant" in shown.text
    assert "Knowing your wallet user id" in shown.text
    assert f'action="{page}"' in shown.text and 'value="agree"' in shown.text and 'value="decline"' in shown.text
    assert form_fields(shown.text)  # the form's token


@pytest.mark.parametrize("token", [None, "forged"], ids=["no token", "wrong token"])
async def test_a_consent_without_the_page_token_is_refused(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, browsers: Browsers, token: str | None
) -> None:
    page, user = await consent_page_and_user(alipay, settings, browsers)
    fields = form_fields((await user.http.get(page)).text)
    data = {"action": "agree"} | ({name: token for name in fields} if token else {})

    pressed = await user.http.post(page, data=data)

    assert pressed.status_code == 403
    assert_page_headers(pressed)
    assert_not_linked(engine, page)


async def test_a_cross_site_consent_is_refused_even_with_the_token(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, browsers: Browsers
) -> None:
    page, user = await consent_page_and_user(alipay, settings, browsers)
    fields = form_fields((await user.http.get(page)).text)

    pressed = await user.http.post(page, data={**fields, "action": "agree"}, headers={"Origin": EVIL_ORIGIN})

    assert pressed.status_code == 403 and "another site" in pressed.text
    assert_not_linked(engine, page)


async def test_declining_links_nothing(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, browsers: Browsers
) -> None:
    page, user = await consent_page_and_user(alipay, settings, browsers)

    declined = await user.consent(page, "decline")

    assert declined.status_code == 200 and "Not linked" in declined.text
    assert_not_linked(engine, page)


async def test_agreeing_sends_the_browser_to_the_merchant_with_the_auth_code_and_state(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, browsers: Browsers
) -> None:
    body, page = await prepared(alipay, settings)
    user = browsers()

    agreed = await user.consent(page)
    query = redirect_query(agreed)
    reloaded = await user.http.get(page)  # consented, not yet exchanged: on to the merchant again, same code
    pair = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=query["authCode"][0]))
    bound = await user.http.get(page)  # bound: no form any more

    assert query["from"] == ["wallet"]  # the merchant's own query kept
    assert query["authState"] == [body["authState"]]
    assert len(query["authCode"][0]) == 32
    assert redirect_query(reloaded) == query
    assert result_of(pair) == ("S", "SUCCESS")
    row = agreement_row(engine, page.rsplit("/", 1)[-1])
    assert (row.status, row.customer_id) == (AgreementStatus.ACTIVE, user.customer_id)
    assert bound.status_code == 200 and "<form" not in bound.text and "Linked" in bound.text
    assert_page_headers(bound)


async def test_another_user_can_neither_see_nor_consent_to_an_agreement_consented_by_the_first(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, browsers: Browsers
) -> None:
    _, page = await prepared(alipay, settings)
    first, second = browsers(), browsers()
    redirect_query(await first.consent(page))

    agreement_id = page.rsplit("/", 1)[-1]
    # the token the page would carry for the second user's session, had it been shown to them
    token = form_token(settings.secret_key, CONSENT_FORM, agreement_id, "", token_digest(second.session))

    shown = await second.http.get(page)
    pressed = await second.http.post(page, data={CSRF_FIELD: token, "action": "agree"})
    unsigned = await second.http.post(page, data={"action": "agree"})

    assert shown.status_code == 404 and first.customer_id not in shown.text
    assert pressed.status_code == 404 and "<form" not in pressed.text
    assert unsigned.status_code == 403  # no page shown to them, so no form token: refused before the lookup
    row = agreement_row(engine, agreement_id)
    assert (row.status, row.customer_id) == (AgreementStatus.AUTHORIZED, first.customer_id)


async def test_an_unknown_agreement_page_is_not_found(browsers: Browsers) -> None:
    shown = await browsers().http.get(f"/agreements/consent/{uuid.uuid4().hex}")

    assert shown.status_code == 404


# --- applyToken ---------------------------------------------------------------------------------


async def test_apply_token_with_the_consent_auth_code_binds_the_agreement(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, browsers: Browsers
) -> None:
    page, user = await consent_page_and_user(alipay, settings, browsers)
    code = redirect_query(await user.consent(page))["authCode"][0]

    pair = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=code))
    again = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=code))

    assert result_of(pair) == ("S", "SUCCESS")
    assert pair["accessToken"] and pair["refreshToken"] and pair["accessToken"] != pair["refreshToken"]
    assert pair["customerId"] == user.customer_id
    issued_for = datetime.fromisoformat(pair["accessTokenExpiryTime"]) - datetime.now(UTC)
    assert issued_for > settings.access_token_ttl - timedelta(hours=1)  # an agreement's lifetime, not an MPM login's
    assert result_of(again)[0] == "F"  # an authCode works once
    agreement_id = page.rsplit("/", 1)[-1]
    assert agreement_row(engine, agreement_id).status == AgreementStatus.ACTIVE
    with Session(engine) as session:
        stored = session.exec(
            select(OAuthToken).where(col(OAuthToken.access_token_digest) == token_digest(pair["accessToken"]))
        ).one()
    assert (stored.agreement_id, stored.customer_id) == (agreement_id, user.customer_id)


# --- pay ------------------------------------------------------------------------------------


async def test_an_evaluation_with_the_token_succeeds_and_moves_no_money(
    alipay: AlipayPlusCaller, settings: Settings, database: Ledger, browsers: Browsers
) -> None:
    user = browsers()
    bound = await bind(alipay, settings, user)
    postings = database.check().postings

    answer = await alipay.call(PAY, wire(auto_debit_pay(settings, bound.access_token, evaluation=True)))

    assert result_of(answer) == ("S", "SUCCESS"), answer
    assert "paymentId" not in answer and "paymentUrl" not in answer
    assert database.check().postings == postings
    assert database.balance(user.account) == FUNDS


async def test_an_auto_debit_pays_at_once_and_a_repeat_gets_the_same_answer(
    alipay: AlipayPlusCaller, settings: Settings, database: Ledger, browsers: Browsers
) -> None:
    user = browsers()
    bound = await bind(alipay, settings, user)
    body = auto_debit_pay(settings, bound.access_token, customer_id=user.customer_id)

    paid = await alipay.call(PAY, wire(body))
    again = await alipay.call(PAY, wire(body))
    inquiry = await alipay.call(INQUIRY, inquiry_body(settings, body["paymentRequestId"]))
    body["payToAmount"]["value"] = "16000"
    changed = await alipay.call(PAY, wire(body))

    assert result_of(paid) == ("S", "SUCCESS"), paid
    assert paid["paymentId"] and paid["customerId"] == user.customer_id and "paymentUrl" not in paid
    assert result_of(again) == ("S", "SUCCESS") and again["paymentId"] == paid["paymentId"]
    assert result_of(inquiry, "paymentResult") == ("S", "SUCCESS") and inquiry["paymentId"] == paid["paymentId"]
    assert result_of(changed) == ("F", "REPEAT_REQ_INCONSISTENT") and "paymentId" not in changed
    assert database.balance(user.account) == FUNDS - PRICE.value
    assert database.check().ok


async def expire_access_token(engine: Engine, access_token: str) -> None:
    with Session(engine) as session:
        session.connection().execute(
            update(OAuthToken)
            .where(col(OAuthToken.access_token_digest) == token_digest(access_token))
            .values(access_token_expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
        session.commit()


PAYER_OPTIONS: dict[str, dict[str, Any]] = {  # the payer each case needs (``new_user`` options)
    "balance": {"balance": PRICE.value - 1},
    "frozen": {"status": UserStatus.FROZEN},
    "single limit": {"single_payment_limit": PRICE.value - 1},
}


@pytest.mark.parametrize("evaluation", [False, True], ids=["pay", "evaluation"])
@pytest.mark.parametrize(
    "case",
    [
        "unknown token",
        "login token without AGREEMENT_PAY",
        "expired",
        "balance",
        "frozen",
        "single limit",
        "another customer",
    ],
)
async def test_each_refusal_has_its_code_and_moves_no_money(
    alipay: AlipayPlusCaller,
    settings: Settings,
    engine: Engine,
    database: Ledger,
    browsers: Browsers,
    case: str,
    evaluation: bool,
) -> None:
    options = PAYER_OPTIONS.get(case, {})
    user = browsers(**options)
    customer_id: str | None = user.customer_id
    if case == "unknown token":
        token = f"AT{uuid.uuid4().hex}"
    elif case == "login token without AGREEMENT_PAY":  # an MPM login's pair, from the app's authCode
        code = (await user.http.post("/app/v1/authCode", json={"scopes": "BASE_USER_INFO"})).json()["authCode"]
        pair = await alipay.call(APPLY_TOKEN, apply_token_body(settings, auth_code=code))
        assert result_of(pair) == ("S", "SUCCESS")
        token = pair["accessToken"]
    else:
        token = (await bind(alipay, settings, user)).access_token
    if case == "expired":
        await expire_access_token(engine, token)
    if case == "another customer":
        customer_id = browsers().customer_id
    expected = {
        "unknown token": "INVALID_TOKEN",
        "login token without AGREEMENT_PAY": "INVALID_TOKEN",
        "expired": "EXPIRED_ACCESS_TOKEN",
        "balance": "USER_BALANCE_NOT_ENOUGH",
        "frozen": "USER_STATUS_ABNORMAL",
        "single limit": "PAYMENT_AMOUNT_EXCEED_LIMIT",
        "another customer": "INVALID_TOKEN",
    }[case]
    before, postings = database.balance(user.account), database.check().postings

    body = auto_debit_pay(settings, token, customer_id=customer_id, evaluation=evaluation)
    answer = await alipay.call(PAY, wire(body))

    assert result_of(answer) == ("F", expected), answer
    assert "paymentId" not in answer and "paymentUrl" not in answer
    assert database.balance(user.account) == before and database.check().postings == postings
    if not evaluation:
        inquiry = await alipay.call(INQUIRY, inquiry_body(settings, body["paymentRequestId"]))
        assert result_of(inquiry, "paymentResult") == ("F", expected)


async def test_an_agreement_payment_without_a_token_is_param_illegal(
    alipay: AlipayPlusCaller, settings: Settings
) -> None:
    body = auto_debit_pay(settings, None)
    body["paymentMethod"].pop("paymentMethodId", None)

    answer = await alipay.call(PAY, wire(body))

    assert result_of(answer) == ("F", "PARAM_ILLEGAL")
    assert "paymentMethod.paymentMethodId" in answer["result"]["resultMessage"]


# --- cancelToken and unbinding -------------------------------------------------------------------


async def test_cancel_token_revokes_the_agreement_and_its_every_token(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, database: Ledger, browsers: Browsers
) -> None:
    user = browsers()
    bound = await bind(alipay, settings, user)
    listed = (await user.http.get("/app/v1/agreements")).json()
    assert [item["agreementId"] for item in listed] == [bound.agreement_id]

    cancelled = await alipay.call(CANCEL_TOKEN, wire(cancel_token_body(settings, bound.access_token)))
    again = await alipay.call(CANCEL_TOKEN, wire(cancel_token_body(settings, bound.access_token)))
    body = auto_debit_pay(settings, bound.access_token, customer_id=user.customer_id)
    paid = await alipay.call(PAY, wire(body))
    refreshed = await alipay.call(APPLY_TOKEN, apply_token_body(settings, refresh_token=bound.refresh_token))

    assert result_of(cancelled) == result_of(again) == ("S", "SUCCESS")
    assert result_of(paid) == ("F", "INVALID_TOKEN") and "paymentId" not in paid
    assert result_of(refreshed) == ("F", "INVALID_REFRESH_TOKEN") and "accessToken" not in refreshed
    assert database.balance(user.account) == FUNDS
    assert agreement_row(engine, bound.agreement_id).status == AgreementStatus.CANCELLED
    assert (await user.http.get("/app/v1/agreements")).json() == []


async def test_cancel_token_of_an_unknown_token_is_invalid(alipay: AlipayPlusCaller, settings: Settings) -> None:
    answer = await alipay.call(CANCEL_TOKEN, wire(cancel_token_body(settings, f"AT{uuid.uuid4().hex}")))

    assert result_of(answer) == ("F", "INVALID_TOKEN")


@pytest.mark.parametrize("token", [None, "A" * 129], ids=["missing", "129 characters"])
async def test_a_bad_cancel_token_is_param_illegal_naming_the_field(
    alipay: AlipayPlusCaller, settings: Settings, token: str | None
) -> None:
    body = cancel_token_body(settings, token or "")
    if token is None:
        del body["accessToken"]

    answer = await alipay.call(CANCEL_TOKEN, wire(body))

    assert result_of(answer) == ("F", "PARAM_ILLEGAL") and "accessToken" in answer["result"]["resultMessage"]


async def test_the_app_lists_only_the_users_own_agreements(
    alipay: AlipayPlusCaller, settings: Settings, browsers: Browsers
) -> None:
    user, other = browsers(), browsers()
    bound = await bind(alipay, settings, user)
    others = await bind(alipay, settings, other)

    listed = await user.http.get("/app/v1/agreements")

    assert listed.status_code == 200
    items = listed.json()
    assert [item["agreementId"] for item in items] == [bound.agreement_id]
    assert items[0]["merchantName"] == MERCHANT and items[0]["status"] == "ACTIVE"
    assert items[0]["origin"] == "AUTO_DEBIT" and items[0]["scopes"] == ["AGREEMENT_PAY"]
    assert others.agreement_id not in listed.text
    assert (await browsers(signed_in=False).http.get("/app/v1/agreements")).status_code == 401


async def test_unbinding_another_users_agreement_is_not_found(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, browsers: Browsers
) -> None:
    user, other = browsers(), browsers()
    others = await bind(alipay, settings, other)

    refused = await user.http.delete(f"/app/v1/agreements/{others.agreement_id}")
    unknown = await user.http.delete(f"/app/v1/agreements/{uuid.uuid4().hex}")
    paid = await alipay.call(PAY, wire(auto_debit_pay(settings, others.access_token, customer_id=other.customer_id)))

    assert refused.status_code == unknown.status_code == 404
    assert agreement_row(engine, others.agreement_id).status == AgreementStatus.ACTIVE
    assert result_of(paid) == ("S", "SUCCESS")  # their token still pays


# --- Easy Pay's pay #2 with an agreement token ---------------------------------------------------


async def easy_pay_with_token(
    alipay: AlipayPlusCaller, settings: Settings, client_time: datetime, token: str, login_id: str
) -> dict[str, Any]:
    request = easy_pay_order(f"ep-{uuid.uuid4().hex}", login_id, PRICE, settings.psp_id)
    body: dict[str, Any] = json.loads(
        request.model_copy(update={"payment_expiry_time": client_time + timedelta(minutes=10)}).to_wire()
    )
    body["paymentMethod"]["paymentMethodId"] = token
    return await alipay.call(PAY, wire(body))


def login_of(engine: Engine, customer_id: str) -> str:
    with Session(engine) as session:
        user = session.get(WalletUser, customer_id)
    assert user is not None
    return user.login_id


async def test_easy_pay_with_a_revoked_agreement_token_is_invalid(
    alipay: AlipayPlusCaller,
    settings: Settings,
    engine: Engine,
    env: WorkflowEnvironment,
    database: Ledger,
    browsers: Browsers,
) -> None:
    user = browsers()
    bound = await bind(alipay, settings, user)
    cancelled = await alipay.call(CANCEL_TOKEN, wire(cancel_token_body(settings, bound.access_token)))
    assert result_of(cancelled) == ("S", "SUCCESS")

    answer = await easy_pay_with_token(
        alipay, settings, await env.get_current_time(), bound.access_token, login_of(engine, user.customer_id)
    )

    assert result_of(answer) == ("F", "INVALID_TOKEN"), answer
    assert "paymentId" not in answer and "paymentUrl" not in answer
    assert database.balance(user.account) == FUNDS


async def test_easy_pay_with_a_live_token_and_another_users_login_is_invalid(
    alipay: AlipayPlusCaller,
    settings: Settings,
    engine: Engine,
    env: WorkflowEnvironment,
    database: Ledger,
    browsers: Browsers,
) -> None:
    user, other = browsers(), browsers()
    bound = await bind(alipay, settings, user)
    now = await env.get_current_time()

    answer = await easy_pay_with_token(alipay, settings, now, bound.access_token, login_of(engine, other.customer_id))
    own = await easy_pay_with_token(alipay, settings, now, bound.access_token, login_of(engine, user.customer_id))

    assert result_of(answer) == ("F", "INVALID_TOKEN"), answer
    assert "paymentId" not in answer and "paymentUrl" not in answer
    assert result_of(own) == ("U", "PAYMENT_IN_PROCESS"), own  # the token's own user: on to verification
    assert own["customerId"] == user.customer_id and own["paymentUrl"]
    assert database.balance(user.account) == database.balance(other.account) == FUNDS


async def test_the_user_unbinds_their_own_agreement_in_the_app(
    alipay: AlipayPlusCaller, settings: Settings, engine: Engine, database: Ledger, browsers: Browsers
) -> None:
    user = browsers()
    bound = await bind(alipay, settings, user)

    unbound = await user.http.delete(f"/app/v1/agreements/{bound.agreement_id}")
    again = await user.http.delete(f"/app/v1/agreements/{bound.agreement_id}")
    paid = await alipay.call(PAY, wire(auto_debit_pay(settings, bound.access_token, customer_id=user.customer_id)))

    assert unbound.status_code == 200, unbound.text
    assert unbound.json() == {"agreementId": bound.agreement_id, "outcome": "UNBOUND"}
    assert again.status_code == 404
    assert result_of(paid) == ("F", "INVALID_TOKEN")
    row = agreement_row(engine, bound.agreement_id)
    assert (row.status, row.cancelled_by) == (AgreementStatus.CANCELLED, "USER")
    assert (await user.http.get("/app/v1/agreements")).json() == []
    assert database.balance(user.account) == FUNDS
