"""The role of Alipay+'s client SDK inside the wallet app (seed 003, steps 1, 2 and 4).

In the real app this is Ant's library; here it speaks the same messages (``alipayplus.sdk``)
with the sandbox Alipay+ so the whole merchant-presented flow runs on one machine:
a session from an authCode the app obtains from our server (getAuthCode → authCallback),
acceptance-mark logos from a cached configuration, and decode, including an entry code's
detour through the merchant's cashier page and the interception of the Alipay+ URL.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Literal, TypeVar
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

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
AnswerT = TypeVar("AnswerT", CreateSessionResponse, DecodeResponse, FetchConfigResponse)
AmountPrompt = Callable[[str], str | Awaitable[str]]  # the cashier page's HTML → the amount typed (major units)

# Mobile country codes of the regions Alipay+ serves in the sandbox (ITU-T E.212).
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
    "Asia/Bangkok": "TH",
    "Asia/Jakarta": "ID",
}
_ALIPAYPLUS_URL_PATH = "/aplus/decode"  # where a merchant's cashier page sends the user with the order code


@dataclass(frozen=True)
class DeviceInfo:
    """What the app knows of the phone: its OS, its carrier's country code, its time zone."""

    os: Literal["Android", "iOS"] = "Android"
    mcc: str | None = None
    time_zone: str | None = None

    @property
    def user_agent(self) -> str:
        system = "Android 14; Pixel 8" if self.os == "Android" else "iPhone; CPU iPhone OS 17_5 like Mac OS X"
        return f"Mozilla/5.0 ({system}) MppWallet/1.0"

    def region(self) -> str | None:
        """The user's region from the carrier, else from the time zone (seed 003, step 2)."""
        return _REGION_BY_MCC.get(self.mcc or "") or _REGION_BY_TIME_ZONE.get(self.time_zone or "")


@dataclass(frozen=True)
class DecodeOutcome:
    """What decode gives the app: our payment page to open, or why the code cannot be paid."""

    result: Result
    code_type: CodeType | None = None
    payment_request_id: str | None = None
    payment_url: str | None = None

    @property
    def message(self) -> str:
        return self.result.result_message or self.result.result_code


@dataclass
class _Session:
    session_id: str
    expires_at: datetime


