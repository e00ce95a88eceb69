"""What our own wallet app calls: login, the authCode for Alipay+'s client SDK, code identification,
and the user's agreements with merchants (list, unbind).

Not Alipay+ APIs: plain JSON, authenticated by the app session (``Authorization: Bearer``
or the ``mpp_session`` cookie, which our pages opened in the app's web view also use).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import Field
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from alipayplus import CamelModel
from wallet import workflow_ids
from wallet.agreements import UnbindOutcome, UnbindRequest
from wallet.credentials import Attempt
from wallet.records import AgreementStatus
from workflows.unbind_agreement import UnbindAgreementWorkflow

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


class AgreementItem(CamelModel):
    agreement_id: str
    merchant_name: str
    scopes: list[str]
    origin: str  # AUTO_DEBIT or EASY_PAY
    status: str  # ACTIVE, or AUTHORIZED (consented; the merchant has not fetched its token yet)
    since: datetime


class Unbinding(CamelModel):
    agreement_id: str
    outcome: str  # UNBOUND, REFUSED (unbind with the merchant), UNANSWERED, or PENDING (still asking)


AGREEMENT_STATUSES: dict[int | str, dict[str, Any]] = {
    **SIGNED_IN,
    202: {"description": "Still asking Alipay+ (consultUnbinding): look at the list again shortly"},
    404: {"description": "No such agreement of this user's"},
}
UNBIND_WAIT = 5.0  # seconds the app waits for the unbinding before it is answered PENDING


@router.get("/agreements", response_model=list[AgreementItem], responses=SIGNED_IN)
async def agreements(customer_id: Customer, services: ServicesDep) -> list[AgreementItem]:
    """The merchants that may charge the user without them (Auto Debit, Easy Pay one-click)."""
    found = await asyncio.to_thread(services.agreements.of_customer, customer_id)
    return [
        AgreementItem(
            agreement_id=agreement.agreement_id,
            merchant_name=agreement.merchant_name,
            scopes=agreement.scopes,
            origin=agreement.origin.value,
            status=agreement.status.value,
            since=agreement.authorized_at or agreement.created_at,
        )
        for agreement in found
    ]


@router.delete("/agreements/{agreement_id}", response_model=Unbinding, responses=AGREEMENT_STATUSES)
async def unbind(
    agreement_id: Annotated[str, Path(min_length=1, max_length=32)],
    customer_id: Customer,
    response: Response,
    services: ServicesDep,
) -> Unbinding:
    """The user unbinds a merchant: consultUnbinding (if configured), revocation, then authNotify
    TOKEN_CANCELED, all in the workflow ``unbind/{agreementId}``, which outlives this call."""
    owned = await asyncio.to_thread(services.agreements.owned, agreement_id, customer_id)
    if owned is None or owned.status not in (AgreementStatus.ACTIVE, AgreementStatus.AUTHORIZED):
        raise HTTPException(404, "No such agreement.")
    handle = await services.temporal.start_workflow(
        UnbindAgreementWorkflow.run,
        UnbindRequest(agreement_id=agreement_id, customer_id=customer_id, consult=services.settings.consult_unbinding),
        id=workflow_ids.auto_debit_unbinding(agreement_id),
        task_queue=services.settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,  # after REFUSED or UNANSWERED, the user may ask again
    )
    try:
        outcome = await asyncio.wait_for(handle.result(), UNBIND_WAIT)
    except TimeoutError:
        response.status_code = 202
        return Unbinding(agreement_id=agreement_id, outcome="PENDING")
    if outcome is UnbindOutcome.NOT_FOUND:
        raise HTTPException(404, "No such agreement.")
    return Unbinding(agreement_id=agreement_id, outcome=outcome.value)
