"""What our payment pages share (the Easy Pay verification page, the MPM confirmation page):
one look (``templates/base.html``), one result page per outcome, security headers on every
answer, a token on every form, and where a finished payment may send the browser.

* Headers: each page router's ``route_class`` (``page_router``) puts them on every response of
  its routes: pages, redirects, the small inline pages, refusals; and answers a refused form
  (403) or unreadable form input (422) with an HTML page instead of JSON.
* Forms: ``form_token`` is an HMAC under the server secret over the form, the page's
  paymentRequestId and paymentId and, on a signed-in page, the session. ``form_guard`` checks it
  (and refuses cross-site posts by ``Origin`` / ``Sec-Fetch-Site``) as a dependency, so a refused
  post never reaches the route, let alone the workflow: no attempt is used, nothing changes.
* Outcomes: ``outcome_of`` and ``failure_reason`` say how a final payment ended, in words a
  payer reads; ``result_page`` shows it (reference and time on success) with the way on.
* Forms post, then redirect (303) back to a page, so a reload never posts twice.
* Redirects: ``Redirects.target`` lets the browser go only to an http(s) URL whose host is on the
  page's allow-list (and, for MPM, to a merchant app by its scheme); anything else, and the user
  stays on our own result page.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency signatures below.

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from alipayplus import ResultCode
from wallet.orders import USER_CANCELLED, PaymentState
from wallet.settings import Settings
from wallet.states import PaymentStatus, VerificationMethod

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES)
CSRF_FIELD = "csrf_token"  # the hidden field every page form carries
# Not no-referrer: under it browsers send ``Origin: null`` on our own form posts, and the Origin
# check could no longer tell them from a sandboxed cross-site frame's. strict-origin still never
# sends a page's path (its paymentRequestId and paymentId: the page's capability) to another origin.
REFERRER_POLICY = "strict-origin"
REFUSED_TITLE = "Form not accepted"
REFUSED_FORM = (
    "This form did not come from this payment's page, or the page is out of date. "
    "Nothing was changed: open the payment page again and retry."
)
REFUSED_CROSS_SITE = "This form was sent from another site. Nothing was changed."
UNREADABLE_FORM = "The form was not filled in as expected. Nothing was changed: please try again."


# --- headers ---------------------------------------------------------------------------------


def _style_hashes() -> tuple[str, ...]:
    """CSP sources for the templates' inline ``<style>`` blocks (rendered as written: no Jinja in them)."""
    sources: dict[str, None] = {}
    for template in sorted(TEMPLATES.glob("*.html")):
        for style in re.findall(r"<style>(.*?)</style>", template.read_text(encoding="utf-8"), re.DOTALL):
            digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
            sources[f"'sha256-{digest}'"] = None
    return tuple(sources)


STYLE_SOURCES = _style_hashes()


@lru_cache(maxsize=32)
def content_security_policy(form_targets: tuple[str, ...] = ()) -> str:
    """No scripts, only our own styles, never framed; forms post to us only. ``form_targets``: where
    a form's redirect may lead as well (Chromium applies form-action to a form post's redirects)."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'none'",
            "style-src " + (" ".join(STYLE_SOURCES) or "'none'"),
            "object-src 'none'",
            "frame-ancestors 'none'",
            " ".join(["form-action 'self'", *form_targets]),
            "base-uri 'none'",
        ]
    )


def secure(response: Response, csp: str) -> Response:
    """The headers every page answer carries, whatever it is (page, redirect, refusal)."""
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = csp
    response.headers["Cache-Control"] = "no-store"  # amounts, names, a capability URL: never kept
    response.headers["Referrer-Policy"] = REFERRER_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def message_page(status: int, heading: str, text: str = "", title: str | None = None) -> HTMLResponse:
    """A small page of our own, in the pages' look: a heading and a line of text (escaped)."""
    body = templates.get_template("message.html").render(title=title or heading, heading=heading, text=text)
    return HTMLResponse(body, status)


# --- how a payment ended, in a payer's words -------------------------------------------------


class Outcome(StrEnum):
    SUCCESS = "success"
    FAIL = "fail"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