@dataclass
class _Config:
    response: FetchConfigResponse
    fetched_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AlipayPlusClientSdk:
    def __init__(
        self,
        base_url: str,
        psp_id: str,
        get_auth_code: Callable[[], Awaitable[str]],
        device: DeviceInfo,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = _utc_now,
        config_ttl: timedelta = timedelta(minutes=60),
    ) -> None:
        self._psp_id = psp_id
        self._get_auth_code = get_auth_code
        self._device = device
        self._clock = clock
        self._config_ttl = config_ttl
        self._session: _Session | None = None
        self._config: _Config | None = None
        headers = {"User-Agent": device.user_agent}
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=10.0, headers=headers)
        # the web view: follows nothing by itself, so the SDK can intercept the Alipay+ URL
        self._web_view = httpx.AsyncClient(transport=transport, timeout=10.0, headers=headers, follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._web_view.aclose()

    def forget_session(self) -> None:
        """On logout: the next decode needs a new authCode."""
        self._session = None

    # --- step 1: the session ---------------------------------------------------------------

    async def ensure_session(self) -> str | Result:
        """The live session's id, creating one from a fresh authCode when needed; else why not."""
        if self._session and self._session.expires_at > self._clock():
            return self._session.session_id
        auth_code = await self._get_auth_code()
        answer = await self._call(CreateSessionRequest(auth_code=auth_code, psp_id=self._psp_id), CreateSessionResponse)
        if not answer.result.is_success or not answer.session_id:
            return answer.result
        expires_at = answer.session_expiry_time or self._clock() + timedelta(minutes=30)
        self._session = _Session(answer.session_id, expires_at)
        return answer.session_id

    # --- step 2: the scan page's acceptance marks -------------------------------------------

    async def get_acceptance_mark_logos(self, region: str | None = None) -> list[AcceptanceMarkLogo]:
        """Logos for ``region``, or for where the phone is; ``[]`` where Alipay+ is not available."""
        config = await self._configuration()
        where = region or self._device.region()
        marks = next((marks for marks in config.acceptance_marks if marks.region == where), None)
        return list(marks.logos) if marks else []

    async def _configuration(self) -> FetchConfigResponse:
        now = self._clock()
        if self._config is None or now - self._config.fetched_at >= self._config_ttl:
            self._config = _Config(await self._call(FetchConfigRequest(sdk_version="1.0"), FetchConfigResponse), now)
        return self._config.response

    # --- step 4: decode ---------------------------------------------------------------------

    async def decode(self, code_value: str, *, enter_amount: AmountPrompt | None = None) -> DecodeOutcome:
        """Decode a scanned Alipay+ code. An order code comes back with our payment page; an entry
        code first opens the merchant's cashier page, where ``enter_amount`` types the amount."""
        answer = await self._decode(code_value)
        if answer.result.is_success and answer.code_type is CodeType.ENTRY_CODE and answer.redirect_url:
            if enter_amount is None:
                return DecodeOutcome(Result.of(ResultCode.PROCESS_FAIL, "This code needs an amount entered."))
            order_code = await self._order_code_from_cashier(answer.redirect_url, enter_amount)
            if isinstance(order_code, DecodeOutcome):
                return order_code
            answer = await self._decode(order_code)
        return DecodeOutcome(answer.result, answer.code_type, answer.payment_request_id, answer.payment_url)

    async def _decode(self, code_value: str) -> DecodeResponse:
        for _ in range(2):  # a session Alipay+ has dropped is re-created once
            session = await self.ensure_session()
            if isinstance(session, Result):
                return DecodeResponse(result=session)
            answer = await self._call(DecodeRequest(session_id=session, code_value=code_value), DecodeResponse)
            if answer.result.result_code != ResultCode.SESSION_EXPIRED:
                return answer
            self._session = None
        return answer

    async def _order_code_from_cashier(self, cashier_url: str, enter_amount: AmountPrompt) -> str | DecodeOutcome:
        """Open the merchant's page, type the amount, and catch the redirect to the Alipay+ URL."""
        page = await self._web_view.get(cashier_url)
        form = _Form.parse(page.text)
        typed = enter_amount(page.text)
        amount = await typed if inspect.isawaitable(typed) else typed
        submitted = await self._web_view.post(
            urljoin(cashier_url, form.action or cashier_url), data={**form.hidden, form.amount_field: str(amount)}
        )
        location = submitted.headers.get("location", "")
        target = urlsplit(urljoin(cashier_url, location))
        code_values = parse_qs(target.query).get("codeValue")
        if submitted.is_redirect and target.path.endswith(_ALIPAYPLUS_URL_PATH) and code_values:
            return code_values[0]
        return DecodeOutcome(Result.of(ResultCode.PROCESS_FAIL, "The merchant's page did not accept the amount."))

    async def _call(
        self, request: CreateSessionRequest | DecodeRequest | FetchConfigRequest, answer_type: type[AnswerT]
    ) -> AnswerT:
        response = await self._http.post(
            request.PATH, content=request.to_wire(), headers={"Content-Type": "application/json"}
        )
        response.raise_for_status()
        return answer_type.from_wire(response.content)


class _Form(HTMLParser):
    """The first form on a page: its action, hidden fields and the amount input's name."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.amount_field = "amount"
        self._in_form = False

    @classmethod
    def parse(cls, page: str) -> _Form:
        form = cls()
        form.feed(page)
        return form

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self._in_form, self.action = True, values.get("action", "")
        elif tag == "input" and self._in_form and values.get("name"):
            if values.get("type") == "hidden":
                self.hidden[values["name"]] = values.get("value", "")
            elif values.get("type", "text") in ("text", "number"):
                self.amount_field = values["name"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
