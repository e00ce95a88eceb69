"""The sandbox Alipay+ endpoints the MPP calls: signatures, scripted answers, controls, SMS."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from alipayplus import (
    Amount,
    AuthNotifyRequest,
    AuthNotifyResponse,
    AuthorizationNotifyType,
    ErrorResponse,
    NotifyPaymentRequest,
    NotifyPaymentResponse,
    Result,
    ResultCode,
    ResultStatus,
    SignedClient,
    Signer,
    TransportError,
    Verifier,
)
from sandbox.alipayplus.app import create_app
from sandbox.alipayplus.peer import SandboxAlipayPlus

ALIPAYPLUS_URL = "http://alipayplus.test"
NOTIFY = NotifyPaymentRequest.PATH


def notice(payment_request_id: str = "2023091819074101000380025683717") -> NotifyPaymentRequest:
    return NotifyPaymentRequest(
        payment_result=Result.success(),
        payment_request_id=payment_request_id,
        payment_id="201000000000000000000000004444",
        payment_time=datetime(2023, 9, 18, 9, 40, tzinfo=UTC),
        payment_amount=Amount(currency="HKD", value=50),
        pay_to_amount=Amount(currency="HKD", value=50),
        customer_id="2160220037535020",
    )


def auth_notice(reference_agreement_id: str = "2023091819074101000380025683717") -> AuthNotifyRequest:
    return AuthNotifyRequest(
        authorization_notify_type=AuthorizationNotifyType.TOKEN_CREATED,
        reference_agreement_id=reference_agreement_id,
        auth_client_id="2188120040699147",
        access_token="AT0123",
        customer_id="2160220037535020",
        acquirer_id="1022188000000000001",
        psp_id="1022160000000000000",
    )


async def test_notify_payment_is_accepted_recorded_and_answer_signed(
    http: httpx.AsyncClient, mpp_signer: Signer, alipayplus_verifier: Verifier, peer: SandboxAlipayPlus
) -> None:
    body = notice().to_wire()
    response = await http.post(NOTIFY, content=body, headers=mpp_signer.headers(NOTIFY, body))

    assert response.status_code == 200
    alipayplus_verifier.check(NOTIFY, response.headers, response.content, response=True)  # Alipay+'s key signed it
    assert NotifyPaymentResponse.from_wire(response.content).result.result_status is ResultStatus.SUCCESS

    received = (
        await http.get("/sandbox/notifications", params={"paymentRequestId": notice().payment_request_id})
    ).json()
    assert len(received) == 1
    assert received[0]["paymentId"] == "201000000000000000000000004444"
    assert received[0]["paymentResult"]["resultStatus"] == "S"
    assert datetime.fromisoformat(received[0]["receivedAt"]).tzinfo is not None
    assert (await http.get("/sandbox/notifications", params={"paymentRequestId": "other"})).json() == []
    assert len(peer.notifications()) == 1


async def test_tampered_body_gets_signed_invalid_signature(
    http: httpx.AsyncClient, mpp_signer: Signer, alipayplus_verifier: Verifier, peer: SandboxAlipayPlus
) -> None:
    body = notice().to_wire()
    tampered = body.replace(b'"HKD","value":"50"', b'"HKD","value":"5000"')
    assert tampered != body
    response = await http.post(NOTIFY, content=tampered, headers=mpp_signer.headers(NOTIFY, body))

    assert response.status_code == 200
    alipayplus_verifier.check(NOTIFY, response.headers, response.content, response=True)
    result = ErrorResponse.from_wire(response.content).result
    assert (result.result_status, result.result_code) == (ResultStatus.FAIL, ResultCode.INVALID_SIGNATURE)
    assert peer.notifications() == []


async def test_wrong_client_id_gets_invalid_client(
    mpp_client: Callable[..., SignedClient], mpp_signer: Signer, peer: SandboxAlipayPlus
) -> None:
    stranger = Signer("SOMEONE_ELSE", mpp_signer.private_key)
    response = await mpp_client(signer=stranger).call(NOTIFY, notice(), ErrorResponse)

    assert (response.result.result_status, response.result.result_code) == (
        ResultStatus.FAIL,
        ResultCode.INVALID_CLIENT,
    )
    assert peer.notifications() == []


async def test_unparsable_notice_gets_param_illegal_naming_the_field(
    http: httpx.AsyncClient, mpp_signer: Signer
) -> None:
    body = json.dumps({"paymentResult": {"resultStatus": "S", "resultCode": "SUCCESS"}}).encode()
    response = await http.post(NOTIFY, content=body, headers=mpp_signer.headers(NOTIFY, body))

    result = ErrorResponse.from_wire(response.content).result
    assert (result.result_status, result.result_code) == (ResultStatus.FAIL, ResultCode.PARAM_ILLEGAL)
    assert "paymentRequestId" in (result.result_message or "")


async def test_scripted_answers_come_in_order_then_success(
    http: httpx.AsyncClient, mpp_client: Callable[..., SignedClient], peer: SandboxAlipayPlus
) -> None:
    scripted = await http.post("/sandbox/behaviour", json={"api": "notifyPayment", "answers": ["U", "F", "S"]})
    assert scripted.status_code == 200
    client = mpp_client()

    answers = [(await client.call(NOTIFY, notice(), NotifyPaymentResponse)).result for _ in range(4)]

    assert [(a.result_status, a.result_code) for a in answers] == [
        (ResultStatus.UNKNOWN, ResultCode.UNKNOWN_EXCEPTION),
        (ResultStatus.FAIL, ResultCode.PROCESS_FAIL),
        (ResultStatus.SUCCESS, ResultCode.SUCCESS),
        (ResultStatus.SUCCESS, ResultCode.SUCCESS),  # queue empty: S
    ]
    assert len(peer.notifications(notice().payment_request_id)) == 4  # every retry is recorded


async def test_auth_notify_answer_echoes_ids_and_follows_its_own_script(
    http: httpx.AsyncClient, mpp_client: Callable[..., SignedClient], peer: SandboxAlipayPlus
) -> None:
    await http.post("/sandbox/behaviour", json={"api": "authNotify", "answers": ["U"]})
    client = mpp_client()

    first = await client.call(AuthNotifyRequest.PATH, auth_notice(), AuthNotifyResponse)
    second = await client.call(AuthNotifyRequest.PATH, auth_notice(), AuthNotifyResponse)
    notified = await client.call(NOTIFY, notice(), NotifyPaymentResponse)  # notifyPayment's queue is separate

    assert first.result.result_status is ResultStatus.UNKNOWN
    assert second.result.is_success and notified.result.is_success
    assert (second.acquirer_id, second.psp_id) == ("1022188000000000001", "1022160000000000000")
    received = (
        await http.get(
            "/sandbox/auth-notifications", params={"referenceAgreementId": auth_notice().reference_agreement_id}
        )
    ).json()
    assert [r["accessToken"] for r in received] == ["AT0123", "AT0123"]


async def test_behaviour_script_rejects_unknown_answers(http: httpx.AsyncClient) -> None:
    response = await http.post("/sandbox/behaviour", json={"api": "notifyPayment", "answers": ["MAYBE"]})
    assert response.status_code == 422


async def test_silent_answer_times_the_mpp_out(
    peer: SandboxAlipayPlus, mpp_client: Callable[..., SignedClient]
) -> None:
    peer.script("notifyPayment", ["SILENT"])  # silence_seconds=1.0 in the fixture
    client = mpp_client(timeout=0.5)  # ample for an answer, short of the silence

    with pytest.raises(TransportError, match="no complete answer within"):
        await client.call(NOTIFY, notice(), NotifyPaymentResponse)

    assert len(peer.notifications()) == 1  # it arrived; only the answer was lost
    assert (await client.call(NOTIFY, notice(), NotifyPaymentResponse)).result.is_success


async def test_silent_answer_is_u_for_a_patient_client(
    peer: SandboxAlipayPlus, mpp_client: Callable[..., SignedClient]
) -> None:
    peer.script("notifyPayment", ["SILENT"])
    answer = await mpp_client(timeout=3.0).call(NOTIFY, notice(), NotifyPaymentResponse)
    assert answer.result.result_status is ResultStatus.UNKNOWN


async def test_sms_gateway_records_and_latest_otp_reads_the_newest(
    http: httpx.AsyncClient, peer: SandboxAlipayPlus
) -> None:
    for code in ("123456", "654321"):
        text = f"{code} is your code to pay HKD 0.50 at testAliasName. It expires in 5 minutes. Never share it."
        sent = await http.post("/sandbox/sms", json={"to": "+85295303585", "text": text, "reference": f"c-{code}"})
        assert sent.json() == {"accepted": True}
    await http.post("/sandbox/sms", json={"to": "+85200000000", "text": "999999 is someone else's", "reference": "x"})

    inbox = (await http.get("/sandbox/sms", params={"to": "+85295303585"})).json()
    assert [m["reference"] for m in inbox] == ["c-123456", "c-654321"]  # newest last
    assert "receivedAt" in inbox[0]
    assert peer.latest_otp("+85295303585") == "654321"
    assert peer.latest_otp("+852 9530 3585") == "654321"  # same number, other spelling
    assert peer.latest_otp("+85211111111") is None
    # an unencoded "+" in a query string arrives as a space; the number still matches
    assert len((await http.get("/sandbox/sms?to=+85295303585")).json()) == 2


async def test_reset_clears_everything(
    http: httpx.AsyncClient, mpp_client: Callable[..., SignedClient], peer: SandboxAlipayPlus
) -> None:
    await mpp_client().call(NOTIFY, notice(), NotifyPaymentResponse)
    peer.record_sms("+85295303585", "111111 is your code", "r")
    peer.script("notifyPayment", ["F"])

    assert (await http.post("/sandbox/reset")).status_code == 200

    assert peer.notifications() == [] and peer.sms("+85295303585") == []
    assert (await mpp_client().call(NOTIFY, notice(), NotifyPaymentResponse)).result.is_success


async def test_result_page_echoes_status_and_payment_request_id(http: httpx.AsyncClient) -> None:
    page = await http.get("/sandbox/result", params={"status": "success", "paymentRequestId": "2023<b>"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "success" in page.text and "2023&lt;b&gt;" in page.text


async def test_controls_refuse_remote_callers(peer: SandboxAlipayPlus) -> None:
    transport = httpx.ASGITransport(app=create_app(peer), client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=transport) as remote:
        assert (await remote.post("/sandbox/reset")).status_code == 403
