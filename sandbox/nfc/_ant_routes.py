"""Alipay+'s signed sdkProxy in front of the sandbox Ant server, and its local-only controls under ``/sandbox/nfc``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, ValidationError

from alipayplus import Result, ResultCode
from alipayplus.nfc import SdkProxyRequest, SdkProxyResponse
from alipayplus.nfc_sdk import SdkRequestHeader, SdkResponseHeader
from sandbox._http import answer_signed_call, first_error, local_only
from sandbox.alipayplus.peer import SandboxAlipayPlus

from ._ant_records import DEFAULT_REJECT_REASON, AntAnswer, AntApi

if TYPE_CHECKING:  # only annotated here; importing it at run time would be a cycle (ant re-exports ant_nfc_router)
    from .ant import SandboxAntNfc


def _parse_header(header: str) -> SdkRequestHeader:
    """The SDK's header: a JSON object naming the ``api``; raises ``ValueError`` otherwise."""
    try:
        return SdkRequestHeader.model_validate_json(header)
    except ValidationError as exc:
        raise ValueError(f"sdkRequestHeader is not a JSON object with an api ({first_error(exc)})") from None


def _response(header: SdkRequestHeader, answer: AntAnswer) -> SdkProxyResponse:
    response_header = SdkResponseHeader(api=header.api, request_id=header.request_id, code=answer.code)
    return SdkProxyResponse(
        result=Result.success(),
        sdk_response_header=json.dumps(response_header.model_dump(exclude_unset=True)),  # requestId even if null
        sdk_response_data=json.dumps(answer.data),
    )


class AntScript(BaseModel):
    api: AntApi
    calls: int = Field(1, ge=1, le=1000)
    fail: bool = False
    reject: bool = False
    delay: float = Field(0.0, ge=0, le=120)


class RejectCustomer(BaseModel):
    customerId: str  # noqa: N815
    reason: str = DEFAULT_REJECT_REASON


def ant_nfc_router(peer: SandboxAlipayPlus, ant: SandboxAntNfc) -> APIRouter:
    """Alipay+'s signed sdkProxy in front of ``ant``, plus local-only controls under ``/sandbox/nfc``."""
    router = APIRouter()

    async def forward(message: SdkProxyRequest, _body: bytes) -> SdkProxyResponse:
        try:
            header = _parse_header(message.sdk_request_header)
        except ValueError as exc:
            return SdkProxyResponse(result=Result.of(ResultCode.PARAM_ILLEGAL, str(exc)))
        answer = await ant.call(header.api, message.customer_id, message.sdk_request_data, header.request_id)
        return _response(header, answer)

    @router.post(SdkProxyRequest.PATH)
    async def sdk_proxy(request: Request) -> Response:
        return await answer_signed_call(request, peer.signer, peer.verifier, SdkProxyRequest, forward)

    router.include_router(_control_router(ant))
    return router


def _control_router(ant: SandboxAntNfc) -> APIRouter:
    router = APIRouter(prefix="/sandbox/nfc", dependencies=[Depends(local_only)])

    @router.post("/script")
    async def script(body: AntScript) -> dict[str, Any]:
        ant.script(body.api, body.calls, fail=body.fail, reject=body.reject, delay=body.delay)
        return {"api": body.api, "queued": body.calls}

    @router.post("/reject-customer")
    async def reject_customer(body: RejectCustomer) -> dict[str, str]:
        ant.reject_customer(body.customerId, body.reason)
        return {"rejected": body.customerId}

    @router.get("/tokens")
    async def tokens() -> list[dict[str, Any]]:
        return [
            {"tokenReferenceId": t.token_reference_id, "customerId": t.customer_id, "state": t.state}
            for t in ant.tokens()
        ]

    @router.post("/reset")
    async def reset() -> dict[str, bool]:
        ant.reset()
        return {"reset": True}

    return router
