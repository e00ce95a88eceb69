"""The wallet app in merchant-presented mode (seed 003), driving our API as the phone would.

Login, the scan page's acceptance marks, scan → identify (our API) → decode (Alipay+'s
client SDK) → our confirmation page in the app's web view → confirm or cancel → wherever
the page sends the user next (the merchant's page or app, the wallet's home, our result page).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from html.parser import HTMLParser
from typing import Any, Literal, Self
from urllib.parse import urljoin, urlsplit

import httpx

from alipayplus.sdk import AcceptanceMarkLogo

from .alipayplus_client_sdk import AlipayPlusClientSdk, DecodeOutcome, DeviceInfo

WALLET_HOME = "mppwallet://home"
SESSION_COOKIE = "mpp_session"  # what our pages in the web view read the login from
_TIMEOUT = 15.0


class WalletAppError(RuntimeError):
    """Our API answered something the app cannot go on from."""


class NotSignedIn(WalletAppError):
    """An action that needs the user's login, without one (or our API no longer accepts it)."""


class Verdict(StrEnum):
    """Our API's verdict on a scanned code (``/app/v1/codes/identify``)."""

    ALIPAY_PLUS = "ALIPAY_PLUS"
    LOCAL = "LOCAL"
    INVALID = "INVALID"
    RETRY_LATER = "RETRY_LATER"


class PaymentStatus(StrEnum):
    SUCCESS = "success"
    FAIL = "fail"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Destination(StrEnum):
    """Where the user ends up after our payment page (seed 003, step 7)."""

    MERCHANT_PAGE = "MERCHANT_PAGE"  # a merchant's web (WAP) page, opened in the web view
    MERCHANT_APP = "MERCHANT_APP"  # a merchant's app, by its scheme
    WALLET_HOME = "WALLET_HOME"
    RESULT_PAGE = "RESULT_PAGE"  # our own result page


@dataclass(frozen=True)
class PaymentResult:
    status: PaymentStatus
    destination: Destination
    url: str  # the page the user is on, or the app address opened
    next_url: str | None = None  # our result page's way on (``<a id=next>``)


@dataclass(frozen=True)
class ScanOutcome:
    """What the app shows after a scan: our payment page, where an earlier visit ended, or a message."""

    verdict: Verdict
    message: str
    decoded: DecodeOutcome | None = None
    page: PaymentPage | None = None  # the confirmation page, waiting for confirm() or cancel()
    result: PaymentResult | None = None  # the payment was already final when its page opened


class PaymentPage:
    """Our confirmation page, open in the app's web view."""

    def __init__(self, web_view: httpx.AsyncClient, url: str, html: str) -> None:
        self._web_view = web_view
        self.url = url
        self.html = html
        self._form = _ConfirmationForm.parse(html)

    async def confirm(self) -> PaymentResult:
        return await self._press("confirm")

    async def cancel(self) -> PaymentResult:
        return await self._press("cancel")

    async def _press(self, action: Literal["confirm", "cancel"]) -> PaymentResult:
        target = urljoin(self.url, self._form.action or self.url)
        response = await self._web_view.post(target, data={**self._form.hidden, "action": action})
        # only a paid payment leaves our page at once; a cancel that does is still a cancel
        status = PaymentStatus.SUCCESS if action == "confirm" else PaymentStatus.CANCELLED
        return await _land(self._web_view, response, status)