HEADINGS = {
    Outcome.SUCCESS: "Payment successful",
    Outcome.FAIL: "Payment failed",
    Outcome.CANCELLED: "Payment cancelled",
    Outcome.EXPIRED: "Payment expired",
}
_REASONS: dict[str, str] = {
    ResultCode.USER_BALANCE_NOT_ENOUGH: "Your balance is not enough for this payment.",
    ResultCode.USER_STATUS_ABNORMAL: "Your account cannot pay at the moment. Please contact us.",
    ResultCode.USER_NOT_EXIST: "We could not find your account.",
    ResultCode.PAYMENT_AMOUNT_EXCEED_LIMIT: "The amount is above your single payment limit.",
    ResultCode.USER_AMOUNT_EXCEED_LIMIT: "The amount is above your payment limit for now.",
    ResultCode.RISK_REJECT: "This payment was declined for your account's safety.",
}
LOCKED = "Too many wrong codes: your account is locked for now."
CLOSED_BY_MERCHANT = "The merchant cancelled this payment."
NOT_IN_TIME = "This payment was not confirmed in time."


def outcome_of(state: PaymentState) -> Outcome:
    """How a final payment ended: closed by its user (or the merchant), out of time, failed or paid."""
    if state.status is PaymentStatus.SUCCESS:
        return Outcome.SUCCESS
    if state.status is PaymentStatus.CLOSED:
        by_user = state.payment_result.result_message == USER_CANCELLED
        return Outcome.EXPIRED if not by_user and _ran_out_of_time(state) else Outcome.CANCELLED
    return Outcome.FAIL


def _ran_out_of_time(state: PaymentState) -> bool:
    """Closed unpaid, and its expiry has passed: it ran out of time (else the merchant cancelled it;
    a paid order closed later was cancelled, whatever the clock says now)."""
    return state.payment_time is None and datetime.now(state.expires_at.tzinfo) >= state.expires_at


def failure_reason(state: PaymentState) -> str:
    """Why the payment did not go through, for the payer; '' once paid."""
    outcome = outcome_of(state)
    result = state.payment_result
    if outcome is Outcome.SUCCESS:
        return ""
    if outcome is Outcome.CANCELLED:
        return "You cancelled this payment." if result.result_message == USER_CANCELLED else CLOSED_BY_MERCHANT
    if outcome is Outcome.EXPIRED:
        return NOT_IN_TIME
    if result.result_code == ResultCode.USER_PAYMENT_VERIFICATION_FAILED:
        if result.result_message and "locked" in result.result_message:
            return LOCKED
        noun = "code" if state.verification_method is VerificationMethod.OTP else "PIN"
        return f"Wrong {noun} entered too many times."
    return _REASONS.get(result.result_code, "The payment could not be completed. Nothing was charged.")


