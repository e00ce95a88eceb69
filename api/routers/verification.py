"""The Easy Pay verification page (seed 004, step 3): PIN or SMS OTP, resend, cancel, result.

The page talks to the payment's workflow; what the user types reaches the workflow only
as a keyed digest, so no PIN or OTP is ever written to workflow history. Every form posts
and is answered 303 back to the page (a ``notice`` in the query says what happened), so a
reload never posts twice. Once the payment is final the page itself shows our result page,
whose Continue leads to Alipay+'s result page with ``status=success|fail`` (seed 004, step 7)
when its host is allowed (``MPP_REDIRECT_HOSTS``). Every answer carries the pages' security
headers and every form its token (``api.pages``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from wallet.credentials import Verdict
from wallet.orders import PageOutcome, PaymentState, Refusal
from wallet.secrets import keyed_digest
from wallet.states import PaymentStatus, VerificationMethod
from workflows.easy_pay import PRODUCT, EasyPayWorkflow

from .. import pages
from ..services import ClientAddress, ServicesDep
from ..workflow_calls import Late, payment_behind_page, payment_state, send_update

PREFIX = "/easypay/verify"
REDIRECTS = pages.Redirects(lambda settings: settings.redirect_hosts)  # Alipay+'s result page (seed 004)
router = pages.page_router(PREFIX, "verification page", REDIRECTS)
_CODE = re.compile(r"[0-9]{4,8}")
TRY_AGAIN = "We are busy and could not take that just now. Please try again."
CODE_FORM, RESEND_FORM, CANCEL_FORM = "easypay.code", "easypay.resend", "easypay.cancel"  # each form's token
BACK_TO_THE_PAGE: dict[int | str, dict[str, Any]] = {303: {"description": "Done: back to the page, which shows how"}}


class Notice(StrEnum):
    """What the page says after a form, carried in the 303's query (never free text: a link
    someone else crafted can only pick one of these)."""

    WRONG = "wrong"
    WAIT = "wait"
    NETWORK_WAIT = "network-wait"
    DIGITS = "digits"
    BUSY = "busy"
    CODE_SENT = "code-sent"
    RESEND_LIMIT = "resend-limit"
    NOT_SENT = "not-sent"


@dataclass(frozen=True)
class ShownNotice:
    text: str
    error: bool


def _notice(notice: Notice | None, seconds: int | None, state: PaymentState) -> ShownNotice | None:
    otp = state.verification_method is VerificationMethod.OTP
    wait = f"Try again in {pages.plural(seconds or 1, 'second')}."
    match notice:
        case Notice.WRONG:
            text = f"Wrong {'code' if otp else 'PIN'}. {pages.plural(state.attempts_left, 'attempt')} left."
            return ShownNotice(text + (f" Wait {pages.plural(seconds, 'second')} first." if seconds else ""), True)
        case Notice.WAIT:
            return ShownNotice(f"Too many wrong codes on your account. {wait}", True)
        case Notice.NETWORK_WAIT:
            return ShownNotice(f"Too many wrong codes from your network. {wait}", True)
        case Notice.DIGITS:
            return ShownNotice(f"Enter the digits of your {'code' if otp else 'PIN'}.", True)
        case Notice.BUSY:
            return ShownNotice(TRY_AGAIN, True)
        case Notice.CODE_SENT:
            return ShownNotice(f"A new code was sent to {state.otp_sent_to or 'your phone'}.", False)
        case Notice.RESEND_LIMIT:
            return ShownNotice("No more new codes can be sent for this payment.", True)
        case Notice.NOT_SENT:
            return ShownNotice("The code could not be sent. Try again in a moment.", True)
    return None


def _path(payment_request_id: str, payment_id: str) -> str:
    return f"{PREFIX}/{quote(payment_request_id, safe='')}/{quote(payment_id, safe='')}"


def _back(state: PaymentState, notice: Notice | None = None, seconds: int | None = None) -> Response:
    """303 back to the payment's page (GET), saying what happened while it still waits."""
    query = {"notice": notice.value} if notice and state.status is PaymentStatus.PROCESSING else {}
    if query and seconds:
        query["seconds"] = str(seconds)
    path = _path(state.payment_request_id, state.payment_id or "")
    return RedirectResponse(path + (f"?{urlencode(query)}" if query else ""), status_code=303)


