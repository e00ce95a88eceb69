"""The MPM confirmation page (seed 003, steps 6–7): the paymentUrl our pay answers.

Alipay+'s client SDK opens it in the wallet app's web view, signed in with the app's
session; the payer confirms or cancels, then goes where the seed's redirect rules say. Every
answer carries the pages' security headers, the form a token bound to the page and the session
(``api.pages``), and the merchant's address is used only if ``MPP_MPM_REDIRECT_HOSTS`` allows it.
"""

from __future__ import annotations

import contextlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.records import PaymentStatus
from activities.secrets import token_digest
from workflows.mpm_payment import PRODUCT, USER_CANCELLED, Decision, MpmPaymentWorkflow
from workflows.payment_order import PaymentState

from .. import pages
from ..services import Services, ServicesDep
from ..workflow_calls import Late, payment_behind_page, payment_state, send_update
from .wallet_app import session_token, signed_in_customer

PREFIX = "/mpm/pay"
WALLET_HOME = "mppwallet://home"
# The merchant's page or app (seed 003, step 7: "trust Alipay+ merchant URL ... without ... whitelist",
# so by default any host); never a script, and the wallet's own scheme for its home.
REDIRECTS = pages.Redirects(
    lambda settings: settings.mpm_redirect_hosts, app_schemes=True, form_targets=(f"{urlsplit(WALLET_HOME).scheme}:",)
)
SIGN_IN: dict[int | str, dict[str, Any]] = {401: pages.page_status("Not signed in to the wallet app")}
router = pages.page_router(PREFIX, "MPM confirmation page", REDIRECTS, responses=SIGN_IN)
templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
TRY_AGAIN = "We are busy and could not take that just now. Please try again."
DECIDE_FORM = "mpm.decide"  # what the confirm / cancel form's token is for
SignedIn = Annotated[str | None, Depends(signed_in_customer)]


def page_session(request: Request) -> str | None:
    """What the page's form is bound to: the app session it was served to (its digest); ``None``
    without one (the page then answers 401 and changes nothing)."""
    token = session_token(request)
    return token_digest(token) if token else None


class Outcome(StrEnum):
    SUCCESS = "success"
    FAIL = "fail"
    CANCELLED = "cancelled"


def outcome_of(state: PaymentState) -> Outcome:
    if state.status is PaymentStatus.SUCCESS:
        return Outcome.SUCCESS
    cancelled = state.status is PaymentStatus.CLOSED and state.payment_result.result_message == USER_CANCELLED
    return Outcome.CANCELLED if cancelled else Outcome.FAIL


def next_location(state: PaymentState, user_agent: str) -> str | None:
    """Where a paid user goes straight away (seed 003, step 7); ``None``: show our result page.

    Only a successful payment with a merchant address leaves at once. A merchant WAP page
    (http/https) on iOS is not opened (system restrictions), on Android and elsewhere it is;
    after scan-to-pay a merchant app is not reopened: the wallet's home instead.
    """
    url = state.redirect_url
    if state.status is not PaymentStatus.SUCCESS or not url:
        return None
    if urlsplit(url).scheme in ("http", "https"):
        return None if _is_ios(user_agent) else url
    return WALLET_HOME if state.in_store_payment else url


def _is_ios(user_agent: str) -> bool:
    return any(marker in user_agent for marker in ("iPhone", "iPad", "iOS"))


def _message_page(status: int, title: str, text: str) -> HTMLResponse:
    return pages.message_page(status, title, text)


def _leave(request: Request, state: PaymentState) -> Response:
    """A final payment: straight on where the rules allow, else our result page. A merchant
    address the allow-list refuses counts as none (our result page, the wallet's home)."""
    allowed = REDIRECTS.target(pages.page_settings(request), state.redirect_url)
    state = state.model_copy(update={"redirect_url": allowed})
    user_agent = request.headers.get("user-agent", "")
    location = next_location(state, user_agent)
    if location:
        return RedirectResponse(location, status_code=303)
    outcome = outcome_of(state)
    merchant = state.redirect_url if outcome is not Outcome.SUCCESS else None  # optional way back after a failure
    if merchant and (urlsplit(merchant).scheme not in ("http", "https") or _is_ios(user_agent)):  # no app, no script
        merchant = None
    return templates.TemplateResponse(
        request,
        "mpm_result.html",
        {"state": state, "outcome": outcome.value, "next": merchant or WALLET_HOME},
    )


@router.get("/{payment_request_id}/{payment_id}", response_class=HTMLResponse)
async def show(
    request: Request, payment_request_id: str, payment_id: str, customer_id: SignedIn, services: ServicesDep
) -> Response:
    if customer_id is None:
        return _message_page(401, "Sign in", "Open this payment from the wallet app, signed in.")
    found = await _payment(services, payment_request_id, payment_id, customer_id)
    if isinstance(found, Response):
        return found
    state = found[1]
    if state.status is not PaymentStatus.PROCESSING:
        return _leave(request, state)
    return _confirmation(request, state)


async def _payment(
    services: Services, payment_request_id: str, payment_id: str, customer_id: str
) -> tuple[WorkflowHandle, PaymentState] | Response:
    """The signed-in customer's payment the URL names, or the page to show instead."""
    try:
        found = await payment_behind_page(services.temporal, payment_request_id, payment_id, PRODUCT)
    except Late:
        return _message_page(200, "Busy", TRY_AGAIN)
    if found is None or found[1].customer_id != customer_id:
        return _message_page(404, "Not found", "This payment link is not valid.")
    return found


def _confirmation(request: Request, state: PaymentState, message: str | None = None) -> Response:
    payment_request_id, payment_id = state.payment_request_id, state.payment_id or ""
    secret = pages.page_settings(request).secret_key
    form = {
        "action": f"{PREFIX}/{quote(payment_request_id, safe='')}/{quote(payment_id, safe='')}",
        "token": pages.form_token(secret, DECIDE_FORM, payment_request_id, payment_id, page_session(request) or ""),
    }
    return templates.TemplateResponse(
        request,
        "mpm_confirm.html",
        {"state": state, "message": message, "decide_form": form, "token_field": pages.CSRF_FIELD},
    )


@router.post(
    "/{payment_request_id}/{payment_id}",
    response_class=HTMLResponse,
    dependencies=[pages.form_guard(DECIDE_FORM, page_session)],
)
async def decide(
    request: Request,
    payment_request_id: str,
    payment_id: str,
    action: Annotated[Literal["confirm", "cancel"], Form()],
    customer_id: SignedIn,
    services: ServicesDep,
) -> Response:
    if customer_id is None:
        return _message_page(401, "Sign in", "Open this payment from the wallet app, signed in.")
    found = await _payment(services, payment_request_id, payment_id, customer_id)
    if isinstance(found, Response):
        return found
    handle, state = found
    if state.status is not PaymentStatus.PROCESSING:
        return _leave(request, state)  # a resubmitted form: a closed workflow takes no updates
    decision = Decision.CONFIRM if action == "confirm" else Decision.CANCEL
    try:
        outcome = await send_update(handle, MpmPaymentWorkflow.decide, customer_id, decision)
    except Late:  # the server too busy to answer in time: the page as it was, to try again
        return _confirmation(request, state, TRY_AGAIN)
    except (WorkflowUpdateFailedError, RPCError):  # closed meanwhile (expired): show where it ended
        with contextlib.suppress(Late, RPCError):  # else the page as it was
            state = await payment_state(handle)
        if state.status is PaymentStatus.PROCESSING:  # not closed after all: try again
            return _confirmation(request, state, TRY_AGAIN)
        return _leave(request, state)
    return _leave(request, outcome.state)
