"""Alipay+ → MPP authorization APIs: applyToken (seed 003, step 1.2; Auto Debit), and Auto Debit's
prepare (the consent page's URL) and cancelToken (the merchant unbound) (spec §§7.1-7.3)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from alipayplus import (
    ApplyTokenRequest,
    ApplyTokenResponse,
    CancelTokenRequest,
    CancelTokenResponse,
    PrepareRequest,
    PrepareResponse,
)

from ..inbound import inbound
from ..services import Services

router = APIRouter(tags=["Alipay+ inbound"])


@inbound(router, ApplyTokenRequest.PATH, ApplyTokenRequest)
async def apply_token(request: ApplyTokenRequest, services: Services) -> ApplyTokenResponse:
    """applyToken: an authCode (single use) or a refresh token for a new token pair."""
    return await asyncio.to_thread(services.authorizations.apply_token, request)


@inbound(router, PrepareRequest.PATH, PrepareRequest)
async def prepare(request: PrepareRequest, services: Services) -> PrepareResponse:
    """prepare: the URL of our consent page for this agreement (the same for a repeat)."""
    return await asyncio.to_thread(services.agreements.prepare, request)


@inbound(router, CancelTokenRequest.PATH, CancelTokenRequest)
async def cancel_token(request: CancelTokenRequest, services: Services) -> CancelTokenResponse:
    """cancelToken: the token's agreement is revoked, its every access and refresh token with it.
    Alipay+ tells the merchant itself (spec §7.2): no TOKEN_CANCELED from us here."""
    return await asyncio.to_thread(services.agreements.cancel_token, request)
