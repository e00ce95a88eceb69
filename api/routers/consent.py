"""Our Auto Debit consent page (spec §7.3): the ``authUrl`` prepare answers.

The signed-in wallet user reads which merchant asks to charge them and for what, then agrees or
declines. Agreeing binds the agreement to them once, issues the authCode, starts authNotify
AUTHCODE_CREATED (delivered durably) and sends the browser to the merchant's ``authRedirectUrl``
with ``authCode`` and ``authState``. Like every page: security headers, a form token bound to the
agreement and the session, no cross-site posts, another user's agreement is as good as unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Annotated, Any, Literal

from fastapi import Depends, Form, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from temporalio.service import RPCError

from alipayplus import AuthorizationNotifyType
from wallet.agreements import AgreementView, Consented, ConsentRefused, Origin
from wallet.deliveries import AuthNotifyInput, AuthorizationGrant
from wallet.delivery_starts import DeliveryStarts
from wallet.records import AgreementStatus

from .. import pages
from ..dependencies import SignedIn, page_session
from ..services import ServicesDep

PREFIX = "/agreements/consent"
CONSENT_FORM = "agreement.consent"
SCOPE_WORDS = {
    "AGREEMENT_PAY": "Charging your wallet for this merchant's payments",
    "BASE_USER_INFO": "Knowing your wallet user id",
    "USER_INFO": "Reading your name and profile",
}
REDIRECTS = pages.Redirects(lambda settings: settings.mpm_redirect_hosts, app_schemes=True)
SIGN_IN: dict[int | str, dict[str, Any]] = {401: pages.page_status("Not signed in to the wallet app")}
router = pages.page_router(PREFIX, "Auto Debit consent page", REDIRECTS, responses=SIGN_IN)
AgreementId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]


def _token(request: Request, agreement_id: str) -> str:
    secret = pages.page_settings(request).secret_key
    return pages.form_token(secret, CONSENT_FORM, agreement_id, "", page_session(request) or "")


async def _form_guard(request: Request, agreement_id: AgreementId) -> None:
    """The post carries this page's token for this agreement and sign-in, from our own site."""
    if pages.cross_site(request, pages.page_settings(request)):
        raise pages.FormRefused(pages.REFUSED_CROSS_SITE)
    if page_session(request) is None:
        return  # the route answers 401 and changes nothing
    given = (await request.form()).get(pages.CSRF_FIELD)
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), _token(request, agreement_id).encode()):
        raise pages.FormRefused(pages.REFUSED_FORM)


async def users_agreement(agreement_id: AgreementId, customer_id: SignedIn, services: ServicesDep) -> AgreementView:
    """The Auto Debit agreement the URL names, waiting for this user (or consented by them), else
    the page to show instead."""
    if customer_id is None:
        raise pages.ShowInstead(pages.message_page(401, "Sign in", "Open this link from the wallet app, signed in."))
    found = await asyncio.to_thread(services.agreements.view, agreement_id)
    waiting = found is not None and found.origin is Origin.AUTO_DEBIT and found.status is AgreementStatus.PREPARED
    if found is None or not (waiting or found.customer_id == customer_id):
        raise pages.ShowInstead(
            pages.message_page(404, "This link is not valid", "Ask the merchant to start linking again.")
        )
    return found


UsersAgreement = Annotated[AgreementView, Depends(users_agreement)]


@router.get("/{agreement_id}", response_class=HTMLResponse)
async def show(request: Request, agreement: UsersAgreement, services: ServicesDep) -> Response:
    if agreement.status is AgreementStatus.AUTHORIZED and agreement.customer_id:
        # consented, but the post may have met a busy Temporal: make sure of the notice, then on as after it
        with contextlib.suppress(RPCError, TimeoutError):
            await _notify_auth_code(services, agreement, agreement.customer_id)
        again = await asyncio.to_thread(services.agreements.consent, agreement.agreement_id, agreement.customer_id)
        if isinstance(again, Consented):
            return _to_merchant(request, again)
    if agreement.status is not AgreementStatus.PREPARED:
        return _decided(agreement)
    return pages.templates.TemplateResponse(
        request,
        "agreement_consent.html",
        {
            "merchant": pages.readable(agreement.merchant_name) or "A merchant",
            "scopes": [SCOPE_WORDS.get(scope, scope) for scope in agreement.scopes],
            "action": f"{PREFIX}/{agreement.agreement_id}",
            "token": _token(request, agreement.agreement_id),
            "token_field": pages.CSRF_FIELD,
        },
    )


@router.post(
    "/{agreement_id}",
    response_class=HTMLResponse,
    dependencies=[Depends(_form_guard)],
    responses={303: {"description": "Agreed: on to the merchant with the authCode"}},
)
async def decide(
    request: Request,
    action: Annotated[Literal["agree", "decline"], Form()],
    agreement: UsersAgreement,
    customer_id: SignedIn,
    services: ServicesDep,
) -> Response:
    if action == "decline":
        return pages.message_page(200, "Not linked", "Nothing was shared with the merchant. You can close this page.")
    consented = await asyncio.to_thread(services.agreements.consent, agreement.agreement_id, customer_id or "")
    if isinstance(consented, ConsentRefused):
        return _decided(agreement)
    try:
        await _notify_auth_code(services, agreement, customer_id or "")
    except (RPCError, TimeoutError):  # consented and kept: the page, reloaded, starts the notice again
        return pages.message_page(503, "Almost linked", "We are busy. Reload this page in a moment to finish.")
    return _to_merchant(request, consented)


async def _notify_auth_code(services: ServicesDep, agreement: AgreementView, customer_id: str) -> None:
    """authNotify AUTHCODE_CREATED, delivered durably (idempotent by its workflow id: a second press
    starts nothing new). Also sent on the redirect, so the merchant has the code either way."""
    settings = services.settings
    starts = DeliveryStarts(services.temporal, settings.temporal_task_queue, settings.delivery_schedule())
    await starts.start_auth_notification(
        AuthNotifyInput(
            grant=AuthorizationGrant(
                reference_agreement_id=agreement.reference_agreement_id,
                auth_client_id=agreement.auth_client_id,
                customer_id=customer_id,
                acquirer_id=agreement.acquirer_id or "",
                psp_id=agreement.psp_id or "",
                notify_type=AuthorizationNotifyType.AUTHCODE_CREATED,
                agreement_id=agreement.agreement_id,
            )
        )
    )


def _to_merchant(request: Request, consented: Consented) -> Response:
    allowed = REDIRECTS.target(pages.page_settings(request), consented.redirect_url)
    if allowed is None:
        return pages.message_page(200, "Linked", "You can go back to the merchant now.")
    return RedirectResponse(allowed, status_code=303)


def _decided(agreement: AgreementView) -> Response:
    if agreement.status is AgreementStatus.CANCELLED:
        return pages.message_page(200, "Unlinked", "This merchant can no longer charge your wallet.")
    return pages.message_page(200, "Linked", "This merchant is linked to your wallet. You can close this page.")