def _page(request: Request, state: PaymentState, notice: ShownNotice | None = None) -> Response:
    if state.status is not PaymentStatus.PROCESSING:
        return _result(request, state)
    secret = pages.page_settings(request).secret_key
    payment_request_id, payment_id = state.payment_request_id, state.payment_id or ""
    path = _path(payment_request_id, payment_id)

    def form(name: str, action: str) -> dict[str, str]:
        """Where a form posts and its token (for this payment's page, which has no sign-in)."""
        return {"action": action, "token": pages.form_token(secret, name, payment_request_id, payment_id)}

    otp = state.verification_method is VerificationMethod.OTP
    resends_left = state.otp_resends_left or 0
    return pages.templates.TemplateResponse(
        request,
        "verify.html",
        {
            "state": state,
            "merchant": pages.readable(state.merchant_name) or "the merchant",
            "order": pages.readable(state.order_description),
            "notice": notice,
            "otp": otp,
            "code_label": f"Enter the code we sent to {state.otp_sent_to or 'your phone'}" if otp else "Payment PIN",
            "attempts": f"{pages.plural(state.attempts_left, 'attempt')} left",
            "resends": f"{pages.plural(resends_left, 'new code')} can still be sent" if resends_left else "",
            "expiry": pages.expires_in(state.expires_at),
            "code_form": form(CODE_FORM, path),
            "resend_form": form(RESEND_FORM, f"{path}/resend"),
            "cancel_form": form(CANCEL_FORM, f"{path}/cancel"),
            "token_field": pages.CSRF_FIELD,
        },
    )


def _result(request: Request, state: PaymentState) -> Response:
    """Final: our result page; its Continue goes to Alipay+'s result page with status=success|fail
    if that host is allowed (the payment is as final either way: this is only where the browser goes)."""
    target = REDIRECTS.target(pages.page_settings(request), state.redirect_url)
    return pages.result_page(request, state, continue_url=target)


async def _send(handle: WorkflowHandle, state: PaymentState, update: Any, *args: str) -> PageOutcome | Response:
    """Run a page action on the payment; if it closed meanwhile, back to the page showing where it ended."""
    try:
        outcome: PageOutcome = await send_update(handle, update, *args)
    except Late:  # the server too busy to answer in time: back to the page as it was, to try again
        return _back(state, Notice.BUSY)
    except (WorkflowUpdateFailedError, RPCError):  # closed meanwhile (the page shows it), or try again
        with contextlib.suppress(Late, RPCError):  # else the page as it was
            state = await payment_state(handle)
        return _back(state, Notice.BUSY)
    return outcome


@dataclass(frozen=True)
class PagePayment:
    """The payment that the page's URL names."""

    handle: WorkflowHandle
    state: PaymentState


async def behind_page(payment_request_id: str, payment_id: str, services: ServicesDep) -> PagePayment:
    """A page dependency: the payment the URL names, else the page to show instead (busy; not found)."""
    return await _behind(services, payment_request_id, payment_id, seen_will_do=False)


async def behind_form(payment_request_id: str, payment_id: str, services: ServicesDep) -> PagePayment:
    """A form's dependency: as ``behind_page``, but the state this process last showed will do (its
    payer, method and capability never change; the workflow refuses a post that comes too late),
    so a post usually needs no query before its update."""
    return await _behind(services, payment_request_id, payment_id, seen_will_do=True)


async def _behind(
    services: ServicesDep, payment_request_id: str, payment_id: str, *, seen_will_do: bool
) -> PagePayment:
    try:
        found = await payment_behind_page(
            services.temporal, payment_request_id, payment_id, PRODUCT, seen_will_do=seen_will_do
        )
    except Late:
        raise pages.ShowInstead(pages.message_page(200, "We are busy", TRY_AGAIN, title="Payment")) from None
    if found is None:
        raise pages.ShowInstead(
            pages.message_page(
                404,
                "This payment link is not valid",
                "Go back to the merchant and start the payment again.",
                "Not found",
            )
        )
    return PagePayment(*found)


Payment = Annotated[PagePayment, Depends(behind_page)]
FormPayment = Annotated[PagePayment, Depends(behind_form)]