def expires_in(expires_at: datetime, now: datetime | None = None) -> str:
    """ "Expires in 9 min": a person's reading of the order's expiry, whatever their time zone."""
    left = (expires_at - (now or datetime.now(expires_at.tzinfo))).total_seconds()
    if left <= 0:
        return "This payment has expired"
    if left < 60:
        return "Expires in less than a minute"
    minutes = int(left // 60)
    if minutes < 120:
        return f"Expires in {minutes} min"
    return f"Expires in {minutes // 60} h {minutes % 60} min"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def readable(text: str | None) -> str:
    """A merchant's or order's text as a person reads it: a bare code such as ``AMSDM_GIFT``
    (capitals and underscores) becomes words (``Amsdm gift``); anything else is kept."""
    if not text:
        return ""
    if re.fullmatch(r"[A-Z0-9]+(_[A-Z0-9]+)+", text):
        words = text.replace("_", " ").lower()
        return words[:1].upper() + words[1:]
    return text


def result_page(
    request: Request,
    state: PaymentState,
    *,
    continue_url: str | None = None,
    continue_text: str = "Continue",
    next_url: str | None = None,
    next_text: str = "",
) -> Response:
    """Our page for a final payment: paid (reference, time) or not (the reason), and the way on."""
    outcome = outcome_of(state)
    return templates.TemplateResponse(
        request,
        "result.html",
        {
            "state": state,
            "outcome": outcome.value,
            "heading": HEADINGS[outcome],
            "merchant": readable(state.merchant_name) or "the merchant",
            "reason": failure_reason(state),
            "time": state.payment_time,
            "continue_url": continue_url,
            "continue_text": continue_text,
            "next_url": next_url,
            "next_text": next_text,
        },
    )


# --- redirects -------------------------------------------------------------------------------

_HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*")
_URL = re.compile(r"[!-~]+")  # printable ASCII: no spaces, controls or look-alike characters
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
# Never where a payment sends the browser, whatever the product: script, inline content, local files.
_UNSAFE_SCHEMES = frozenset({"javascript", "vbscript", "data", "blob", "file", "filesystem", "about", "view-source"})


@lru_cache(maxsize=32)
def host_patterns(hosts: tuple[str, ...]) -> tuple[str, ...]:
    """The well-formed entries of an allow-list, lower-case: a host name (exact), ``*.suffix`` (any
    host under suffix, not suffix itself) or ``*`` (any host). Others are logged and match nothing."""
    patterns = []
    for entry in hosts:
        pattern = entry.strip().lower()
        if _HOST_PATTERN.fullmatch(pattern):
            patterns.append(pattern)
        else:
            log.warning("redirect allow-list entry %r is not a host name, *.suffix or *: ignored", entry)
    return tuple(patterns)


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    host = host.lower()
    return any(
        pattern == "*"
        or host == pattern
        or (pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1)
        for pattern in patterns
    )


def allowed_redirect(url: str | None, hosts: Sequence[str], *, app_schemes: bool = False) -> str | None:
    """``url`` if the browser may be sent there, else ``None``.

    An absolute http(s) URL, without user info, whose host is on ``hosts``; with ``app_schemes``
    also an app's own scheme (``merchantapp://…``), never a script, data or local one. Anything a
    browser could read differently from us (backslashes, spaces, controls, non-ASCII) is refused.
    """
    if not url or not _URL.fullmatch(url) or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises
    except ValueError:
        return None
    if parts.scheme in ("http", "https"):
        host = parts.hostname
        if not host or "@" in parts.netloc or not url[len(parts.scheme) :].startswith("://"):
            return None
        return url if host_allowed(host, host_patterns(tuple(hosts))) else None
    if app_schemes and _SCHEME.fullmatch(parts.scheme) and parts.scheme not in _UNSAFE_SCHEMES:
        return url
    return None


@dataclass(frozen=True)
class Redirects:
    """Where one page may send the browser once its payment is final."""

    hosts: Callable[[Settings], Sequence[str]]  # the allow-list, from the settings
    app_schemes: bool = False  # MPM: a merchant app by its scheme (seed 003, step 7)
    form_targets: tuple[str, ...] = ()  # more CSP form-action sources (e.g. the wallet's own scheme)

    def target(self, settings: Settings, url: str | None) -> str | None:
        """``url`` if the browser may go there, else ``None`` (our own result page instead)."""
        return allowed_redirect(url, self.hosts(settings), app_schemes=self.app_schemes)

    def csp(self, settings: Settings) -> str:
        sources: list[str] = []
        for pattern in host_patterns(tuple(self.hosts(settings))):
            sources += ["https:", "http:"] if pattern == "*" else [f"https://{pattern}:*", f"http://{pattern}:*"]
        return content_security_policy(tuple(dict.fromkeys([*sources, *self.form_targets])))


# --- forms -----------------------------------------------------------------------------------


class ShowInstead(Exception):
    """A page dependency's answer instead of the route's (sign in, busy, no such payment): shown as
    it is, with the pages' headers."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class FormRefused(Exception):
    """A page form that did not come from our page: answered 403, before the route runs."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def form_token(secret_key: bytes, form: str, payment_request_id: str, payment_id: str, session: str = "") -> str:
    """The token a page's form carries: HMAC-SHA256 under the server secret over the form's name,
    the page's ids and the sign-in it was served to (``""`` on a page without one)."""
    message = json.dumps(["page-form/v1", form, payment_request_id, payment_id, session]).encode()
    digest = hmac.new(secret_key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def page_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` as browsers send it in ``Origin`` (default ports left out)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def cross_site(request: Request, settings: Settings) -> bool:
    """Whether the browser says this post came from another site (absent headers say nothing)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    ours = {_origin(settings.public_base_url), _origin(str(request.base_url))}
    return _origin(origin) not in ours - {None}  # "null" (an opaque origin) is never ours


def no_session(request: Request) -> str:
    """The sign-in a public page's forms are bound to: none."""
    return ""


def form_guard(form: str, session: Callable[[Request], str | None] = no_session) -> Any:
    """A route dependency: the post must carry ``form``'s token for the page its URL names and,
    unless ``session`` says there is none (``None``: the route answers 401 and changes nothing),
    for that sign-in; and must not come from another site. Else ``FormRefused`` (403)."""

    async def check(request: Request) -> None:
        settings = page_settings(request)
        if cross_site(request, settings):
            raise FormRefused(REFUSED_CROSS_SITE)
        bound = session(request)
        if bound is None:
            return
        params = request.path_params
        expected = form_token(settings.secret_key, form, params["payment_request_id"], params["payment_id"], bound)
        given = (await request.form()).get(CSRF_FIELD)
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
            raise FormRefused(REFUSED_FORM)

    return Depends(check)


# --- the routers -----------------------------------------------------------------------------


def page_status(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {}}}


# What every page may answer besides its page (200), documented in OpenAPI (issue 13, item 9).
PAGE_STATUSES: dict[int | str, dict[str, Any]] = {
    303: {"description": "The payment is final: on to its allowed result page"},
    404: page_status("No such payment behind this link"),
    422: page_status("The request was not as the page expects (an HTML page, not FastAPI's JSON)"),
}
FORM_STATUSES: dict[int | str, dict[str, Any]] = {
    403: page_status("The form did not come from this payment's page, or came from another site"),
}


class PageRoute(APIRoute):
    """A page route: every answer gets ``secure``'s headers; refusals and bad input an HTML page."""

    redirects: ClassVar[Redirects]

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # Every page post is a form behind ``form_guard``: it may be refused (403).
        posts = "POST" in {method.upper() for method in kwargs.get("methods") or ()}
        kwargs["responses"] = {**PAGE_STATUSES, **(FORM_STATUSES if posts else {}), **(kwargs.get("responses") or {})}
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Any]:
        handle = super().get_route_handler()
        redirects = self.redirects

        async def page(request: Request) -> Response:
            try:
                response = await handle(request)
            except ShowInstead as instead:
                response = instead.response
            except FormRefused as refused:
                response = message_page(403, REFUSED_TITLE, refused.message)
            except RequestValidationError:  # never echoes what was typed (FastAPI's JSON would)
                response = message_page(422, REFUSED_TITLE, UNREADABLE_FORM)
            except HTTPException as refused:
                response = message_page(refused.status_code, REFUSED_TITLE, UNREADABLE_FORM)
            return secure(response, redirects.csp(page_settings(request)))

        return page


def page_router(
    prefix: str, tag: str, redirects: Redirects, responses: dict[int | str, dict[str, Any]] | None = None
) -> APIRouter:
    """An ``APIRouter`` for one payment page, whose redirects follow ``redirects``; ``responses``:
    statuses its pages may answer besides ``PAGE_STATUSES`` (and ``FORM_STATUSES`` on posts)."""
    route_class = type("PageRoute", (PageRoute,), {"redirects": redirects})
    return APIRouter(prefix=prefix, tags=[tag], route_class=route_class, responses=responses)


# --- for drivers and tests: what a browser sends from a page ---------------------------------


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []  # (action, hidden fields)
        self.links: dict[str, str] = {}  # id -> href of every <a id=… href=…>
        self._open = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "a" and values.get("id") and "href" in values:
            self.links.setdefault(values["id"], values["href"])
        elif tag == "form":
            self.forms.append((values.get("action", ""), {}))
            self._open = True
        elif tag == "input" and self._open and values.get("type") == "hidden" and values.get("name"):
            self.forms[-1][1][values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = False


def _parsed(page: str) -> _Forms:
    parser = _Forms()
    parser.feed(page)
    parser.close()
    return parser


def form_fields(page: str, action_suffix: str = "") -> dict[str, str]:
    """The hidden fields of the page's first form whose action ends with ``action_suffix``, as a
    browser posts them with the form ({} if the page has no such form)."""
    return next((fields for action, fields in _parsed(page).forms if action.endswith(action_suffix)), {})


def link(page: str, element_id: str) -> str | None:
    """Where the page's link ``<a id=element_id>`` leads (the result page's ``continue``), if any."""
    return _parsed(page).links.get(element_id)
