"""The sandbox Ant server behind Alipay+'s signed sdkProxy, and the sandbox Mastercard.

Every Ant call crosses the real signed wire: requests are signed with the MPP's key and every
answer (errors included) is checked with Alipay+'s, as the MPP's client does.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alipayplus import ErrorResponse, Result, ResultCode, ResultStatus, Signer, Verifier
from alipayplus.nfc import SdkProxyRequest, SdkProxyResponse
from sandbox.alipayplus.app import create_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.nfc import GET_PUBLIC_KEY_PATH, SandboxAntNfc, SandboxMastercard, TokenState

from .conftest import ALIPAYPLUS_URL, CLIENT_ID, Keys

PROXY = SdkProxyRequest.PATH
CUSTOMER = "2160220037535020"
OTHER_CUSTOMER = "2160220037535099"
FINGERPRINT = hashlib.sha256(b"sandbox phone").hexdigest()
NOW = datetime(2025, 7, 15, 8, 30, tzinfo=UTC)


@dataclass
class Sleeps:
    """Records scripted delays instead of waiting them out."""

    seconds: list[float]

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@dataclass
class Activations:
    calls: list[tuple[str, str, str]]

    async def __call__(self, token_reference_id: str, customer_id: str, device_fingerprint: str) -> None:
        self.calls.append((token_reference_id, customer_id, device_fingerprint))


@dataclass(frozen=True)
class SdkAnswer:
    result: Result
    header: dict[str, Any]
    data: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.header["code"])


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps([])


@pytest.fixture
def activations() -> Activations:
    return Activations([])


@pytest.fixture
def mastercard(sleeps: Sleeps) -> SandboxMastercard:
    return SandboxMastercard(sleep=sleeps)


@pytest.fixture
def ant(mastercard: SandboxMastercard, sleeps: Sleeps, activations: Activations) -> SandboxAntNfc:
    return SandboxAntNfc(mastercard, clock=lambda: NOW, sleep=sleeps, on_token_active=activations)


@pytest.fixture
async def nfc_http(
    peer: SandboxAlipayPlus, ant: SandboxAntNfc, mastercard: SandboxMastercard
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(peer, ant_nfc=ant, mastercard=mastercard)
    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=httpx.ASGITransport(app=app)) as client:
        yield client


@dataclass
class Sdk:
    """The NFC SDK's requests as the MPP forwards them: wrapped, signed, answers verified."""

    http: httpx.AsyncClient
    signer: Signer
    verifier: Verifier

    async def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        response = await self.http.post(
            PROXY, content=body, headers=self.signer.headers(PROXY, body) if headers is None else headers
        )
        assert response.status_code == 200
        self.verifier.check(PROXY, response.headers, response.content, response=True)  # raises unless signed
        return response

    async def call(
        self, api: str, data: dict[str, Any] | str, customer_id: str = CUSTOMER, request_id: str | None = None
    ) -> SdkAnswer:
        request_id = request_id or f"req-{api}-{uuid.uuid4().hex[:8]}"
        header = json.dumps({"api": api, "requestId": request_id, "sdkVersion": "1.0.0"})
        request = SdkProxyRequest(
            customer_id=customer_id,
            sdk_request_header=header,
            sdk_request_data=data if isinstance(data, str) else json.dumps(data),
        )
        answer = SdkProxyResponse.from_wire((await self.post(request.to_wire())).content)
        assert answer.result.result_status is ResultStatus.SUCCESS
        assert answer.sdk_response_header is not None and answer.sdk_response_data is not None
        response_header = json.loads(answer.sdk_response_header)
        assert (response_header["api"], response_header["requestId"]) == (api, request_id)
        return SdkAnswer(answer.result, response_header, json.loads(answer.sdk_response_data))

    async def approved_token(self, customer_id: str = CUSTOMER) -> str:
        """Apply and poll until APPROVED: the tokenReferenceId."""
        applied = await self.call("applyNfcToken", _apply_data(), customer_id)
        for _ in range(10):
            answer = await self.call("queryToken", {"tokenRequestId": applied.data["tokenRequestId"]}, customer_id)
            if answer.data["status"] != "PENDING":
                assert answer.data["status"] == "APPROVED"
                return str(answer.data["tokenReferenceId"])
        raise AssertionError("never approved")

    async def active_token(self) -> str:
        reference = await self.approved_token()
        assert (await self.call("provision", {"tokenReferenceId": reference})).code == "SUCCESS"
        assert (
            await self.call("notifyProvisionResult", {"tokenReferenceId": reference, "result": "SUCCESS"})
        ).code == "SUCCESS"
        return reference


