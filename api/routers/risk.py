"""Alipay+ → MPP Auto Debit risk challenge: sendOtp and verifyOtp (``wallet.risk_challenges``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from alipayplus import SendOtpRequest, SendOtpResponse, VerifyOtpRequest, VerifyOtpResponse

from ..inbound import inbound
from ..services import Services

router = APIRouter(tags=["Alipay+ inbound"])


@inbound(router, SendOtpRequest.PATH, SendOtpRequest)
async def send_otp(request: SendOtpRequest, services: Services) -> SendOtpResponse:
    """sendOtp: text the agreement token's user a one-time code; answers its verifyRequestId."""
    return await asyncio.to_thread(services.risk_challenges.send, request)


@inbound(router, VerifyOtpRequest.PATH, VerifyOtpRequest)
async def verify_otp(request: VerifyOtpRequest, services: Services) -> VerifyOtpResponse:
    """verifyOtp: check the code the user typed for a verifyRequestId (single use)."""
    return await asyncio.to_thread(services.risk_challenges.verify, request)
