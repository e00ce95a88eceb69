"""The Easy Pay verification page (seed 004, step 3): PIN or SMS OTP, resend, redirect.

The page talks to the payment's workflow; what the user types reaches the workflow only
as a keyed digest, so no PIN or OTP is ever written to workflow history. Every answer carries
the pages' security headers, every form its token (``api.pages``), and a final payment sends
the browser only to an allow-listed host (``MPP_REDIRECT_HOSTS``: Alipay+'s result page).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.credentials import Verdict
from activities.records import PaymentStatus, VerificationMethod
from activities.secrets import keyed_digest
from workflows.easy_pay import PRODUCT, EasyPayWorkflow
from workflows.payment_order import PageOutcome, PaymentState

from .. import pages
from ..services import ClientAddress, Services, ServicesDep
from ..workflow_calls import Late, payment_behind_page, payment_state, send_update

PREFIX = "/easypay/verify"
REDIRECTS = pages.Redirects(lambda settings: settings.redirect_hosts)  # Alipay+'s result page (seed 004)
router = pages.page_router(PREFIX, "verification page", REDIRECTS)
templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
_CODE = re.compile(r"[0-9]{4,8}")
TRY_AGAIN = "We are busy and could not take that just now. Please try again."
CODE_FORM, RESEND_FORM = "easypay.code", "easypay.resend"  # what each form's token is for


def _page(request: Request, state: PaymentState, message: str | None = None, error: bool = False) -> Response:
    if state.status is not PaymentStatus.PROCESSING:
        return _leave(request, state)
    secret = pages.page_settings(request).secret_key
    payment_request_id, payment_id = state.payment_request_id, state.payment_id or ""
    path = f"{PREFIX}/{quote(payment_request_id, safe='')}/{quote(payment_id, safe='')}"

    def form(name: str, action: str) -> dict[str, str]:
        """Where a form posts and its token (for this payment's page, which has no sign-in)."""
        return {"action": action, "token": pages.form_token(secret, name, payment_request_id, payment_id)}

    return templates.TemplateResponse(
        request,
        "verify.html",
        {
            "state": state,
            "message": message,
            "error": error,
            "otp": VerificationMethod.OTP,
            "code_form": form(CODE_FORM, path),
            "resend_form": form(RESEND_FORM, f"{path}/resend"),
            "token_field": pages.CSRF_FIELD,
        },
    )


def _leave(request: Request, state: PaymentState) -> Response:
    """Final: back to Alipay+'s result page with status=success|fail if its host is allowed, else
    our own result page (the payment is as final either way: this is only where the browser goes)."""
    target = REDIRECTS.target(pages.page_settings(request), state.redirect_url)
    if target:
        return RedirectResponse(target, status_code=303)
    succeeded = state.status is PaymentStatus.SUCCESS
    return pages.message_page(
        200,
        f"Payment {'succeeded' if succeeded else 'failed'}",
        "" if succeeded else state.payment_result.result_message or "",
        title="Payment",
    )


async def _send(
    request: Request, handle: WorkflowHandle, state: PaymentState, update: Any, *args: str
) -> PageOutcome | Response:
    """Run a page action on the payment; if it closed meanwhile, the page showing where it ended."""
    try:
        outcome: PageOutcome = await send_update(handle, update, *args)
    except Late:  # the server too busy to answer in time: the page as it was, to try again
        return _page(request, state, TRY_AGAIN, error=True)
    except (WorkflowUpdateFailedError, RPCError):  # closed meanwhile (the page leaves), or try again
        with contextlib.suppress(Late, RPCError):  # else the page as it was
            state = await payment_state(handle)
        return _page(request, state, TRY_AGAIN, error=True)
    return outcome


def _show(request: Request, outcome: PageOutcome | Response) -> Response:
    if isinstance(outcome, Response):
        return outcome
    return _page(request, outcome.state, outcome.message, error=not outcome.accepted)


async def _payment(
    services: Services, payment_request_id: str, payment_id: str
) -> tuple[WorkflowHandle, PaymentState] | Response:
    """The payment the URL names, or the page to show instead."""
    try:
        found = await payment_behind_page(services.temporal, payment_request_id, payment_id, PRODUCT)
    except Late:
        return pages.message_page(200, "Busy", TRY_AGAIN, title="Payment")
    if found is None:
        return pages.message_page(404, "This payment link is not valid.", title="Not found")
    return found


@router.get("/{payment_request_id}/{payment_id}", response_class=HTMLResponse)
async def show(request: Request, payment_request_id: str, payment_id: str, services: ServicesDep) -> Response:
    found = await _payment(services, payment_request_id, payment_id)
    return found if isinstance(found, Response) else _page(request, found[1])


@router.post(
    "/{payment_request_id}/{payment_id}", response_class=HTMLResponse, dependencies=[pages.form_guard(CODE_FORM)]
)
async def submit(
    request: Request,
    payment_request_id: str,
    payment_id: str,
    code: Annotated[str, Form(max_length=16)],
    address: ClientAddress,
    services: ServicesDep,
) -> Response:
    found = await _payment(services, payment_request_id, payment_id)
    if isinstance(found, Response):
        return found
    handle, state = found
    if state.status is not PaymentStatus.PROCESSING:
        return _leave(request, state)  # already final (a resubmitted form): a closed workflow takes no updates
    code = code.strip()
    if not _CODE.fullmatch(code):
        return _page(request, state, "Enter the digits of your code.", error=True)
    waiting = await asyncio.to_thread(services.credentials.address_wait, address)
    if waiting is not None:  # many wrong codes from this address, whatever the account
        message = f"Too many wrong codes from your network. Try again in {waiting.retry_after_seconds} seconds."
        return _page(request, state, message, error=True)
    if state.verification_method is VerificationMethod.OTP:
        digest = keyed_digest(services.settings.secret_key, "otp", state.otp_challenge_id or "", code)
    else:
        digest = services.credentials.pin_digest(state.customer_id or "", code)
    outcome = await _send(request, handle, state, EasyPayWorkflow.submit_code, digest)
    if isinstance(outcome, PageOutcome) and outcome.verdict in (Verdict.WRONG, Verdict.LOCKED):
        await asyncio.to_thread(services.credentials.count_address_failure, address, uuid.uuid4().hex, "easypay")
    return _show(request, outcome)


@router.post(
    "/{payment_request_id}/{payment_id}/resend",
    response_class=HTMLResponse,
    dependencies=[pages.form_guard(RESEND_FORM)],
)
async def resend(request: Request, payment_request_id: str, payment_id: str, services: ServicesDep) -> Response:
    found = await _payment(services, payment_request_id, payment_id)
    if isinstance(found, Response):
        return found
    handle, state = found
    if state.status is not PaymentStatus.PROCESSING:
        return _leave(request, state)
    return _show(request, await _send(request, handle, state, EasyPayWorkflow.resend_otp))