@pytest.fixture
def sdk(nfc_http: httpx.AsyncClient, mpp_signer: Signer, alipayplus_verifier: Verifier) -> Sdk:
    return Sdk(nfc_http, mpp_signer, alipayplus_verifier)


def _apply_data(fingerprint: str = FINGERPRINT) -> dict[str, str]:
    return {"deviceFingerprint": fingerprint, "publicKeyId": "PK1"}


def _luhn_ok(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


# --- the happy path ----------------------------------------------------------------------


async def test_activation_happy_path_from_application_to_credentials(
    sdk: Sdk, mastercard: SandboxMastercard, activations: Activations
) -> None:
    applied = await sdk.call("applyNfcToken", _apply_data())
    assert applied.code == "SUCCESS"
    assert applied.data["status"] == "PENDING"
    request_id = applied.data["tokenRequestId"]

    polls = [await sdk.call("queryToken", {"tokenRequestId": request_id}) for _ in range(3)]
    assert [poll.data["status"] for poll in polls] == ["PENDING", "PENDING", "APPROVED"]
    reference = polls[-1].data["tokenReferenceId"]
    assert re.fullmatch(r"DAPLMC[0-9A-F]{26}", reference)

    provisioned = await sdk.call("provision", {"tokenReferenceId": reference})
    profile = provisioned.data["cardProfile"]
    assert provisioned.data["tokenReferenceId"] == reference and provisioned.data["credentials"] == []
    assert re.fullmatch(r"5413\d{12}", profile["tokenPan"]) and _luhn_ok(profile["tokenPan"])
    assert (profile["panSequenceNumber"], profile["expiryDate"], profile["aid"]) == ("00", "2807", "A0000000041010")
    assert profile["issuerMasterKeyId"]
    token = mastercard.token(reference)
    assert token is not None and (token.state, token.token_pan) == (TokenState.PROVISIONED, profile["tokenPan"])
    assert activations.calls == []

    notified = await sdk.call("notifyProvisionResult", {"tokenReferenceId": reference, "result": "SUCCESS"})
    assert notified.data == {"acknowledged": True}
    assert token.state is TokenState.ACTIVE
    assert activations.calls == [(reference, CUSTOMER, FINGERPRINT)]

    ntu = [await sdk.call("queryNTUResult", {"tokenReferenceId": reference}) for _ in range(2)]
    assert [answer.data["status"] for answer in ntu] == ["PENDING", "UPDATED"]

    replenished = await sdk.call("replenish", {"tokenReferenceId": reference, "count": 10})
    credentials = replenished.data["credentials"]
    assert [credential["atc"] for credential in credentials] == list(range(1, 11))
    keys = {credential["singleUseKey"] for credential in credentials}
    assert len(keys) == 10 and all(re.fullmatch(r"[0-9a-f]{32}", key) for key in keys)
    assert {credential["expiresAt"] for credential in credentials} == {(NOW + timedelta(days=7)).isoformat()}


async def test_a_repeated_notify_activates_once_and_replenishment_continues_the_atc(
    sdk: Sdk, activations: Activations
) -> None:
    reference = await sdk.active_token()
    again = await sdk.call("notifyProvisionResult", {"tokenReferenceId": reference, "result": "SUCCESS"})
    assert again.data == {"acknowledged": True}
    assert len(activations.calls) == 1

    first = await sdk.call("replenish", {"tokenReferenceId": reference, "count": 3})
    second = await sdk.call("replenish", {"tokenReferenceId": reference, "count": 2})
    assert [c["atc"] for c in first.data["credentials"] + second.data["credentials"]] == [1, 2, 3, 4, 5]


async def test_a_request_resent_with_its_request_id_is_answered_the_same_and_applied_once(
    sdk: Sdk, ant: SandboxAntNfc
) -> None:
    """The MPP resends an SDK request after a lost answer: same requestId, same answer, one effect."""
    applied = [await sdk.call("applyNfcToken", _apply_data(), request_id="apply-1") for _ in range(2)]
    assert applied[0].data == applied[1].data
    assert ant.application(applied[0].data["tokenRequestId"]) is not None
    assert sum(call.api == "applyNfcToken" for call in ant.calls) == 2

    reference = await sdk.active_token()
    resent = [await sdk.call("replenish", {"tokenReferenceId": reference, "count": 3}, request_id="r-1") for _ in "ab"]
    fresh = await sdk.call("replenish", {"tokenReferenceId": reference, "count": 2})
    assert resent[0].data == resent[1].data
    assert [c["atc"] for c in resent[0].data["credentials"] + fresh.data["credentials"]] == [1, 2, 3, 4, 5]


async def test_a_retried_provision_returns_the_same_card_profile(sdk: Sdk) -> None:
    reference = await sdk.approved_token()
    first = await sdk.call("provision", {"tokenReferenceId": reference})
    second = await sdk.call("provision", {"tokenReferenceId": reference})
    assert first.data == second.data


async def test_a_failed_provision_result_deactivates_without_activation_or_ntu(
    sdk: Sdk, mastercard: SandboxMastercard, activations: Activations
) -> None:
    reference = await sdk.approved_token()
    await sdk.call("provision", {"tokenReferenceId": reference})
    notified = await sdk.call("notifyProvisionResult", {"tokenReferenceId": reference, "result": "FAILURE"})
    assert notified.data == {"acknowledged": True}
    token = mastercard.token(reference)
    assert token is not None and token.state is TokenState.INACTIVE
    assert activations.calls == []
    assert (await sdk.call("queryNTUResult", {"tokenReferenceId": reference})).data == {"status": "PENDING"}
    assert (await sdk.call("replenish", {"tokenReferenceId": reference, "count": 1})).code == "TOKEN_NOT_ACTIVE"


async def test_a_failing_hook_does_not_stop_the_acknowledgement(sdk: Sdk, ant: SandboxAntNfc) -> None:
    async def broken(*_: str) -> None:
        raise RuntimeError("MPP unreachable")

    ant.on_token_active = broken
    reference = await sdk.active_token()
    token = ant.token(reference)
    assert token is not None and token.state is TokenState.ACTIVE and token.activated_at == NOW


# --- rejection and scripted answers ------------------------------------------------------


async def _poll_statuses(sdk: Sdk, request_id: str, customer_id: str = CUSTOMER, polls: int = 3) -> list[str]:
    answers = [await sdk.call("queryToken", {"tokenRequestId": request_id}, customer_id) for _ in range(polls)]
    return [answer.data["status"] for answer in answers]


async def test_a_rejected_customer_is_rejected_after_the_pending_polls(sdk: Sdk, ant: SandboxAntNfc) -> None:
    ant.reject_customer(CUSTOMER, "Card not eligible")
    applied = await sdk.call("applyNfcToken", _apply_data())
    assert applied.data["status"] == "PENDING"
    assert await _poll_statuses(sdk, applied.data["tokenRequestId"]) == ["PENDING", "PENDING", "REJECTED"]
    final = await sdk.call("queryToken", {"tokenRequestId": applied.data["tokenRequestId"]})
    assert final.data == {"status": "REJECTED", "reason": "Card not eligible"}
    assert ant.tokens() == []
    assert await sdk.approved_token(OTHER_CUSTOMER)  # others are unaffected


async def test_reject_next_application_rejects_only_that_one(sdk: Sdk, ant: SandboxAntNfc) -> None:
    ant.reject_next_application()
    rejected = await sdk.call("applyNfcToken", _apply_data())
    assert (await _poll_statuses(sdk, rejected.data["tokenRequestId"]))[-1] == "REJECTED"
    assert await sdk.approved_token()


async def test_a_scripted_query_token_rejection_answers_rejected_at_once(sdk: Sdk, ant: SandboxAntNfc) -> None:
    applied = await sdk.call("applyNfcToken", _apply_data())
    ant.script("queryToken", reject=True)
    assert await _poll_statuses(sdk, applied.data["tokenRequestId"], polls=2) == ["REJECTED", "REJECTED"]


async def test_a_scripted_failure_waits_then_answers_system_error_and_changes_nothing(
    sdk: Sdk, ant: SandboxAntNfc, sleeps: Sleeps
) -> None:
    applied = await sdk.call("applyNfcToken", _apply_data())
    ant.script("queryToken", 2, fail=True, delay=1.5)
    request_id = applied.data["tokenRequestId"]
    failed = [await sdk.call("queryToken", {"tokenRequestId": request_id}) for _ in range(2)]
    assert [answer.code for answer in failed] == ["SYSTEM_ERROR", "SYSTEM_ERROR"]
    assert failed[0].data["reason"]
    assert sleeps.seconds == [1.5, 1.5]
    assert await _poll_statuses(sdk, request_id) == ["PENDING", "PENDING", "APPROVED"]  # failed polls did not count


async def test_a_scripted_delay_alone_answers_normally(sdk: Sdk, ant: SandboxAntNfc, sleeps: Sleeps) -> None:
    ant.script("applyNfcToken", delay=3.0)
    assert (await sdk.call("applyNfcToken", _apply_data())).data["status"] == "PENDING"
    assert sleeps.seconds == [3.0]


async def test_a_scripted_rejection_of_other_apis_answers_rejected(sdk: Sdk, ant: SandboxAntNfc) -> None:
    reference = await sdk.approved_token()
    ant.script("provision", reject=True)
    assert (await sdk.call("provision", {"tokenReferenceId": reference})).code == "REJECTED"
    assert (await sdk.call("provision", {"tokenReferenceId": reference})).code == "SUCCESS"


async def test_unknown_api_bad_data_and_someone_elses_token_are_refused(sdk: Sdk) -> None:
    assert (await sdk.call("deleteEverything", {})).code == "UNKNOWN_API"
    bad = await sdk.call("applyNfcToken", _apply_data(fingerprint="not-a-sha256"))
    assert bad.code == "PARAM_ILLEGAL" and "deviceFingerprint" in bad.data["reason"]
    assert (await sdk.call("replenish", "not json")).code == "PARAM_ILLEGAL"

    reference = await sdk.approved_token()
    stolen = await sdk.call("provision", {"tokenReferenceId": reference}, OTHER_CUSTOMER)
    assert stolen.code == "TOKEN_NOT_FOUND"


async def test_replenish_before_activation_is_refused(sdk: Sdk) -> None:
    reference = await sdk.approved_token()
    await sdk.call("provision", {"tokenReferenceId": reference})
    assert (await sdk.call("replenish", {"tokenReferenceId": reference, "count": 10})).code == "TOKEN_NOT_ACTIVE"


# --- Alipay+'s envelope: signatures and the header ---------------------------------------


def _body(header: str = '{"api": "queryToken"}', customer_id: str = CUSTOMER) -> bytes:
    return json.dumps({"customerId": customer_id, "sdkRequestHeader": header, "sdkRequestData": "{}"}).encode()


def _error(response: httpx.Response) -> Result:
    return ErrorResponse.from_wire(response.content).result


async def test_an_unsigned_request_is_refused_signed_and_not_forwarded(
    sdk: Sdk, ant: SandboxAntNfc, mpp_signer: Signer
) -> None:
    headers = mpp_signer.headers(PROXY, _body())
    del headers["Signature"]
    result = _error(await sdk.post(_body(), headers))
    assert (result.result_status, result.result_code) == (ResultStatus.FAIL, ResultCode.INVALID_SIGNATURE)
    assert ant.calls == []


async def test_a_request_signed_with_another_key_or_tampered_is_refused(
    sdk: Sdk, ant: SandboxAntNfc, keys: Keys, mpp_signer: Signer
) -> None:
    impostor = Signer.from_pem(CLIENT_ID, keys.alipayplus.private_pem)
    assert _error(await sdk.post(_body(), impostor.headers(PROXY, _body()))).result_code == ResultCode.INVALID_SIGNATURE
    tampered = _body(customer_id=OTHER_CUSTOMER)
    result = _error(await sdk.post(tampered, mpp_signer.headers(PROXY, _body())))
    assert result.result_code == ResultCode.INVALID_SIGNATURE
    assert ant.calls == []


@pytest.mark.parametrize("header", ["not json", '{"requestId": "r1"}', '["queryToken"]', '{"api": ""}'])
async def test_a_header_that_is_not_json_with_an_api_is_param_illegal(
    sdk: Sdk, ant: SandboxAntNfc, header: str
) -> None:
    answer = SdkProxyResponse.from_wire((await sdk.post(_body(header))).content)
    assert (answer.result.result_status, answer.result.result_code) == (ResultStatus.FAIL, ResultCode.PARAM_ILLEGAL)
    assert "sdkRequestHeader" in (answer.result.result_message or "")
    assert answer.sdk_response_header is None
    assert ant.calls == []


async def test_a_body_without_customer_id_is_param_illegal_naming_it(sdk: Sdk) -> None:
    body = json.dumps({"sdkRequestHeader": '{"api": "queryToken"}'}).encode()
    result = _error(await sdk.post(body))
    assert result.result_code == ResultCode.PARAM_ILLEGAL and "customerId" in (result.result_message or "")


async def test_without_nfc_peers_the_app_serves_no_sdk_proxy(peer: SandboxAlipayPlus, mpp_signer: Signer) -> None:
    transport = httpx.ASGITransport(app=create_app(peer))
    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=transport) as client:
        assert (
            await client.post(PROXY, content=_body(), headers=mpp_signer.headers(PROXY, _body()))
        ).status_code == 404
        assert (await client.post(GET_PUBLIC_KEY_PATH, json={})).status_code == 404


