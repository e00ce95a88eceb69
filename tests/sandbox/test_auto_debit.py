"""The sandbox Alipay+'s Auto Debit surface: authNotify AUTHCODE_CREATED / TOKEN_CANCELED recorded,
consultUnbinding answered as controlled, the driver's Auto Debit builders and signed calls, and the
wallet user following a consent page to the merchant's redirect."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from alipayplus import (
    Amount,
    AuthNotifyRequest,
    AuthNotifyResponse,
    AuthorizationNotifyType,
    CancelTokenRequest,
    CancelTokenResponse,
    ConsultUnbindingRequest,
    ConsultUnbindingResponse,
    ErrorResponse,
    GrantType,
    Message,
    PayRequest,
    PrepareRequest,
    PrepareResponse,
    Result,
    ResultCode,
    ResultStatus,
    Scope,
    SendOtpRequest,
    SendOtpResponse,
    SignedClient,
    Signer,
    Verifier,
    VerifyOtpRequest,
    VerifyOtpResponse,
)
from api import pages
from sandbox.alipayplus.consent import ConsentBrowser, ConsentError, ConsentForm
from sandbox.alipayplus.driver import (
    ACQUIRER_ID,
    AUTO_DEBIT_CLIENT_ID,
    PSP_ID,
    AlipayPlusDriver,
    agreement_apply_token,
    auto_debit_pay,
    cancel_token_request,
    prepare_request,
    send_otp_request,
    verify_otp_request,
)
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.alipayplus.transport import TimeoutASGITransport

MPP_URL = "http://mpp.test"
AGREEMENT = "8f2c0c4ab1d24f59a1b0c2d3e4f5a6b7"
REFERENCE = "2023091819074101000380025683717"
TOKEN = "AT" + "7" * 40
CONSULT = ConsultUnbindingRequest.PATH


def _wire(message: Message) -> dict[str, Any]:
    """The message as it goes over the wire, parsed back (camelCase keys, flags and amounts as strings)."""
    return json.loads(message.to_wire())  # type: ignore[no-any-return]


def auth_notice(kind: AuthorizationNotifyType, reference: str = REFERENCE) -> AuthNotifyRequest:
    return AuthNotifyRequest(
        authorization_notify_type=kind,
        reference_agreement_id=reference,
        auth_client_id=AUTO_DEBIT_CLIENT_ID,
        auth_code="C0DE" * 8 if kind is AuthorizationNotifyType.AUTHCODE_CREATED else None,
        auth_state="state_1" if kind is AuthorizationNotifyType.AUTHCODE_CREATED else None,
        customer_id="2160220037535021",
        acquirer_id=ACQUIRER_ID,
        psp_id=PSP_ID,
    )


def consult(auth_client_id: str = AUTO_DEBIT_CLIENT_ID, token: str = TOKEN) -> ConsultUnbindingRequest:
    return ConsultUnbindingRequest(
        auth_client_id=auth_client_id, reference_merchant_id=auth_client_id, access_token=token
    )


# --- authNotify AUTHCODE_CREATED and TOKEN_CANCELED -------------------------------------------


async def test_authcode_created_and_token_cancelled_are_recorded_by_agreement_and_type(
    http: httpx.AsyncClient, mpp_client: Callable[..., SignedClient], peer: SandboxAlipayPlus
) -> None:
    client = mpp_client()
    created = await client.call(
        AuthNotifyRequest.PATH, auth_notice(AuthorizationNotifyType.AUTHCODE_CREATED), AuthNotifyResponse
    )
    cancelled = await client.call(
        AuthNotifyRequest.PATH, auth_notice(AuthorizationNotifyType.TOKEN_CANCELED), AuthNotifyResponse
    )
    await client.call(
        AuthNotifyRequest.PATH, auth_notice(AuthorizationNotifyType.TOKEN_CANCELED, "other"), AuthNotifyResponse
    )

    assert created.result.is_success and cancelled.result.is_success
    assert (created.acquirer_id, created.psp_id) == (ACQUIRER_ID, PSP_ID)
    everything = (await http.get("/sandbox/auth-notifications", params={"referenceAgreementId": REFERENCE})).json()
    assert [n["authorizationNotifyType"] for n in everything] == ["AUTHCODE_CREATED", "TOKEN_CANCELED"]
    codes = (
        await http.get(
            "/sandbox/auth-notifications",
            params={"referenceAgreementId": REFERENCE, "authorizationNotifyType": "AUTHCODE_CREATED"},
        )
    ).json()
    assert [(n["authCode"], n["authState"]) for n in codes] == [("C0DE" * 8, "state_1")]
    assert len(peer.auth_notifications(notify_type=AuthorizationNotifyType.TOKEN_CANCELED)) == 2
    assert peer.auth_code(REFERENCE) == "C0DE" * 8
    assert peer.auth_code("other") is None  # a TOKEN_CANCELED carries no code


async def test_auth_notifications_refuse_an_unknown_type_filter(http: httpx.AsyncClient) -> None:
    response = await http.get("/sandbox/auth-notifications", params={"authorizationNotifyType": "TOKEN_LOST"})
    assert response.status_code == 422


# --- consultUnbinding ---------------------------------------------------------------------------


async def test_consult_unbinding_allows_by_default_signed_and_recorded(
    http: httpx.AsyncClient, mpp_client: Callable[..., SignedClient], peer: SandboxAlipayPlus
) -> None:
    answer = await mpp_client().call(CONSULT, consult(), ConsultUnbindingResponse)  # checks Alipay+'s signature

    assert answer.result.is_success and answer.allow_unbinding is True
    received = (await http.get("/sandbox/consult-unbinding", params={"authClientId": AUTO_DEBIT_CLIENT_ID})).json()
    assert [(r["authClientId"], r["accessToken"]) for r in received] == [(AUTO_DEBIT_CLIENT_ID, TOKEN)]
    assert "receivedAt" in received[0]
    assert (await http.get("/sandbox/consult-unbinding", params={"authClientId": "someone"})).json() == []
    assert len(peer.consultations()) == 1


async def test_consult_unbinding_answers_as_set_per_merchant_then_for_everyone(
    http: httpx.AsyncClient, mpp_client: Callable[..., SignedClient]
) -> None:
    client = mpp_client()
    set_one = await http.post("/sandbox/consult-unbinding", json={"allowUnbinding": False, "authClientId": "2188999"})
    assert set_one.json() == {"authClientId": "2188999", "allowUnbinding": False}

    refused = await client.call(CONSULT, consult("2188999"), ConsultUnbindingResponse)
    other = await client.call(CONSULT, consult(), ConsultUnbindingResponse)
    assert refused.result.is_success and refused.allow_unbinding is False
    assert '"allowUnbinding":"false"' in refused.to_wire().decode()  # a flag on the wire, as Alipay+ sends it
    assert other.allow_unbinding is True

    await http.post("/sandbox/consult-unbinding", json={"allowUnbinding": False})  # every other merchant
    await http.post("/sandbox/consult-unbinding", json={"allowUnbinding": True, "authClientId": "2188999"})
    assert (await client.call(CONSULT, consult(), ConsultUnbindingResponse)).allow_unbinding is False
    assert (await client.call(CONSULT, consult("2188999"), ConsultUnbindingResponse)).allow_unbinding is True


async def test_consult_unbinding_follows_its_own_script_by_merchant(
    http: httpx.AsyncClient, mpp_client: Callable[..., SignedClient]
) -> None:
    await http.post("/sandbox/behaviour", json={"api": "consultUnbinding", "answers": ["U", "F"], "subject": "21"})
    client = mpp_client()

    untouched = await client.call(CONSULT, consult(), ConsultUnbindingResponse)
    first = await client.call(CONSULT, consult("21"), ConsultUnbindingResponse)
    second = await client.call(CONSULT, consult("21"), ConsultUnbindingResponse)
    third = await client.call(CONSULT, consult("21"), ConsultUnbindingResponse)

    assert untouched.allow_unbinding is True
    assert first.result.result_status is ResultStatus.UNKNOWN and first.allow_unbinding is None
    assert second.result.result_status is ResultStatus.FAIL and second.allow_unbinding is None
    assert third.result.is_success and third.allow_unbinding is True


async def test_consult_unbinding_with_a_tampered_body_is_refused_and_not_recorded(
    http: httpx.AsyncClient, mpp_signer: Signer, alipayplus_verifier: Verifier, peer: SandboxAlipayPlus
) -> None:
    body = consult().to_wire()
    response = await http.post(CONSULT, content=body.replace(b"AT7", b"AT8"), headers=mpp_signer.headers(CONSULT, body))

    alipayplus_verifier.check(CONSULT, response.headers, response.content, response=True)
    result = ErrorResponse.from_wire(response.content).result
    assert (result.result_status, result.result_code) == (ResultStatus.FAIL, ResultCode.INVALID_SIGNATURE)
    assert peer.consultations() == []


async def test_reset_forgets_consultations_and_answers(
    http: httpx.AsyncClient, mpp_client: Callable[..., SignedClient], peer: SandboxAlipayPlus
) -> None:
    await http.post("/sandbox/consult-unbinding", json={"allowUnbinding": False})
    await mpp_client().call(CONSULT, consult(), ConsultUnbindingResponse)
    await http.post("/sandbox/reset")

    assert peer.consultations() == []
    assert peer.allows_unbinding(AUTO_DEBIT_CLIENT_ID) is True


# --- the driver's Auto Debit builders -------------------------------------------------------------


def test_prepare_asks_for_agreement_pay_with_the_redirect_and_a_state() -> None:
    request = prepare_request(REFERENCE, "https://merchant.example/bound", psp_id="P1")
    wire = _wire(request)

    assert PrepareRequest.from_wire(request.to_wire()) == request
    assert wire["scopes"] == ["AGREEMENT_PAY"] and request.scopes == [Scope.AGREEMENT_PAY]
    assert (wire["pspId"], wire["acquirerId"], wire["authClientId"]) == ("P1", ACQUIRER_ID, AUTO_DEBIT_CLIENT_ID)
    assert wire["referenceAgreementId"] == REFERENCE and wire["authRedirectUrl"] == "https://merchant.example/bound"
    assert wire["authState"] == f"state_{REFERENCE}" and wire["authClientName"]


def test_auto_debit_pay_carries_the_token_and_only_the_agreement_flag() -> None:
    amount = Amount(currency="IDR", value=5000)
    paid = _wire(auto_debit_pay("p1", TOKEN, amount))
    evaluated = _wire(auto_debit_pay("e1", TOKEN, amount, evaluation=True))

    assert paid["paymentMethod"]["paymentMethodId"] == TOKEN
    assert paid["paymentFactor"]["isAgreementPayment"] == "true"
    assert paid["paymentFactor"]["isEasyPayScenario"] == "false"
    assert paid["paymentFactor"]["isPaymentEvaluation"] == "false"
    assert evaluated["paymentFactor"]["isPaymentEvaluation"] == "true"
    assert paid["payToAmount"] == {"currency": "IDR", "value": "5000"}
    assert "paymentExpiryTime" not in paid and "paymentRedirectUrl" not in paid  # no page: final within pay
    assert PayRequest.from_wire(auto_debit_pay("p1", TOKEN, amount).to_wire()).payment_factor.is_agreement_payment


def test_agreement_apply_token_names_the_merchant_and_its_acquirer() -> None:
    exchange = agreement_apply_token(auth_code="C0DE")
    refresh = agreement_apply_token(refresh_token="RT1", auth_client_id="2188")

    assert (exchange.grant_type, exchange.auth_code, exchange.auth_client_id) == (
        GrantType.AUTHORIZATION_CODE,
        "C0DE",
        AUTO_DEBIT_CLIENT_ID,
    )
    assert exchange.acquirer_id == ACQUIRER_ID
    assert (refresh.grant_type, refresh.refresh_token, refresh.auth_client_id) == (
        GrantType.REFRESH_TOKEN,
        "RT1",
        "2188",
    )
    with pytest.raises(ValueError):
        agreement_apply_token()


def test_cancel_token_and_risk_challenge_builders() -> None:
    assert _wire(cancel_token_request(TOKEN)) == {"pspId": PSP_ID, "acquirerId": ACQUIRER_ID, "accessToken": TOKEN}
    assert _wire(send_otp_request(TOKEN))["verifyType"] == "MOBILE"
    verify = _wire(verify_otp_request(TOKEN, "V1", "123456"))
    assert (verify["accessToken"], verify["verifyRequestId"], verify["otpCode"]) == (TOKEN, "V1", "123456")


# --- the driver's signed Auto Debit calls, against a fake MPP ---------------------------------------


class FakeMpp:
    """prepare, cancelToken, sendOtp, verifyOtp and a consent page, reduced to: check Alipay+'s
    signature (the APIs) or the session (the page), answer as fixed."""

    def __init__(self, signer: Signer, verifier: Verifier) -> None:
        self.received: list[Message] = []
        self.posted: list[dict[str, str]] = []
        self.app = FastAPI()
        app = self.app

        def signed(path: str, message: Message) -> Response:
            body = message.to_wire()
            return Response(content=body, headers=signer.headers(path, body, response=True))

        async def checked(request: Request, message_type: type[Message]) -> Message:
            body = await request.body()
            verifier.check(request.url.path, request.headers, body)
            message = message_type.from_wire(body)
            self.received.append(message)
            return message

        @app.post(PrepareRequest.PATH)
        async def prepare(request: Request) -> Response:
            await checked(request, PrepareRequest)
            auth_url = f"{MPP_URL}/agreements/consent/{AGREEMENT}"
            return signed(PrepareRequest.PATH, PrepareResponse(result=Result.success(), auth_url=auth_url))

        @app.post(CancelTokenRequest.PATH)
        async def cancel_token(request: Request) -> Response:
            await checked(request, CancelTokenRequest)
            return signed(CancelTokenRequest.PATH, CancelTokenResponse(result=Result.success()))

        @app.post(SendOtpRequest.PATH)
        async def send_otp(request: Request) -> Response:
            await checked(request, SendOtpRequest)
            return signed(SendOtpRequest.PATH, SendOtpResponse(result=Result.success(), verify_request_id="V1"))

        @app.post(VerifyOtpRequest.PATH)
        async def verify_otp(request: Request) -> Response:
            message = await checked(request, VerifyOtpRequest)
            assert isinstance(message, VerifyOtpRequest)
            right = message.otp_code == "123456"
            result = Result.success() if right else Result.of(ResultCode.USER_PAYMENT_VERIFICATION_FAILED)
            return signed(VerifyOtpRequest.PATH, VerifyOtpResponse(result=result))

        @app.post("/app/v1/login")
        async def login(request: Request) -> Response:
            body = await request.json()
            if body != {"loginId": "852-11112222", "pin": "246810"}:
                return JSONResponse({"detail": "Wrong login or PIN"}, status_code=401)
            return JSONResponse({"sessionToken": "S1", "customerId": "2160220037535021", "expiresAt": "2099-01-01"})

        @app.get("/agreements/consent/{agreement_id}", response_class=HTMLResponse)
        async def page(agreement_id: str, request: Request) -> Response:
            if request.headers.get("authorization") != "Bearer S1":
                return HTMLResponse("<p>Sign in</p>", status_code=401)
            return HTMLResponse(_consent_page(agreement_id, token="T-" + agreement_id))

        @app.post("/agreements/consent/{agreement_id}")
        async def decide(
            agreement_id: str,
            request: Request,
            action: str = Form(),  # noqa: B008
            csrf_token: str = Form(""),  # noqa: B008
        ) -> Response:
            self.posted.append({"action": action, "csrf_token": csrf_token, "auth": request.headers["authorization"]})
            if csrf_token != "T-" + agreement_id:
                return HTMLResponse("refused", status_code=403)
            if action == "decline":
                return HTMLResponse("<h1>Not linked</h1>")
            return RedirectResponse("https://merchant.example/bound?x=1&authCode=AC1&authState=state_1", 303)


def _consent_page(agreement_id: str, token: str) -> str:
    """Our real consent template, rendered as the page renders it."""
    return pages.templates.get_template("agreement_consent.html").render(
        merchant="Sandbox Gift Shop",
        scopes=["Charging your wallet for this merchant's payments"],
        action=f"/agreements/consent/{agreement_id}",
        token=token,
        token_field=pages.CSRF_FIELD,
    )


@pytest.fixture
def fake_mpp(mpp_signer: Signer, alipayplus_verifier: Verifier) -> FakeMpp:
    return FakeMpp(mpp_signer, alipayplus_verifier)


@pytest.fixture
async def driver(peer: SandboxAlipayPlus, fake_mpp: FakeMpp) -> AsyncIterator[AlipayPlusDriver]:
    async with AlipayPlusDriver.for_peer(peer, MPP_URL, transport=TimeoutASGITransport(app=fake_mpp.app)) as driver:
        yield driver


async def test_driver_prepare_cancel_token_and_otp_calls_are_signed_both_ways(
    driver: AlipayPlusDriver, fake_mpp: FakeMpp
) -> None:
    prepared = await driver.prepare(prepare_request(REFERENCE, "https://merchant.example/bound"))
    cancelled = await driver.cancel_token(cancel_token_request(TOKEN))
    sent = await driver.send_otp(send_otp_request(TOKEN))
    wrong = await driver.verify_otp(verify_otp_request(TOKEN, "V1", "000000"))
    right = await driver.verify_otp(verify_otp_request(TOKEN, "V1", "123456"))

    assert prepared.auth_url == f"{MPP_URL}/agreements/consent/{AGREEMENT}"
    assert cancelled.result.is_success and sent.verify_request_id == "V1"
    assert wrong.result.result_code == ResultCode.USER_PAYMENT_VERIFICATION_FAILED and right.result.is_success
    assert [type(m).__name__ for m in fake_mpp.received] == [
        "PrepareRequest",
        "CancelTokenRequest",
        "SendOtpRequest",
        "VerifyOtpRequest",
        "VerifyOtpRequest",
    ]


# --- the wallet user on the consent page --------------------------------------------------------------


def test_consent_form_reads_our_template() -> None:
    form = ConsentForm.parse(_consent_page(AGREEMENT, token="T1"))

    assert form.action == f"/agreements/consent/{AGREEMENT}"
    assert form.hidden == {pages.CSRF_FIELD: "T1"}
    assert form.actions == {"agree", "decline"}


async def test_follow_consent_signs_in_agrees_and_reads_the_code_from_the_redirect(
    driver: AlipayPlusDriver, fake_mpp: FakeMpp
) -> None:
    decision = await driver.follow_consent(f"{MPP_URL}/agreements/consent/{AGREEMENT}", "852-11112222", "246810")

    assert decision.agreed and decision.status_code == 303
    assert (decision.auth_code, decision.auth_state) == ("AC1", "state_1")
    assert decision.location is not None
    assert parse_qs(urlsplit(decision.location).query)["x"] == ["1"]  # the merchant's own query kept
    assert fake_mpp.posted == [{"action": "agree", "csrf_token": "T-" + AGREEMENT, "auth": "Bearer S1"}]


async def test_follow_consent_can_decline(driver: AlipayPlusDriver, fake_mpp: FakeMpp) -> None:
    decision = await driver.follow_consent(
        f"{MPP_URL}/agreements/consent/{AGREEMENT}", "852-11112222", "246810", action="decline"
    )

    assert not decision.agreed and decision.status_code == 200
    assert decision.auth_code is None and decision.location is None and "Not linked" in decision.page


async def test_consent_browser_reports_a_refused_login_and_a_page_it_cannot_open(fake_mpp: FakeMpp) -> None:
    async with ConsentBrowser(MPP_URL, transport=httpx.ASGITransport(app=fake_mpp.app)) as user:
        with pytest.raises(ConsentError, match="login"):
            await user.login("852-11112222", "999999")
        with pytest.raises(ConsentError, match="HTTP 401"):
            await user.decide(f"{MPP_URL}/agreements/consent/{AGREEMENT}")  # not signed in
        assert await user.login("852-11112222", "246810") == "2160220037535021"
        decision = await user.decide(f"{MPP_URL}/agreements/consent/{AGREEMENT}")
    assert decision.auth_code == "AC1"