class WalletApp:
    """One phone: its device facts, a login, and Alipay+'s client SDK inside."""

    def __init__(
        self,
        api_url: str,
        alipayplus_url: str,
        psp_id: str,
        device: DeviceInfo | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.device = device or DeviceInfo()
        headers = {"User-Agent": self.device.user_agent}
        self._api = httpx.AsyncClient(base_url=api_url, transport=transport, timeout=_TIMEOUT, headers=headers)
        # the web view carries the login as a cookie for our host only (never to a merchant's page)
        # and shows each redirect to the app, which decides where the user goes
        self._web_view = httpx.AsyncClient(transport=transport, timeout=_TIMEOUT, headers=headers)
        self.sdk = AlipayPlusClientSdk(
            alipayplus_url, psp_id, self.get_auth_code, self.device, transport=transport, clock=clock
        )
        self.customer_id: str | None = None
        self._api_host = urlsplit(api_url).hostname or ""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.sdk.aclose()
        await self._api.aclose()
        await self._web_view.aclose()

    # --- the login --------------------------------------------------------------------------

    async def login(self, login_id: str, pin: str) -> str:
        """Sign in; the customer id. A wrong login or PIN raises ``NotSignedIn``."""
        self._sign_out_locally()  # another user's Alipay+ session must not survive
        body = await self._post("/app/v1/login", {"loginId": login_id, "pin": pin})
        token, customer_id = str(body["sessionToken"]), str(body["customerId"])
        self._api.headers["Authorization"] = f"Bearer {token}"
        self._web_view.cookies.set(SESSION_COOKIE, token, domain=self._api_host)
        self.customer_id = customer_id
        return customer_id

    async def logout(self) -> None:
        """Revoke the session at our API; the app forgets it (and the Alipay+ session) regardless."""
        try:
            if self.customer_id is not None:
                await self._api.post("/app/v1/logout")
        finally:
            self._sign_out_locally()

    async def get_auth_code(self) -> str:
        """Alipay+'s client SDK calls getAuthCode; the app asks our server and answers by authCallback."""
        self._require_login()
        body = await self._post("/app/v1/authCode", {"scopes": "BASE_USER_INFO"})
        return str(body["authCode"])

    def _require_login(self) -> None:
        if self.customer_id is None:
            raise NotSignedIn("Sign in to the wallet first.")

    async def _post(self, path: str, body: dict[str, str]) -> dict[str, Any]:
        """Our API's JSON answer; a 401 (wrong PIN, revoked or expired session) signs the app out."""
        try:
            return _json(await self._api.post(path, json=body))
        except NotSignedIn:
            self._sign_out_locally()
            raise

    def _sign_out_locally(self) -> None:
        self._api.headers.pop("Authorization", None)
        self._api.cookies.clear()
        self._web_view.cookies.clear()
        self.sdk.forget_session()
        self.customer_id = None

    # --- the scan page ----------------------------------------------------------------------

    async def scan_page_logos(self, region: str | None = None) -> list[AcceptanceMarkLogo]:
        return await self.sdk.get_acceptance_mark_logos(region)

    async def scan(self, code_value: str, *, amount: str | Decimal | None = None) -> ScanOutcome:
        """Steps 3–6: identify the code, let Alipay+ decode it, open our payment page.

        ``amount`` is what the user types on an entry code's cashier page (major units).
        """
        self._require_login()
        identified = await self._post("/app/v1/codes/identify", {"codeValue": code_value})
        try:
            verdict = Verdict(identified["verdict"])
        except (KeyError, ValueError):
            raise WalletAppError(f"Our API gave no verdict on the code: {identified}") from None
        message = str(identified.get("message") or "")
        if verdict is not Verdict.ALIPAY_PLUS:
            return ScanOutcome(verdict, message)
        decoded = await self.sdk.decode(code_value, enter_amount=None if amount is None else lambda _page: amount)
        if not decoded.payment_url:
            return ScanOutcome(verdict, decoded.message, decoded)
        return await self._open(decoded)

    async def _open(self, decoded: DecodeOutcome) -> ScanOutcome:
        url = decoded.payment_url or ""
        response = await self._web_view.get(url)
        if response.status_code == 200 and _ConfirmationForm.parse(response.text).has_buttons:
            page = PaymentPage(self._web_view, url, response.text)
            return ScanOutcome(Verdict.ALIPAY_PLUS, "Confirm the payment.", decoded, page)
        # scanned again after the payment ended: the page says (or sends the user) where it ended
        if response.status_code == 401:
            self._sign_out_locally()
        ended = await _land(self._web_view, response, PaymentStatus.SUCCESS)
        return ScanOutcome(
            Verdict.ALIPAY_PLUS, f"This payment has already ended: {ended.status}.", decoded, None, ended
        )


async def _land(web_view: httpx.AsyncClient, response: httpx.Response, left_as: PaymentStatus) -> PaymentResult:
    """Where our page sent the user: a redirect (``left_as``: our page only leaves at once when
    paid) to a merchant's page, a merchant's app or the wallet's home; or our result page."""
    if response.status_code == 401:
        raise NotSignedIn("Our payment page needs the wallet's login.")
    if response.is_redirect:
        location = urljoin(str(response.url), response.headers["location"])
        if response.request.method == "POST" and location.split("?")[0] == str(response.url).split("?")[0]:
            return await _land(web_view, await web_view.get(location), left_as)  # back to our page: it shows the result
        if location == WALLET_HOME:
            return PaymentResult(left_as, Destination.WALLET_HOME, location)
        if urlsplit(location).scheme not in ("http", "https"):
            return PaymentResult(left_as, Destination.MERCHANT_APP, location)
        try:  # the merchant's page shows its own result; the app only opens it
            shown = await web_view.get(location, follow_redirects=True)
            location = str(shown.url)
        except httpx.TransportError:
            pass  # the user is on the merchant's page even if it failed to load
        return PaymentResult(left_as, Destination.MERCHANT_PAGE, location)
    page = _ResultPage.parse(response.text)
    if response.status_code != 200 or page.status is None:
        raise WalletAppError(f"Our payment page answered HTTP {response.status_code} without a result.")
    return PaymentResult(page.status, Destination.RESULT_PAGE, str(response.url), page.next_url)


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 401:
        detail = _detail(response) or "Sign in to the wallet first."
        raise NotSignedIn(detail)
    if response.is_error:
        raise WalletAppError(f"{response.request.url.path}: HTTP {response.status_code} {_detail(response)}")
    body = response.json()
    if not isinstance(body, dict):
        raise WalletAppError(f"{response.request.url.path}: not a JSON object")
    return body


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("detail", "")) if isinstance(body, dict) else ""


