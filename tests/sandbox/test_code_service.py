"""The server SDK's code identification service in the sandbox: init, the code rules, scripted answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from alipayplus import ResultCode, ResultStatus
from alipayplus.sdk import (
    CodeIdentificationInitRequest,
    CodeIdentificationInitResult,
    IdentifyCodeRequest,
    IdentifyCodeResult,
    PostCodeMatchAction,
)
from sandbox.alipayplus.app import create_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.code_service import ENTRY_CODE_PREFIX, ORDER_CODE_PREFIX, CodeService

from .conftest import ALIPAYPLUS_URL

OPEN_ID = "228770368287434384680"


@pytest.fixture
def service() -> CodeService:
    return CodeService()


@pytest.fixture
async def sdk(peer: SandboxAlipayPlus, service: CodeService) -> AsyncIterator[httpx.AsyncClient]:
    """Our server's HTTP client to the server SDK, in process."""
    transport = httpx.ASGITransport(app=create_app(peer, code_service=service))
    async with httpx.AsyncClient(base_url=ALIPAYPLUS_URL, transport=transport) as client:
        yield client


async def identify(sdk: httpx.AsyncClient, code_value: str) -> IdentifyCodeResult:
    request = IdentifyCodeRequest(code_value=code_value, open_id=OPEN_ID)
    response = await sdk.post(IdentifyCodeRequest.PATH, content=request.to_wire())
    assert response.status_code == 200
    return IdentifyCodeResult.from_wire(response.content)


async def init(sdk: httpx.AsyncClient) -> CodeIdentificationInitResult:
    request = CodeIdentificationInitRequest(client_id="SANDBOX_TEST_CLIENT")
    response = await sdk.post(CodeIdentificationInitRequest.PATH, content=request.to_wire())
    assert response.status_code == 200
    return CodeIdentificationInitResult.from_wire(response.content)


async def test_init_succeeds_with_a_rules_version_and_is_counted(sdk: httpx.AsyncClient, service: CodeService) -> None:
    first, second = await init(sdk), await init(sdk)

    assert first.result.is_success and first.rules_version
    assert second.result.is_success
    assert service.init_calls == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(ResultStatus.FAIL, ResultCode.PROCESS_FAIL), (ResultStatus.UNKNOWN, ResultCode.UNKNOWN_EXCEPTION)],
)
async def test_init_answers_as_scripted_so_the_mpp_can_block_its_start_up(
    sdk: httpx.AsyncClient, service: CodeService, status: ResultStatus, code: ResultCode
) -> None:
    service.init_status = status

    answer = await init(sdk)

    assert (answer.result.result_status, answer.result.result_code) == (status, code)
    assert answer.rules_version is None


@pytest.mark.parametrize(
    ("code_value", "action"),
    [
        (f"{ORDER_CODE_PREFIX}Zm9vYmFyYmF6", PostCodeMatchAction.DECODE),
        (f"{ENTRY_CODE_PREFIX}SG-KOPI-01", PostCodeMatchAction.OPEN_URL),
    ],
)
async def test_alipayplus_codes_are_identified_with_what_to_do_next(
    sdk: httpx.AsyncClient, code_value: str, action: PostCodeMatchAction
) -> None:
    answer = await identify(sdk, code_value)

    assert answer.result.is_success
    assert answer.is_ac_code is True and answer.post_code_match_action_type is action
    assert answer.ac_decode_config  # handed on to the client SDK as is


@pytest.mark.parametrize(
    "code_value",
    ["00020101021126360014ID.CO.QRIS.WWW", "https://qr.alipayplus.sandbox/x/abc", "http://qr.alipayplus.sandbox/o/a"],
)
async def test_other_codes_are_not_alipayplus_codes(sdk: httpx.AsyncClient, code_value: str) -> None:
    response = await sdk.post(
        IdentifyCodeRequest.PATH, content=IdentifyCodeRequest(code_value=code_value, open_id=OPEN_ID).to_wire()
    )

    body = json.loads(response.content)
    assert body["result"]["resultStatus"] == "S"
    assert body["isAcCode"] == "false"  # a string on the wire, like every scalar
    assert "postCodeMatchActionType" not in body


async def test_scripted_unknown_answers_come_first_then_the_rules(sdk: httpx.AsyncClient, service: CodeService) -> None:
    service.script_identify(["U", "U"])
    code_value = f"{ORDER_CODE_PREFIX}abc"

    answers = [await identify(sdk, code_value) for _ in range(3)]

    assert [a.result.result_status for a in answers] == [ResultStatus.UNKNOWN] * 2 + [ResultStatus.SUCCESS]
    assert answers[0].result.result_code == ResultCode.UNKNOWN_EXCEPTION and answers[0].is_ac_code is None
    assert answers[2].is_ac_code is True
    assert service.identify_calls == 3
    assert [request.code_value for request in service.identified] == [code_value] * 3


async def test_a_scripted_failure_is_f(sdk: httpx.AsyncClient, service: CodeService) -> None:
    service.script_identify([ResultStatus.FAIL])

    answer = await identify(sdk, f"{ORDER_CODE_PREFIX}abc")

    assert (answer.result.result_status, answer.result.result_code) == (ResultStatus.FAIL, ResultCode.PROCESS_FAIL)


def test_only_non_success_answers_can_be_queued(service: CodeService) -> None:
    with pytest.raises(ValueError, match="only U or F"):
        service.script_identify(["U", "S"])
    with pytest.raises(ValueError):
        service.script_identify(["MAYBE"])


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (IdentifyCodeRequest.PATH, {"openId": OPEN_ID}, "codeValue"),
        (IdentifyCodeRequest.PATH, {"codeValue": "x", "openId": "ab"}, "openId"),
        (IdentifyCodeRequest.PATH, {"codeValue": 12, "openId": OPEN_ID}, "codeValue"),
        (CodeIdentificationInitRequest.PATH, {}, "clientId"),
    ],
)
async def test_a_malformed_request_gets_param_illegal_naming_the_field(
    sdk: httpx.AsyncClient, service: CodeService, path: str, body: dict[str, object], field: str
) -> None:
    response = await sdk.post(path, json=body)

    assert response.status_code == 200
    result = json.loads(response.content)["result"]
    assert (result["resultStatus"], result["resultCode"]) == ("F", "PARAM_ILLEGAL")
    assert result["resultMessage"].startswith(field)
    assert service.identify_calls == 0 == service.init_calls


async def test_a_body_that_is_not_json_gets_param_illegal(sdk: httpx.AsyncClient) -> None:
    response = await sdk.post(IdentifyCodeRequest.PATH, content=b"codeValue=abc")

    result = IdentifyCodeResult.from_wire(response.content).result
    assert (response.status_code, result.result_code) == (200, ResultCode.PARAM_ILLEGAL)


async def test_the_sandbox_serves_no_code_service_unless_given_one(http: httpx.AsyncClient) -> None:
    response = await http.post(IdentifyCodeRequest.PATH, json={"codeValue": "x", "openId": OPEN_ID})
    assert response.status_code == 404