async def _press(payment: PagePayment, update: Any) -> PageOutcome | Response:
    """A button that needs no input: the workflow's outcome, or the answer to give instead
    (already final: back to the page)."""
    if payment.state.status is not PaymentStatus.PROCESSING:
        return _back(payment.state)
    return await _send(payment.handle, payment.state, update)


@router.get("/{payment_request_id}/{payment_id}", response_class=HTMLResponse)
async def show(
    request: Request,
    payment: Payment,
    notice: Annotated[str | None, Query(max_length=32)] = None,
    seconds: Annotated[int | None, Query(ge=1, le=86_400)] = None,
) -> Response:
    state = payment.state
    known = notice if notice in Notice.__members__.values() else None  # anything else: no notice
    return _page(request, state, _notice(Notice(known) if known else None, seconds, state))


@router.post(
    "/{payment_request_id}/{payment_id}",
    response_class=HTMLResponse,
    dependencies=[pages.form_guard(CODE_FORM)],
    responses=BACK_TO_THE_PAGE,
)
async def submit(
    payment: FormPayment,
    code: Annotated[str, Form(max_length=16)],
    address: ClientAddress,
    services: ServicesDep,
) -> Response:
    handle, state = payment.handle, payment.state
    if state.verification_method is VerificationMethod.OTP:
        try:  # a code is keyed to the challenge sent last, which a resend changes: ask for it
            state = await payment_state(handle)
        except (Late, RPCError):
            return _back(state, Notice.BUSY)
    if state.status is not PaymentStatus.PROCESSING:
        return _back(state)  # already final (a resubmitted form): a closed workflow takes no updates
    code = code.strip()
    if not _CODE.fullmatch(code):
        return _back(state, Notice.DIGITS)
    waiting = await asyncio.to_thread(services.credentials.address_wait, address)
    if waiting is not None:  # many wrong codes from this address, whatever the account
        return _back(state, Notice.NETWORK_WAIT, waiting.retry_after_seconds)
    if state.verification_method is VerificationMethod.OTP:
        digest = keyed_digest(services.settings.secret_key, "otp", state.otp_challenge_id or "", code)
    else:
        digest = services.credentials.pin_digest(state.customer_id or "", code)
    outcome = await _send(handle, state, EasyPayWorkflow.submit_code, digest)
    if isinstance(outcome, Response):
        return outcome
    if outcome.verdict in (Verdict.WRONG, Verdict.LOCKED):
        await asyncio.to_thread(services.credentials.count_address_failure, address, uuid.uuid4().hex, "easypay")
    if outcome.accepted or outcome.state.status is not PaymentStatus.PROCESSING or outcome.refusal:
        return _back(outcome.state)  # paid, final, or decided by another post: the page shows where it is
    notice = {Verdict.WRONG: Notice.WRONG, Verdict.WAIT: Notice.WAIT}.get(outcome.verdict or Verdict.RIGHT)
    return _back(outcome.state, notice or Notice.BUSY, outcome.retry_after_seconds)


@router.post(
    "/{payment_request_id}/{payment_id}/resend",
    response_class=HTMLResponse,
    dependencies=[pages.form_guard(RESEND_FORM)],
    responses=BACK_TO_THE_PAGE,
)
async def resend(payment: Payment) -> Response:
    outcome = await _press(payment, EasyPayWorkflow.resend_otp)
    if isinstance(outcome, Response):
        return outcome
    refusals = {Refusal.RESEND_LIMIT: Notice.RESEND_LIMIT, Refusal.NOT_SENT: Notice.NOT_SENT}
    notice = Notice.CODE_SENT if outcome.accepted else refusals.get(outcome.refusal or Refusal.BUSY, Notice.BUSY)
    return _back(outcome.state, notice)


@router.post(
    "/{payment_request_id}/{payment_id}/cancel",
    response_class=HTMLResponse,
    dependencies=[pages.form_guard(CANCEL_FORM)],
    responses=BACK_TO_THE_PAGE,
)
async def cancel(payment: FormPayment) -> Response:
    outcome = await _press(payment, EasyPayWorkflow.decline)
    if isinstance(outcome, Response):
        return outcome
    return _back(outcome.state, None if outcome.state.status is not PaymentStatus.PROCESSING else Notice.BUSY)