class _ConfirmationForm(HTMLParser):
    """Our confirmation page's form: its action, hidden fields, and the confirm/cancel buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self._actions: set[str] = set()
        self._in_form = False

    @classmethod
    def parse(cls, html: str) -> _ConfirmationForm:
        form = cls()
        form.feed(html)
        form.close()
        return form

    @property
    def has_buttons(self) -> bool:
        return {"confirm", "cancel"} <= self._actions

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self._in_form = True
            self.action = values.get("action", "")
        elif self._in_form and values.get("name") == "action" and tag in ("button", "input"):
            self._actions.add(values.get("value", ""))
        elif self._in_form and tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.hidden[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


class _ResultPage(HTMLParser):
    """A result page: the text of the element ``id=status`` and the link ``id=next``."""

    def __init__(self) -> None:
        super().__init__()
        self.next_url: str | None = None
        self._status_text = ""
        self._status_tag: str | None = None
        self._status_seen = False

    @classmethod
    def parse(cls, html: str) -> _ResultPage:
        page = cls()
        page.feed(html)
        page.close()
        return page

    @property
    def status(self) -> PaymentStatus | None:
        try:
            return PaymentStatus(self._status_text.strip().lower()) if self._status_seen else None
        except ValueError:
            return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if values.get("id") == "status" and not self._status_seen:
            self._status_tag, self._status_seen = tag, True
        elif values.get("id") == "next" and tag == "a" and self.next_url is None:
            self.next_url = values.get("href") or None

    def handle_endtag(self, tag: str) -> None:
        if tag == self._status_tag:
            self._status_tag = None

    def handle_data(self, data: str) -> None:
        if self._status_tag is not None:
            self._status_text += data


__all__ = [
    "WALLET_HOME",
    "Destination",
    "DeviceInfo",
    "NotSignedIn",
    "PaymentPage",
    "PaymentResult",
    "PaymentStatus",
    "ScanOutcome",
    "Verdict",
    "WalletApp",
    "WalletAppError",
]