async def test_the_local_controls_script_the_ant_server(nfc_http: httpx.AsyncClient, sdk: Sdk) -> None:
    scripted = await nfc_http.post("/sandbox/nfc/script", json={"api": "applyNfcToken", "fail": True})
    assert scripted.status_code == 200
    assert (await sdk.call("applyNfcToken", _apply_data())).code == "SYSTEM_ERROR"
    reference = await sdk.active_token()
    tokens = (await nfc_http.get("/sandbox/nfc/tokens")).json()
    assert tokens == [{"tokenReferenceId": reference, "customerId": CUSTOMER, "state": "ACTIVE"}]


# --- Mastercard --------------------------------------------------------------------------


async def test_get_public_key_returns_a_loadable_rsa_pem(
    nfc_http: httpx.AsyncClient, mastercard: SandboxMastercard
) -> None:
    response = await nfc_http.post(GET_PUBLIC_KEY_PATH, json={})
    assert response.status_code == 200
    body = response.json()
    key = serialization.load_pem_public_key(body["certificate"].encode())
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert body["publicKeyId"] == mastercard.public_key_id
    assert (await nfc_http.post(GET_PUBLIC_KEY_PATH, json={})).json() == body  # one key per instance


async def test_mastercard_scripted_outage_answers_503_for_the_next_calls(
    nfc_http: httpx.AsyncClient, mastercard: SandboxMastercard, sleeps: Sleeps
) -> None:
    mastercard.script(2, fail=True, delay=0.5)
    statuses = [(await nfc_http.post(GET_PUBLIC_KEY_PATH, json={})).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert sleeps.seconds == [0.5, 0.5]


async def test_mastercard_controls_script_an_outage(nfc_http: httpx.AsyncClient) -> None:
    assert (await nfc_http.post("/sandbox/mastercard/script", json={"calls": 1, "fail": True})).status_code == 200
    assert (await nfc_http.post(GET_PUBLIC_KEY_PATH, json={})).status_code == 503
    assert (await nfc_http.post(GET_PUBLIC_KEY_PATH, json={})).status_code == 200
