"""The role of Alipay+'s client SDK inside the wallet app (seed 003, steps 1, 2 and 4).

In the real app this is Ant's library; here it speaks the same messages (``alipayplus.sdk``)
with the sandbox Alipay+ so the whole merchant-presented flow runs on one machine:
a session from an authCode the app obtains from our server (getAuthCode → authCallback),
acceptance-mark logos from a cached configuration, and decode, including an entry code's
detour through the merchant's cashier page and the interception of the Alipay+ URL.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Literal, Self, TypeVar
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from pydantic import ValidationError

from alipayplus import Result, ResultCode
from alipayplus.sdk import (
    AcceptanceMarkLogo,
    CodeType,
    CreateSessionRequest,
    CreateSessionResponse,
    DecodeRequest,
    DecodeResponse,
    FetchConfigRequest,
    FetchConfigResponse,
)

Clock = Callable[[], datetime]
# The cashier page's HTML → the amount the user types, in major units ("12.50").
AmountPrompt = Callable[[str], str | Decimal | Awaitable[str | Decimal]]
_AnswerT = TypeVar("_AnswerT", CreateSessionResponse, DecodeResponse, FetchConfigResponse)

# Mobile country codes (ITU-T E.212) of the regions Alipay+ serves in the sandbox.
_REGION_BY_MCC = {
    "525": "SG",
    "454": "HK",
    "440": "JP",
    "441": "JP",
    "450": "KR",
    "502": "MY",
    "520": "TH",
    "510": "ID",
}
_REGION_BY_TIME_ZONE = {
    "Asia/Singapore": "SG",
    "Asia/Hong_Kong": "HK",
    "Asia/Tokyo": "JP",
    "Asia/Seoul": "KR",
    "Asia/Kuala_Lumpur": "MY",
    "Asia/Kuching": "MY",
    "Asia/Bangkok": "TH",
    "Asia/Jakarta": "ID",
    "Asia/Pontianak": "ID",
    "Asia/Makassar": "ID",
    "Asia/Jayapura": "ID",
}
_USER_AGENTS = {
    "Android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) MppWallet/1.0",
    "iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) MppWallet/1.0",
}
# What the user reads when a code cannot be paid (seed 003, step 4: say why, encourage a retry).
_USER_MESSAGES: dict[str, str] = {
    ResultCode.INVALID_CODE: "This code is not valid. Check you scanned the merchant's Alipay+ code and try again.",
    ResultCode.EXPIRED_CODE: "This code has expired. Ask the merchant for a new code and scan again.",
    ResultCode.SESSION_EXPIRED: "Alipay+ could not be reached just now. Scan the code again.",
    ResultCode.UNKNOWN_EXCEPTION: "Alipay+ could not be reached just now. Scan the code again.",
}
_FALLBACK_MESSAGE = "This code cannot be paid just now. Try again later."
_ALIPAYPLUS_URL_PATH = "/aplus/decode"  # where a cashier page sends the user with the order code
_MAX_REDIRECTS = 5  # a web view follows a few hops between merchant pages, no more
_TIMEOUT = 10.0


@dataclass(frozen=True)
class DeviceInfo:
    """What the app knows of the phone: its OS, its carrier's country code, its time zone."""

    os: Literal["Android", "iOS"] = "Android"
    mcc: str | None = None  # the serving network's mobile country code, None without a SIM
    time_zone: str | None = None  # IANA, e.g. "Asia/Singapore"
    user_agent: str = ""  # empty: a typical one for ``os`` (our pages read the OS from it)

    def __post_init__(self) -> None:
        if not self.user_agent:
            object.__setattr__(self, "user_agent", _USER_AGENTS[self.os])

    def region(self) -> str | None:
        """Where the phone is (seed 003, step 2): the carrier says it; without one, the time zone.

        A carrier outside the table is a region without Alipay+, even if the clock says
        otherwise: a phone's time zone is a setting, its network is where it is.
        """
        if self.mcc:
            return _REGION_BY_MCC.get(self.mcc)
        return _REGION_BY_TIME_ZONE.get(self.time_zone or "")


@dataclass(frozen=True)
class DecodeOutcome:
    """What decode gives the app: our payment page to open, or why the code cannot be paid."""

    result: Result
    code_value: str  # the code decoded last: for an entry code, the order code its cashier page made
    code_type: CodeType | None = None
    payment_request_id: str | None = None
    payment_url: str | None = None

    @property
    def result_code(self) -> str:
        return self.result.result_code

    @property
    def message(self) -> str:
        """What to show the user: our words for the codes the seed names, else Alipay+'s."""
        return _USER_MESSAGES.get(self.result_code) or self.result.result_message or _FALLBACK_MESSAGE


class AlipayPlusSdkError(Exception):
    """Alipay+ (or the merchant's page) did not answer as hoped; ``result`` says what to show."""

    def __init__(self, result: Result) -> None:
        super().__init__(f"{result.result_status}/{result.result_code}: {result.result_message}")
        self.result = result


@dataclass(frozen=True)
class _Session:
    session_id: str
    expires_at: datetime


