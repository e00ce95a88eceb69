"""The wallet app in merchant-presented mode (seed 003), driving our API as the phone would.

Login, the scan page's acceptance marks, scan → identify (our API) → decode (Alipay+'s
client SDK) → our confirmation page in the app's web view → confirm or cancel → wherever
the page sends the user next (the merchant's page or app, the wallet's home, our result page).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx

from alipayplus.sdk import AcceptanceMarkLogo

from .alipayplus_client_sdk import AlipayPlusClientSdk, AmountPrompt, DecodeOutcome, DeviceInfo

WALLET_HOME = "mppwallet://home"


class NotSignedIn(RuntimeError):
    """An action that needs the user's login, without one."""


class Verdict(StrEnum):
    """Our API's verdict on a scanned code (``/app/v1/codes/identify``)."""

    ALIPAY_PLUS = "ALIPAY_PLUS"
    LOCAL = "LOCAL"
    INVALID = "INVALID"
    RETRY_LATER = "RETRY_LATER"


class Destination(StrEnum):
    """Where the user ends up after our payment page."""

    MERCHANT_PAGE = "MERCHANT_PAGE"  # a merchant's web (WAP) page
    MERCHANT_APP = "MERCHANT_APP"  # a merchant's app, by its scheme
    WALLET_HOME = "WALLET_HOME"
    RESULT_PAGE = "RESULT_PAGE"  # our own result page


@dataclass(frozen=True)
class PaymentResult:
    status: str  # success | fail | cancelled
    destination: Destination
    url: str | None = None  # the page the user is on (or the app it opened)


@dataclass(frozen=True)
class ScanOutcome:
    """What the app shows after a scan: our payment page, or a message."""

    verdict: Verdict
    message: str
    decoded: DecodeOutcome | None = None
    page: PaymentPage | None = None


class PaymentPage:
    """Our confirmation page, open in the app's web view."""

    def __init__(self, web_view: httpx.AsyncClient, url: str, html: str) -> None:
        self._web_view, self.url, self.html = web_view, url, html

    async def confirm(self) -> PaymentResult:
        return await self._press("confirm")

    async def cancel(self) -> PaymentResult:
        return await self._press("cancel")

    async def _press(self, action: str) -> PaymentResult:
        response = await self._web_view.post(self.url, data={"action": action})
        if response.is_redirect:
            return await self._follow(response.headers["location"])
        return _result_page(response)

    async def _follow(self, location: str) -> PaymentResult:
        """Only a successful payment leaves our page at once (seed 003, step 7)."""
        if location == WALLET_HOME:
            return PaymentResult("success", Destination.WALLET_HOME, location)
        if urlsplit(location).scheme in ("http", "https"):
            await self._web_view.get(location)  # the merchant's page shows its result; the app just opens it
            return PaymentResult("success", Destination.MERCHANT_PAGE, location)
        return PaymentResult("success", Destination.MERCHANT_APP, location)


class WalletApp:
    def __init__(
        self,
        api_url: str,
        alipayplus_url: str,
        psp_id: str,
        device: DeviceInfo | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.device = device or DeviceInfo()
        headers = {"User-Agent": self.device.user_agent}
        self._api = httpx.AsyncClient(base_url=api_url, transport=transport, timeout=15.0, headers=headers)
        # the web view shares the login cookie and, like a browser, shows each redirect to the app
        self._web_view = httpx.AsyncClient(transport=transport, timeout=15.0, headers=headers)
        self.sdk = AlipayPlusClientSdk(alipayplus_url, psp_id, self.get_auth_code, self.device, transport=transport)
        self.customer_id: str | None = None
        self._api_host = urlsplit(api_url).hostname or ""

    async def aclose(self) -> None:
        await self.sdk.aclose()
        await self._api.aclose()
        await self._web_view.aclose()

    async def login(self, login_id: str, pin: str) -> str:
        response = await self._api.post("/app/v1/login", json={"loginId": login_id, "pin": pin})
        if response.status_code == 401:
            raise NotSignedIn(response.json().get("detail", "Wrong login or PIN."))
        response.raise_for_status()
        body = response.json()
        self._api.headers["Authorization"] = f"Bearer {body['sessionToken']}"
        # the web view opens our pages with the login; cookies are per host, not per port
        self._web_view.cookies.set("mpp_session", body["sessionToken"], domain=self._api_host)
        self.customer_id = body["customerId"]
        return str(body["customerId"])

    async def logout(self) -> None:
        if self.customer_id is not None:
            await self._api.post("/app/v1/logout")
        self._api.headers.pop("Authorization", None)
        self._web_view.cookies.clear()
        self.sdk.forget_session()
        self.customer_id = None

    async def scan_page_logos(self, region: str | None = None) -> list[AcceptanceMarkLogo]:
        return await self.sdk.get_acceptance_mark_logos(region)

    async def scan(self, code_value: str, *, amount: str | None = None) -> ScanOutcome:
        """Steps 3–6: identify the code, let Alipay+ decode it, open our payment page."""
        verdict = await self._identify(code_value)
        if verdict[0] is not Verdict.ALIPAY_PLUS:
            return ScanOutcome(*verdict)
        decoded = await self.sdk.decode(code_value, enter_amount=(lambda _page: amount) if amount else None)
        if not decoded.payment_url:
            return ScanOutcome(Verdict.ALIPAY_PLUS, decoded.message, decoded)
        page = await self._web_view.get(decoded.payment_url)
        page.raise_for_status()
        return ScanOutcome(
            Verdict.ALIPAY_PLUS,
            "Confirm the payment.",
            decoded,
            PaymentPage(self._web_view, decoded.payment_url, page.text),
        )

    async def _identify(self, code_value: str) -> tuple[Verdict, str]:
        self._require_login()
        response = await self._api.post("/app/v1/codes/identify", json={"codeValue": code_value})
        response.raise_for_status()
        body = response.json()
        return Verdict(body["verdict"]), str(body["message"])

    async def get_auth_code(self) -> str:
        """Alipay+'s client SDK calls getAuthCode; the app asks our server and answers by authCallback."""
        self._require_login()
        response = await self._api.post("/app/v1/authCode", json={"scopes": "BASE_USER_INFO"})
        response.raise_for_status()
        return str(response.json()["authCode"])

    def _require_login(self) -> None:
        if self.customer_id is None:
            raise NotSignedIn("Sign in to the wallet first.")


def _result_page(response: httpx.Response) -> PaymentResult:
    page = _ResultPage()
    page.feed(response.text)
    return PaymentResult(page.status or f"HTTP {response.status_code}", Destination.RESULT_PAGE, str(response.url))


class _ResultPage(HTMLParser):
    """Our result page's ``<p id="status">``."""

    def __init__(self) -> None:
        super().__init__()
        self.status = ""
        self._in_status = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_status = dict(attrs).get("id") == "status"

    def handle_data(self, data: str) -> None:
        if self._in_status:
            self.status += data.strip()

    def handle_endtag(self, tag: str) -> None:
        self._in_status = False


__all__ = [
    "AmountPrompt",
    "Destination",
    "DeviceInfo",
    "NotSignedIn",
    "PaymentPage",
    "PaymentResult",
    "ScanOutcome",
    "Verdict",
    "WalletApp",
]
