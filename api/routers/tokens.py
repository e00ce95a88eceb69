"""Alipay+ → MPP NFC token notifications: tokenActivationNotification (seed 002)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from alipayplus import Result, ResultCode
from alipayplus.nfc import TokenActivationNotificationRequest, TokenActivationNotificationResponse
from wallet.token_activations import record_token_activation
from workflows.token import TokenActivated

from ..inbound import inbound
from ..services import Services
from ..token_workflow import start_token

router = APIRouter(tags=["Alipay+ inbound"])


@inbound(router, TokenActivationNotificationRequest.PATH, TokenActivationNotificationRequest)
async def token_activation_notification(
    request: TokenActivationNotificationRequest, services: Services
) -> TokenActivationNotificationResponse:
    """tokenActivationNotification: record the activation once, then tell the token's workflow.

    A repeat is answered S again and signals again (the workflow ignores repeats), so a U
    after the record (Temporal unreachable) is safely retried by Alipay+."""
    recorded = await asyncio.to_thread(record_token_activation, services.records, request)
    if recorded.result_code is ResultCode.SUCCESS:
        await _tell_token_workflow(request, recorded.customer_id, services)
    return TokenActivationNotificationResponse(result=Result.of(recorded.result_code, recorded.message))


async def _tell_token_workflow(
    request: TokenActivationNotificationRequest, owner: str | None, services: Services
) -> None:
    notice = TokenActivated.model_validate(request, from_attributes=True)  # the fields the workflow keeps
    notice.customer_id = owner  # as our activation recorded it when the notice names nobody
    await start_token(services, request.token_reference_id, notice=notice)
