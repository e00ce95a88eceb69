"""Issue 17: what the API counts of Alipay+'s signed calls and of the bodies it refuses.

``mpp_signature_failures`` by reason (a closed set: ``alipayplus.SignatureFailure``),
``mpp_alipayplus_results`` by route (its template, not the path as received) and result, and
``mpp_body_rejections`` by listener and reason, each read before and after from the registry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY

from alipayplus import InquiryPaymentRequest, KeyRegistry, SignatureError, SignatureFailure, Signer, Verifier
from api.limits import BoundedRequests
from tests.api.conftest import result_of
from tests.conftest import FIXTURES
from wallet.settings import Settings

from .conftest import AlipayPlusCaller

pytestmark = pytest.mark.timeout(60)

INQUIRY = InquiryPaymentRequest.PATH
Headers = dict[str, str]


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def failures(reason: SignatureFailure) -> float:
    return sample("mpp_signature_failures_total", {"reason": reason.value})


def results(api: str, status: str, code: str) -> float:
    return sample("mpp_alipayplus_results_total", {"api": api, "result_status": status, "result_code": code})


def inquiry(settings: Settings) -> bytes:
    return InquiryPaymentRequest(
        acquirer_id="1022188000000000001", psp_id=settings.psp_id, payment_request_id=f"api-{uuid.uuid4().hex}"
    ).to_wire()


def _without(name: str) -> Callable[[Headers, Signer, bytes], Headers]:
    def change(headers: Headers, signer: Signer, body: bytes) -> Headers:
        return {key: value for key, value in headers.items() if key != name}

    return change


def _set(name: str, value: str) -> Callable[[Headers, Signer, bytes], Headers]:
    def change(headers: Headers, signer: Signer, body: bytes) -> Headers:
        return {**headers, name: value}

    return change


def _key_version(headers: Headers, signer: Signer, body: bytes) -> Headers:
    return Signer(signer.client_id, signer.private_key, "9").headers(INQUIRY, body)


def _client(headers: Headers, signer: Signer, body: bytes) -> Headers:
    return Signer("SANDBOX_SOMEONE_ELSE", signer.private_key, signer.key_version).headers(INQUIRY, body)


def _other_body(headers: Headers, signer: Signer, body: bytes) -> Headers:
    return signer.headers(INQUIRY, body + b" ")


CASES: dict[SignatureFailure, tuple[Callable[[Headers, Signer, bytes], Headers], str]] = {
    SignatureFailure.MISSING_SIGNATURE: (_without("Signature"), "INVALID_SIGNATURE"),
    SignatureFailure.BAD_FORMAT: (_set("Signature", "algorithm=MD5,keyVersion=1,signature=abc"), "INVALID_SIGNATURE"),
    SignatureFailure.UNKNOWN_KEY: (_key_version, "KEY_NOT_FOUND"),
    SignatureFailure.UNKNOWN_CLIENT: (_client, "INVALID_CLIENT"),
    SignatureFailure.BAD_SIGNATURE: (_other_body, "INVALID_SIGNATURE"),
    SignatureFailure.MISSING_TIME: (_without("Request-Time"), "PARAM_ILLEGAL"),
}


@pytest.mark.parametrize("reason", list(CASES), ids=str)
async def test_a_refused_signature_counts_its_reason_and_its_answer(
    reason: SignatureFailure, alipay: AlipayPlusCaller, settings: Settings
) -> None:
    change, code = CASES[reason]
    body = inquiry(settings)
    headers = change(alipay.peer.signer.headers(INQUIRY, body), alipay.peer.signer, body)
    before = {other: failures(other) for other in SignatureFailure}
    answered = results(INQUIRY, "F", code)

    answer = await alipay.call(INQUIRY, body, headers)

    assert result_of(answer) == ("F", code)
    assert {other: failures(other) - before[other] for other in SignatureFailure} == {
        other: 1.0 if other is reason else 0.0 for other in SignatureFailure
    }
    assert results(INQUIRY, "F", code) == answered + 1


async def test_a_signed_call_counts_its_result_under_the_route_not_the_path_received(
    alipay: AlipayPlusCaller, settings: Settings
) -> None:
    body = inquiry(settings)
    before = {reason: failures(reason) for reason in SignatureFailure}
    seen = {
        (s.labels["result_status"], s.labels["result_code"]): s.value
        for metric in REGISTRY.collect()
        if metric.name == "mpp_alipayplus_results"
        for s in metric.samples
        if s.name.endswith("_total") and s.labels["api"] == INQUIRY
    }

    answer = await alipay.call(INQUIRY, body)

    status, code = result_of(answer)
    assert results(INQUIRY, status, code) == seen.get((status, code), 0.0) + 1
    assert {reason: failures(reason) for reason in SignatureFailure} == before  # a good signature: no failure


def test_every_refusal_of_the_verifier_names_its_reason() -> None:
    """The reasons the API cannot provoke with the test settings (no Request-Time window there)."""
    signer = Signer.from_pem("PEER", (FIXTURES / "test_alipayplus_private.pem").read_bytes())
    keys = KeyRegistry()
    keys.add_file("PEER", "1", FIXTURES / "test_alipayplus_public.pem")
    sent = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    verifier = Verifier("PEER", keys, request_time_window=timedelta(minutes=5), clock=lambda: sent + timedelta(hours=1))
    body = b"{}"

    with pytest.raises(SignatureError) as skewed:
        verifier.check(INQUIRY, signer.headers(INQUIRY, body, time=sent.isoformat()), body)
    with pytest.raises(SignatureError) as garbled:
        verifier.check(INQUIRY, signer.headers(INQUIRY, body, time="yesterday"), body)

    assert (skewed.value.reason, garbled.value.reason) == (SignatureFailure.CLOCK_SKEW, SignatureFailure.BAD_TIME)


# --- bodies refused before they are read ----------------------------------------------------


def bounded_app(**options: object) -> BoundedRequests:
    inner = FastAPI()

    @inner.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return BoundedRequests(inner, default_limit=64, max_json_depth=3, **options)  # type: ignore[arg-type]


def rejections(listener: str, reason: str) -> float:
    return sample("mpp_body_rejections_total", {"listener": listener, "reason": reason})


@pytest.mark.parametrize("listener", ["public", "ops"])
async def test_refused_bodies_count_by_listener_and_reason(listener: str) -> None:
    app = bounded_app() if listener == "public" else bounded_app(listener="ops")
    reasons = ("too_large", "too_deep", "multipart")
    before = {reason: rejections(listener, reason) for reason in reasons}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        too_large = await http.post("/echo", content=b"x" * 65, headers={"content-type": "text/plain"})

        async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(10):
                yield b"y" * 16

        streamed_too_large = await http.post("/echo", content=streamed(), headers={"content-type": "text/plain"})
        too_deep = await http.post("/echo", content=json.dumps([[[[1]]]]), headers={"content-type": "application/json"})
        multipart = await http.post(
            "/echo", content=b"--b--", headers={"content-type": "multipart/form-data; boundary=b"}
        )
        fine = await http.post("/echo", content=json.dumps([[1]]), headers={"content-type": "application/json"})

    assert [r.status_code for r in (too_large, streamed_too_large, too_deep, multipart, fine)] == [
        413,
        413,
        400,
        415,
        200,
    ]
    assert {reason: rejections(listener, reason) - before[reason] for reason in reasons} == {
        "too_large": 2,
        "too_deep": 1,
        "multipart": 1,
    }
