"""Alipay+ → MPP authorization API: applyToken (seed 003, step 1.2)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from alipayplus import ApplyTokenRequest, ApplyTokenResponse

from ..inbound import inbound
from ..services import Services

router = APIRouter(tags=["Alipay+ inbound"])


@inbound(router, ApplyTokenRequest.PATH, ApplyTokenRequest)
async def apply_token(request: ApplyTokenRequest, services: Services) -> ApplyTokenResponse:
    """applyToken: an authCode (single use) or a refresh token for a new token pair."""
    return await asyncio.to_thread(services.authorizations.apply_token, request)
