"""The wallet user on the MPP's Auto Debit consent page (spec §7.3), as the merchant's flow sends them.

After ``prepare``, Alipay+ hands the merchant the MPP's ``authUrl``; the merchant opens it in the
wallet app, where the user is signed in. This is that user: signs in (``POST /app/v1/login``, the
session as a Bearer token, as the app's web view carries it), opens the page, posts its form with
``agree`` or ``decline``, and reads where the MPP sends the browser: a 303 to the merchant's
``authRedirectUrl`` with ``authCode`` and ``authState``. It follows no redirect, so the code is read
from the Location as the merchant's page would read it.

A plain HTTP client: the page is the MPP's, not a signed Alipay+ API.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

ConsentAction = Literal["agree", "decline"]
LOGIN_PATH = "/app/v1/login"


@dataclass(frozen=True)
class ConsentDecision:
    """Where the consent page sent the user: the redirect's authCode and authState, if any."""

    status_code: int
    location: str | None  # the merchant's authRedirectUrl with authCode and authState (303), else None
    auth_code: str | None
    auth_state: str | None
    page: str  # what the MPP showed instead of a redirect ("Not linked", "Linked", a refusal)

    @property
    def agreed(self) -> bool:
        return self.status_code == 303 and self.auth_code is not None


class ConsentForm(HTMLParser):
    """The consent page's first form: its action, its hidden fields and the actions its buttons post."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.actions: set[str] = set()
        self._in_form = False

    @classmethod
    def parse(cls, html: str) -> ConsentForm:
        form = cls()
        form.feed(html)
        form.close()
        return form

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self._in_form = True
            self.action = values.get("action", "")
        elif self._in_form and tag in ("button", "input") and values.get("name") == "action":
            self.actions.add(values.get("value", ""))
        elif self._in_form and tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.hidden[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


class ConsentError(Exception):
    """The consent page could not be used (not signed in, no form, no such action)."""


class ConsentBrowser:
    """One signed-in wallet user following consent pages of the MPP at ``api_url``."""

    def __init__(self, api_url: str, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0):
        self._api_url = api_url.rstrip("/")
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
        self.customer_id: str | None = None

    async def login(self, login_id: str, pin: str) -> str:
        """Sign in as the wallet app does; the session rides as a Bearer token. Returns the customerId."""
        response = await self._http.post(f"{self._api_url}{LOGIN_PATH}", json={"loginId": login_id, "pin": pin})
        if response.status_code != 200:
            raise ConsentError(f"login as {login_id} refused: HTTP {response.status_code}")
        body = response.json()
        self._http.headers["Authorization"] = f"Bearer {body['sessionToken']}"
        self.customer_id = str(body["customerId"])
        return self.customer_id

    async def open(self, auth_url: str) -> ConsentForm:
        page = await self._http.get(auth_url)
        if page.status_code != 200:
            raise ConsentError(f"consent page {auth_url}: HTTP {page.status_code}")
        form = ConsentForm.parse(page.text)
        if form.action is None:
            raise ConsentError(f"consent page {auth_url} has no form")
        return form

    async def decide(self, auth_url: str, action: ConsentAction = "agree") -> ConsentDecision:
        """Open ``auth_url`` and press ``action``; a 303's Location names authCode and authState."""
        form = await self.open(auth_url)
        if action not in form.actions:
            raise ConsentError(f"consent page offers {sorted(form.actions)}, not {action}")
        target = urljoin(auth_url, form.action or "")
        answer = await self._http.post(target, data={**form.hidden, "action": action})
        location = answer.headers.get("location") if answer.status_code in (302, 303) else None
        query = parse_qs(urlsplit(location).query) if location else {}
        return ConsentDecision(
            status_code=answer.status_code,
            location=location,
            auth_code=query.get("authCode", [None])[0],
            auth_state=query.get("authState", [None])[0],
            page=answer.text,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ConsentBrowser:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
