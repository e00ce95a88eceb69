"""Alipay+ → MPP NFC token notifications: tokenActivationNotification (seed 002)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from activities.token_activations import record_token_activation
from alipayplus import Result
from alipayplus.nfc import TokenActivationNotificationRequest, TokenActivationNotificationResponse

from ..inbound import inbound
from ..services import Services

router = APIRouter(tags=["Alipay+ inbound"])


@inbound(router, TokenActivationNotificationRequest.PATH, TokenActivationNotificationRequest)
async def token_activation_notification(
    request: TokenActivationNotificationRequest, services: Services
) -> TokenActivationNotificationResponse:
    """tokenActivationNotification: record the activation once; a repeat gets the same S."""
    code, message = await asyncio.to_thread(record_token_activation, services.records, request)
    return TokenActivationNotificationResponse(result=Result.of(code, message))
