"""What the app's routes and our pages share: who is signed in (the app session, as a bearer header
or the web view's cookie), and how a wrong or guessed PIN is answered."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from wallet.credentials import Attempt, Verdict
from wallet.secrets import token_digest

from .services import ServicesDep

SESSION_COOKIE = "mpp_session"


def session_token(request: Request) -> str | None:
    """The app session's token: a bearer header from the app, the cookie from its web view."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.cookies.get(SESSION_COOKIE)


def page_session(request: Request) -> str | None:
    """What a signed-in page's form is bound to: the app session it was served to (its digest);
    ``None`` without one (the page then answers 401 and changes nothing)."""
    token = session_token(request)
    return token_digest(token) if token else None


async def signed_in_customer(request: Request, services: ServicesDep) -> str | None:
    token = session_token(request)
    return await asyncio.to_thread(services.sessions.customer_of, token) if token else None


async def _customer(customer_id: Annotated[str | None, Depends(signed_in_customer)]) -> str:
    if customer_id is None:
        raise HTTPException(401, "Sign in to the wallet first.", headers={"WWW-Authenticate": "Bearer"})
    return customer_id


Customer = Annotated[str, Depends(_customer)]
# What a route that takes ``Customer`` may answer besides its own statuses.
SIGNED_IN: dict[int | str, dict[str, Any]] = {401: {"description": "Not signed in (WWW-Authenticate: Bearer)"}}


def refuse_attempt(attempt: Attempt, wrong: str = "Wrong login or PIN.") -> HTTPException:
    """401 for a wrong PIN or OTP; 429 with ``Retry-After`` once too many have been wrong."""
    if attempt.verdict is Verdict.WRONG:
        return HTTPException(401, wrong)
    headers = {"Retry-After": str(attempt.retry_after_seconds)}
    if attempt.verdict is Verdict.LOCKED:
        detail = "This account is locked after too many wrong PINs. Try again later or contact support."
    else:
        detail = f"Too many wrong PINs. Try again in {attempt.retry_after_seconds} seconds."
    return HTTPException(429, detail, headers=headers)


SignedIn = Annotated[str | None, Depends(signed_in_customer)]  # a page: None answers its own sign-in page
