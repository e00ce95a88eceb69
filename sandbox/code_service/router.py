"""The code identification service over HTTP: plain JSON of the ``alipayplus.sdk`` messages."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from alipayplus.sdk import (
    CodeIdentificationInitRequest,
    CodeIdentificationInitResult,
    IdentifyCodeRequest,
    IdentifyCodeResult,
)
from sandbox._http import answer_sdk_call

from .service import CodeService


def code_service_router(service: CodeService) -> APIRouter:
    """``CodeIdentificationInitRequest.PATH`` and ``IdentifyCodeRequest.PATH``: always HTTP 200
    with ``result``; a body that does not parse gets F PARAM_ILLEGAL naming the field."""
    router = APIRouter()

    @router.post(CodeIdentificationInitRequest.PATH)
    async def init(request: Request) -> Response:
        return await answer_sdk_call(
            request,
            CodeIdentificationInitRequest,
            service.init,
            lambda result: CodeIdentificationInitResult(result=result),
        )

    @router.post(IdentifyCodeRequest.PATH)
    async def identify(request: Request) -> Response:
        return await answer_sdk_call(
            request, IdentifyCodeRequest, service.identify, lambda result: IdentifyCodeResult(result=result)
        )

    return router
