"""The MPM confirmation page (seed 003, steps 6–7): the paymentUrl our pay answers.

Alipay+'s client SDK opens it in the wallet app's web view, signed in with the app's
session; the payer confirms or cancels, then goes where the seed's redirect rules say: the
merchant straight away, or our result page (the page itself, once final; a post is answered
303 so a reload never posts twice). Every
answer carries the pages' security headers, the form a token bound to the page and the session
(``api.pages``), and the merchant's address is used only if ``MPP_MPM_REDIRECT_HOSTS`` allows it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from wallet.orders import Decision, PaymentState
from wallet.states import PaymentStatus
from workflows.mpm_payment import PRODUCT, MpmPaymentWorkflow

from .. import pages
from ..dependencies import SignedIn, page_session
from ..services import ServicesDep
from ..workflow_calls import Late, payment_behind_page, payment_state, send_update

PREFIX = "/mpm/pay"
WALLET_HOME = "mppwallet://home"
# The merchant's page or app (seed 003, step 7: "trust Alipay+ merchant URL ... without ... whitelist",
# so by default any host); never a script, and the wallet's own scheme for its home.
REDIRECTS = pages.Redirects(
    lambda settings: settings.mpm_redirect_hosts, app_schemes=True, form_targets=(f"{urlsplit(WALLET_HOME).scheme}:",)
)
SIGN_IN: dict[int | str, dict[str, Any]] = {401: pages.page_status("Not signed in to the wallet app")}
router = pages.page_router(PREFIX, "MPM confirmation page", REDIRECTS, responses=SIGN_IN)
BUSY = "busy"  # the only notice the page shows after a post: try again
TRY_AGAIN = "We are busy and could not take that just now. Please try again."
DECIDE_FORM = "mpm.decide"  # what the confirm / cancel form's token is for


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


def _path(state: PaymentState) -> str:
    return f"{PREFIX}/{quote(state.payment_request_id, safe='')}/{quote(state.payment_id or '', safe='')}"


def _leave(request: Request, state: PaymentState, *, posted: bool = False) -> Response:
    """A final payment: straight on where the rules allow, else our result page (after a post,
    303 to this page, which shows it). A merchant address the allow-list refuses counts as none
    (our result page, the wallet's home)."""
    allowed = REDIRECTS.target(pages.page_settings(request), state.redirect_url)
    state = state.model_copy(update={"redirect_url": allowed})
    user_agent = request.headers.get("user-agent", "")
    location = next_location(state, user_agent)
    if location:
        return RedirectResponse(location, status_code=303)
    if posted:
        return RedirectResponse(_path(state), status_code=303)
    paid = pages.outcome_of(state) is pages.Outcome.SUCCESS
    merchant = state.redirect_url if not paid else None  # optional way back after a failure
    if merchant and (urlsplit(merchant).scheme not in ("http", "https") or _is_ios(user_agent)):  # no app, no script
        merchant = None
    next_url = merchant or WALLET_HOME
    next_text = "Back to the wallet" if next_url == WALLET_HOME else "Back to the merchant"
    return pages.result_page(request, state, next_url=next_url, next_text=next_text)


@dataclass(frozen=True)
class PayersPayment:
    """The signed-in payer's payment that the page's URL names."""

    customer_id: str
    handle: WorkflowHandle
    state: PaymentState


async def payers_payment(
    payment_request_id: str, payment_id: str, customer_id: SignedIn, services: ServicesDep
) -> PayersPayment:
    """A page dependency: the signed-in payer's payment the URL names, else the page to show instead
    (sign in; busy; not found, also for another payer's payment)."""
    if customer_id is None:
        raise pages.ShowInstead(_message_page(401, "Sign in", "Open this payment from the wallet app, signed in."))
    try:
        found = await payment_behind_page(services.temporal, payment_request_id, payment_id, PRODUCT)
    except Late:
        raise pages.ShowInstead(_message_page(200, "Busy", TRY_AGAIN)) from None
    if found is None or found[1].customer_id != customer_id:
        raise pages.ShowInstead(
            _message_page(404, "This payment link is not valid", "Scan the merchant's code again to pay.")
        )
    return PayersPayment(customer_id, *found)


PayersPaymentDep = Annotated[PayersPayment, Depends(payers_payment)]


@router.get("/{payment_request_id}/{payment_id}", response_class=HTMLResponse)
async def show(
    request: Request, payment: PayersPaymentDep, notice: Annotated[str | None, Query(max_length=32)] = None
) -> Response:
    if payment.state.status is not PaymentStatus.PROCESSING:
        return _leave(request, payment.state)
    return _confirmation(request, payment.state, TRY_AGAIN if notice == BUSY else None)


def _confirmation(request: Request, state: PaymentState, message: str | None = None) -> Response:
    payment_request_id, payment_id = state.payment_request_id, state.payment_id or ""
    secret = pages.page_settings(request).secret_key
    form = {
        "action": _path(state),
        "token": pages.form_token(secret, DECIDE_FORM, payment_request_id, payment_id, page_session(request) or ""),
    }
    return pages.templates.TemplateResponse(
        request,
        "mpm_confirm.html",
        {
            "state": state,
            "merchant": pages.readable(state.merchant_name) or "the merchant",
            "order": pages.readable(state.order_description),
            "expiry": pages.expires_in(state.expires_at),
            "message": message,
            "decide_form": form,
            "token_field": pages.CSRF_FIELD,
        },
    )


def _try_again(state: PaymentState) -> Response:
    """303 back to the confirmation page, asking the payer to try again."""
    return RedirectResponse(f"{_path(state)}?notice={BUSY}", status_code=303)


@router.post(
    "/{payment_request_id}/{payment_id}",
    response_class=HTMLResponse,
    dependencies=[pages.form_guard(DECIDE_FORM, page_session)],
    responses={303: {"description": "Decided: on to the merchant, or back to the page, which shows how it ended"}},
)
async def decide(
    request: Request, action: Annotated[Literal["confirm", "cancel"], Form()], payment: PayersPaymentDep
) -> Response:
    handle, state = payment.handle, payment.state
    if state.status is not PaymentStatus.PROCESSING:
        return _leave(request, state, posted=True)  # a resubmitted form: a closed workflow takes no updates
    decision = Decision.CONFIRM if action == "confirm" else Decision.CANCEL
    try:
        outcome = await send_update(handle, MpmPaymentWorkflow.decide, payment.customer_id, decision)
    except Late:  # the server too busy to answer in time: the page as it was, to try again
        return _try_again(state)
    except (WorkflowUpdateFailedError, RPCError):  # closed meanwhile (expired): show where it ended
        with contextlib.suppress(Late, RPCError):  # else the page as it was
            state = await payment_state(handle)
        if state.status is PaymentStatus.PROCESSING:  # not closed after all: try again
            return _try_again(state)
        return _leave(request, state, posted=True)
    if outcome.state.status is PaymentStatus.PROCESSING:
        return _try_again(outcome.state)
    return _leave(request, outcome.state, posted=True)
