"""What our own wallet app calls: login, the authCode for Alipay+'s client SDK, code identification.

Not Alipay+ APIs: plain JSON, authenticated by the app session (``Authorization: Bearer``
or the ``mpp_session`` cookie, which our pages opened in the app's web view also use).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from alipayplus import CamelModel
from wallet.credentials import Attempt

from ..code_identification import CodeVerdict
from ..dependencies import SESSION_COOKIE, SIGNED_IN, Customer, refuse_attempt, session_token
from ..services import ClientAddress, ServicesDep

router = APIRouter(prefix="/app/v1", tags=["wallet app"])


class Login(CamelModel):
    login_id: str = Field(min_length=1, max_length=64)
    pin: str = Field(min_length=4, max_length=12)


class LoggedIn(CamelModel):
    session_token: str
    customer_id: str
    expires_at: datetime


class AuthCodeRequest(CamelModel):
    scopes: str = Field(default="BASE_USER_INFO", min_length=1, max_length=128)


class IssuedAuthCode(CamelModel):
    auth_code: str
    expires_at: datetime


class ScannedCode(CamelModel):
    code_value: str = Field(min_length=1, max_length=8192)


GUESSING_STATUSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Wrong login or PIN"},
    429: {"description": "Too many wrong PINs: wait (Retry-After) or the account is locked"},
}


@router.post("/login", response_model=LoggedIn, responses=GUESSING_STATUSES)
async def login(body: Login, response: Response, address: ClientAddress, services: ServicesDep) -> LoggedIn:
    issued = await asyncio.to_thread(services.sessions.login, body.login_id, body.pin, address)
    if isinstance(issued, Attempt):
        raise refuse_attempt(issued)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=int(services.settings.app_session_ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=services.settings.public_base_url.startswith("https://"),
    )
    return LoggedIn(session_token=issued.token, customer_id=issued.customer_id, expires_at=issued.expires_at)


@router.post("/logout", status_code=204)
async def logout(request: Request, response: Response, services: ServicesDep) -> None:
    token = session_token(request)
    if token:
        await asyncio.to_thread(services.sessions.logout, token)
    response.delete_cookie(SESSION_COOKIE)


@router.post("/authCode", response_model=IssuedAuthCode, responses=SIGNED_IN)
async def auth_code(body: AuthCodeRequest, customer_id: Customer, services: ServicesDep) -> IssuedAuthCode:
    """Alipay+'s client SDK asked for an authCode (getAuthCode); the app answers it by authCallback."""
    issued = await asyncio.to_thread(services.authorizations.issue_auth_code, customer_id, body.scopes)
    return IssuedAuthCode(auth_code=issued.auth_code, expires_at=issued.expires_at)


@router.post("/codes/identify", response_model=CodeVerdict, responses=SIGNED_IN)
async def identify_code(body: ScannedCode, customer_id: Customer, services: ServicesDep) -> CodeVerdict:
    """Step 3: whose code the user scanned, so the app knows what to do with it."""
    return await services.codes.identify(body.code_value, customer_id)
