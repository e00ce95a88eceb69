"""The sandbox Alipay+ as an HTTP service: the endpoints the MPP calls, plus local controls.

Run one process (``uvicorn --factory``) or mount in-process with ``httpx.ASGITransport``.
The Alipay+ endpoints behave like the real ones at the protocol level: the MPP's signature
is checked over the raw body and every answer (errors included) is signed with Alipay+'s key.

For Auto Debit it records authNotify AUTHCODE_CREATED and TOKEN_CANCELED as it does TOKEN_CREATED,
and answers consultUnbinding (``POST /sandbox/consult-unbinding`` sets whether a merchant allows
the user to unbind from the wallet's side; by default it does).

Optionally it also serves merchant-presented mode (``mpm.mpm_router``: the client SDK's
endpoints and the merchant's pages) and the server SDK's code identification service
(``sandbox.code_service``); those speak plain JSON, as Alipay+'s SDKs do with Alipay+.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from alipayplus import (
    AuthNotifyRequest,
    AuthNotifyResponse,
    AuthorizationNotifyType,
    CamelModel,
    ConsultUnbindingRequest,
    ConsultUnbindingResponse,
    Message,
    NotifyPaymentRequest,
    NotifyPaymentResponse,
    Result,
    ResultCode,
)
from sandbox._http import answer_signed_call, local_only
from sandbox.code_service import CodeService, code_service_router
from sandbox.nfc import SandboxAntNfc, SandboxMastercard, ant_nfc_router, mastercard_router

from .card_events import CardEventConverter, card_events_router
from .mpm import SandboxMpm, mpm_router
from .peer import Api, Behaviour, SandboxAlipayPlus, Sms

RequestT = TypeVar("RequestT", bound=Message)

_ANSWERS: dict[Behaviour, ResultCode] = {
    Behaviour.S: ResultCode.SUCCESS,
    Behaviour.U: ResultCode.UNKNOWN_EXCEPTION,
    Behaviour.F: ResultCode.PROCESS_FAIL,
    Behaviour.SILENT: ResultCode.UNKNOWN_EXCEPTION,  # if the MPP is still listening
}


class BehaviourScript(BaseModel):
    api: Api
    answers: list[Behaviour]
    subject: str | None = None  # a paymentRequestId / referenceAgreementId / authClientId, or any


class UnbindingAnswer(CamelModel):
    """What consultUnbinding answers from now on: for one merchant (authClientId), or every other."""

    allow_unbinding: bool = True
    auth_client_id: str | None = None


def create_app(
    peer: SandboxAlipayPlus,
    *,
    mpm: SandboxMpm | None = None,
    code_service: CodeService | None = None,
    ant_nfc: SandboxAntNfc | None = None,
    mastercard: SandboxMastercard | None = None,
    card_events: CardEventConverter | None = None,
) -> FastAPI:
    """The sandbox Alipay+; with ``mpm`` also merchant-presented mode, with ``code_service`` also
    the server SDK's code identification, with ``ant_nfc`` also NFC's sdkProxy to the Ant server,
    with ``mastercard`` also Mastercard's MDES endpoints and authorizations (one process stands for
    all three peers), and with ``card_events`` the acquirer's card events Alipay+ converts."""
    app = FastAPI(title="Sandbox Alipay+", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.peer = peer
    if mpm is not None:
        app.state.mpm = mpm
        app.include_router(mpm_router(mpm))
    if code_service is not None:
        app.state.code_service = code_service
        app.include_router(code_service_router(code_service))
    if ant_nfc is not None:
        app.state.ant_nfc = ant_nfc
        app.include_router(ant_nfc_router(peer, ant_nfc))
    if mastercard is not None:
        app.state.mastercard = mastercard
        app.include_router(mastercard_router(mastercard))
    if card_events is not None:
        app.state.card_events = card_events
        app.include_router(card_events_router(card_events))

    async def receive(
        request: Request,
        message_type: type[NotifyPaymentRequest] | type[AuthNotifyRequest],
        api: Api,
        answer: Callable[[Any, Result], Message],
    ) -> Response:
        async def handle(message: NotifyPaymentRequest | AuthNotifyRequest, body: bytes) -> Message:
            record(message, json.loads(body))
            subject = (
                message.payment_request_id
                if isinstance(message, NotifyPaymentRequest)
                else message.reference_agreement_id
            )
            behaviour = peer.next_behaviour(api, subject)
            if behaviour is Behaviour.SILENT:
                await asyncio.sleep(peer.silence_seconds)
            return answer(message, Result.of(_ANSWERS[behaviour]))

        return await answer_signed_call(request, peer.signer, peer.verifier, message_type, handle)

    def record(message: NotifyPaymentRequest | AuthNotifyRequest, body: dict[str, Any]) -> None:
        if isinstance(message, NotifyPaymentRequest):
            peer.record_notification(message, body)
        else:
            peer.record_auth_notification(message, body)

    @app.post(NotifyPaymentRequest.PATH)
    async def notify_payment(request: Request) -> Response:
        return await receive(
            request, NotifyPaymentRequest, "notifyPayment", lambda _, result: NotifyPaymentResponse(result=result)
        )

    @app.post(AuthNotifyRequest.PATH)
    async def auth_notify(request: Request) -> Response:
        def answer(message: AuthNotifyRequest, result: Result) -> AuthNotifyResponse:
            return AuthNotifyResponse(result=result, acquirer_id=message.acquirer_id, psp_id=message.psp_id)

        return await receive(request, AuthNotifyRequest, "authNotify", answer)

    @app.post(ConsultUnbindingRequest.PATH)
    async def consult_unbinding(request: Request) -> Response:
        """May the user unbind this merchant from the wallet's side? S with allowUnbinding as set
        for the merchant (scripted U/F/SILENT first, like the notices)."""

        async def handle(message: ConsultUnbindingRequest, body: bytes) -> Message:
            peer.record_consultation(message, json.loads(body))
            behaviour = peer.next_behaviour("consultUnbinding", message.auth_client_id)
            if behaviour is Behaviour.SILENT:
                await asyncio.sleep(peer.silence_seconds)
            if behaviour is not Behaviour.S:
                return ConsultUnbindingResponse(result=Result.of(_ANSWERS[behaviour]))
            return ConsultUnbindingResponse(
                result=Result.success(), allow_unbinding=peer.allows_unbinding(message.auth_client_id)
            )

        return await answer_signed_call(request, peer.signer, peer.verifier, ConsultUnbindingRequest, handle)

    app.include_router(_control_router(peer))

    @app.get("/sandbox/result", response_class=HTMLResponse)
    async def result_page(status: str = "", paymentRequestId: str = "") -> HTMLResponse:  # noqa: N803
        """Stands for the Alipay+ payment result page the MPP redirects the user to."""
        status_text, request_id = html.escape(status or "unknown"), html.escape(paymentRequestId)
        return HTMLResponse(
            '<!doctype html><html lang="en"><head><meta charset=utf-8>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>Alipay+ payment result</title></head>"
            f"<body><h1>Alipay+ (sandbox)</h1><p>Verification: <strong id=status>{status_text}</strong></p>"
            f"<p>Payment request: <code id=paymentRequestId>{request_id}</code></p></body></html>"
        )

    return app


def _control_router(peer: SandboxAlipayPlus) -> APIRouter:
    router = APIRouter(prefix="/sandbox", dependencies=[Depends(local_only)])

    @router.post("/behaviour")
    async def set_behaviour(script: BehaviourScript) -> dict[str, Any]:
        peer.script(script.api, script.answers, script.subject)
        return {"api": script.api, "queued": [str(answer) for answer in script.answers]}

    @router.get("/notifications")
    async def notifications(paymentRequestId: str | None = None) -> list[dict[str, Any]]:  # noqa: N803
        return [received.as_json() for received in peer.notifications(paymentRequestId)]

    @router.get("/auth-notifications")
    async def auth_notifications(
        referenceAgreementId: str | None = None,  # noqa: N803
        authorizationNotifyType: AuthorizationNotifyType | None = None,  # noqa: N803
    ) -> list[dict[str, Any]]:
        return [
            received.as_json() for received in peer.auth_notifications(referenceAgreementId, authorizationNotifyType)
        ]

    @router.post("/consult-unbinding")
    async def set_unbinding_answer(answer: UnbindingAnswer) -> dict[str, Any]:
        peer.allow_unbinding(answer.allow_unbinding, answer.auth_client_id)
        return {"authClientId": answer.auth_client_id, "allowUnbinding": answer.allow_unbinding}

    @router.get("/consult-unbinding")
    async def consultations(authClientId: str | None = None) -> list[dict[str, Any]]:  # noqa: N803
        return [received.as_json() for received in peer.consultations(authClientId)]

    @router.post("/sms")
    async def send_sms(sms: Sms) -> dict[str, bool]:
        peer.record_sms(sms.to, sms.text, sms.reference)
        return {"accepted": True}

    @router.get("/sms")
    async def list_sms(to: str) -> list[dict[str, Any]]:
        return [sms.model_dump(mode="json") for sms in peer.sms(to)]

    @router.post("/reset")
    async def reset() -> dict[str, bool]:
        peer.reset()
        return {"reset": True}

    return router


__all__ = ["BehaviourScript", "UnbindingAnswer", "create_app"]