@dataclass(frozen=True)
class _Config:
    response: FetchConfigResponse
    fetched_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _failure(message: str, code: ResultCode = ResultCode.PROCESS_FAIL) -> AlipayPlusSdkError:
    return AlipayPlusSdkError(Result.of(code, message))


class AlipayPlusClientSdk:
    """One per signed-in app: a session, a configuration cache and a web view of its own."""

    def __init__(
        self,
        base_url: str,
        psp_id: str,
        get_auth_code: Callable[[], Awaitable[str]],
        device: DeviceInfo,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        config_ttl: timedelta = timedelta(minutes=60),
    ) -> None:
        self._psp_id = psp_id
        self._get_auth_code = get_auth_code
        self._device = device
        self._clock = clock or _utc_now
        self._config_ttl = config_ttl
        self._session: _Session | None = None
        self._session_lock = asyncio.Lock()  # concurrent decodes share one new session
        self._config: _Config | None = None
        headers = {"User-Agent": device.user_agent}
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=_TIMEOUT, headers=headers)
        # the web view follows nothing by itself, so the SDK sees (and intercepts) the Alipay+ URL
        self._web_view = httpx.AsyncClient(
            transport=transport, timeout=_TIMEOUT, headers=headers, follow_redirects=False
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._web_view.aclose()

    def forget_session(self) -> None:
        """On logout (or another user's login): the next decode needs a new authCode."""
        self._session = None

    # --- step 1: the session ---------------------------------------------------------------

    async def ensure_session(self) -> str:
        """The live session's id, created from a fresh authCode when there is none.

        Raises ``AlipayPlusSdkError`` when Alipay+ refuses (e.g. our applyToken said USED_CODE);
        whatever ``get_auth_code`` raises (the app is signed out) goes to the caller as is.
        """
        async with self._session_lock:
            if self._session and self._session.expires_at > self._clock():
                return self._session.session_id
            auth_code = await self._get_auth_code()
            request = CreateSessionRequest(auth_code=auth_code, psp_id=self._psp_id)
            answer = await self._call(request, CreateSessionResponse)
            if not answer.result.is_success or not answer.session_id:
                raise AlipayPlusSdkError(answer.result)
            expires_at = answer.session_expiry_time or self._clock() + timedelta(minutes=30)  # the seed's default
            self._session = _Session(answer.session_id, expires_at)
            return answer.session_id

    # --- step 2: the scan page's acceptance marks -------------------------------------------

    async def get_acceptance_mark_logos(self, region: str | None = None) -> list[AcceptanceMarkLogo]:
        """Logos for ``region``, else for where the phone is; ``[]`` where Alipay+ is not available."""
        where = region.upper() if region else self._device.region()
        config = await self._configuration()
        if where is None or config is None:
            return []
        marks = next((marks for marks in config.acceptance_marks if marks.region == where), None)
        return list(marks.logos) if marks else []

    async def _configuration(self) -> FetchConfigResponse | None:
        """The cached configuration, pulled again once ``config_ttl`` has passed.

        A failed pull keeps the stale one (the scan page still shows logos) and is retried
        on the next call; with nothing cached the scan page shows none.
        """
        now = self._clock()
        if self._config is None or now - self._config.fetched_at >= self._config_ttl:
            try:
                answer = await self._call(FetchConfigRequest(sdk_version="1.0"), FetchConfigResponse)
            except AlipayPlusSdkError:
                answer = None
            if answer is not None and answer.result.is_success:
                self._config = _Config(answer, now)
        return self._config.response if self._config else None

    # --- step 4: decode ---------------------------------------------------------------------

    async def decode(self, code_value: str, *, enter_amount: AmountPrompt | None = None) -> DecodeOutcome:
        """Decode a scanned Alipay+ code.

        An order code comes back with our payment page. An entry code first opens the
        merchant's cashier page, where ``enter_amount`` (given the page) types the amount;
        the page then sends the web view to the Alipay+ URL, which is intercepted and the
        order code in it decoded. Refusals come back as an outcome with the message to show.
        """
        try:
            answer = await self._decode(code_value)
            if answer.result.is_success and answer.code_type is CodeType.ENTRY_CODE:
                if not answer.redirect_url:
                    raise _failure("Alipay+ gave no merchant page for this code.")
                if enter_amount is None:
                    raise _failure("This code needs the amount entered on the merchant's page.")
                code_value = await self._order_code_from_cashier(answer.redirect_url, enter_amount)
                answer = await self._decode(code_value)
        except AlipayPlusSdkError as refused:
            return DecodeOutcome(refused.result, code_value)
        if answer.result.is_success and not answer.payment_url:  # nothing to open: not payable here
            nothing = Result.of(ResultCode.PROCESS_FAIL, "Alipay+ gave no payment page for this code.")
            return DecodeOutcome(nothing, code_value, answer.code_type, answer.payment_request_id)
        return DecodeOutcome(answer.result, code_value, answer.code_type, answer.payment_request_id, answer.payment_url)

    async def _decode(self, code_value: str) -> DecodeResponse:
        answer = await self._decode_once(code_value)
        if answer.result.result_code == ResultCode.SESSION_EXPIRED:  # dropped before its expiry time
            self.forget_session()
            answer = await self._decode_once(code_value)  # a new session, once
        return answer

    async def _decode_once(self, code_value: str) -> DecodeResponse:
        request = DecodeRequest(session_id=await self.ensure_session(), code_value=code_value)
        return await self._call(request, DecodeResponse)

    async def _order_code_from_cashier(self, cashier_url: str, enter_amount: AmountPrompt) -> str:
        """Open the merchant's page, type the amount, and catch the redirect to the Alipay+ URL."""
        page = await self._browse(self._web_view.build_request("GET", cashier_url))
        if isinstance(page, str):
            return page  # the merchant needed no amount after all
        if page.is_error:
            raise _failure(f"The merchant's page did not open (HTTP {page.status_code}).")
        form = _Form.parse(page.text)
        if form.amount_field is None:
            raise _failure("The merchant's page has no amount to enter.")
        typed = enter_amount(page.text)
        amount = await typed if inspect.isawaitable(typed) else typed
        fields = {**form.hidden, form.amount_field: format(amount, "f") if isinstance(amount, Decimal) else amount}
        target = urljoin(str(page.url), form.action or str(page.url))
        if form.method == "get":
            submitted = self._web_view.build_request("GET", target, params=fields)
        else:
            submitted = self._web_view.build_request("POST", target, data=fields)
        answered = await self._browse(submitted)
        if isinstance(answered, str):
            return answered
        problem = _Form.parse(answered.text).error  # the cashier page again, saying what to fix
        raise _failure(problem or "The merchant's page did not accept the amount.")

    async def _browse(self, request: httpx.Request) -> httpx.Response | str:
        """What the web view shows for ``request``, or the code value of the Alipay+ URL it was sent to."""
        for _ in range(_MAX_REDIRECTS + 1):
            code_value = _alipayplus_url_code(str(request.url))
            if code_value:
                return code_value
            try:
                response = await self._web_view.send(request)
            except httpx.HTTPError as exc:
                raise _failure(f"The merchant's page did not open: {exc}") from exc
            if not response.is_redirect:
                return response
            request = self._web_view.build_request("GET", urljoin(str(request.url), response.headers["location"]))
        raise _failure("The merchant's page redirected too often.")

    async def _call(
        self, request: CreateSessionRequest | DecodeRequest | FetchConfigRequest, answer_type: type[_AnswerT]
    ) -> _AnswerT:
        """Alipay+ always answers HTTP 200 with a result; anything else is U: try again."""
        try:
            response = await self._http.post(
                request.PATH, content=request.to_wire(), headers={"Content-Type": "application/json"}
            )
            response.raise_for_status()
            return answer_type.from_wire(response.content)
        except (httpx.HTTPError, ValidationError) as exc:
            raise _failure(f"Alipay+ gave no usable answer: {exc}", ResultCode.UNKNOWN_EXCEPTION) from exc


def _alipayplus_url_code(url: str) -> str | None:
    """The code value of an Alipay+ URL (seed 003, step 15), ``None`` for any other address."""
    parts = urlsplit(url)
    if not parts.path.endswith(_ALIPAYPLUS_URL_PATH):
        return None
    values = parse_qs(parts.query).get("codeValue")
    return values[0] if values else None


class _Form(HTMLParser):
    """A cashier page: its first form (action, method, hidden fields, the amount input) and any error."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"  # HTML's default
        self.hidden: dict[str, str] = {}
        self.amount_field: str | None = None
        self.error = ""
        self._forms_seen = 0
        self._in_form = False
        self._error_tag: str | None = None  # the open element marked as the page's error message

    @classmethod
    def parse(cls, page: str) -> _Form:
        form = cls()
        form.feed(page)
        form.close()
        return form

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if self._error_tag is None and (values.get("id") == "error" or values.get("role") == "alert"):
            self._error_tag = tag
        if tag == "form":
            self._forms_seen += 1
            self._in_form = self._forms_seen == 1
            if self._in_form:
                self.action = values.get("action") or None
                self.method = (values.get("method") or "get").lower()
        elif tag == "input" and self._in_form and values.get("name"):
            kind = values.get("type", "text").lower()
            if kind == "hidden":
                self.hidden[values["name"]] = values.get("value", "")
            elif kind in ("text", "number", "tel") and (self.amount_field is None or values["name"] == "amount"):
                self.amount_field = values["name"]

    def handle_endtag(self, tag: str) -> None:
        if tag == self._error_tag:
            self._error_tag = None
        if tag == "form":
            self._in_form = False

    def handle_data(self, data: str) -> None:
        if self._error_tag is not None:
            self.error = f"{self.error} {data.strip()}".strip()


__all__ = [
    "AlipayPlusClientSdk",
    "AlipayPlusSdkError",
    "AmountPrompt",
    "DecodeOutcome",
    "DeviceInfo",
]
