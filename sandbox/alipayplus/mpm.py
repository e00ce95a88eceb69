"""Merchant-presented mode (seed 003) on the sandbox Alipay+: what the client SDK and the merchant meet.

``SandboxMpm`` is Alipay+'s MPM memory: client-SDK sessions (made from OUR applyToken), the
merchants' order codes and stores' entry codes, FX rates, and every pay it sent us.
``mpm_router`` serves it: the client SDK's fetchConfig / createSession / decode (plain JSON, as
the SDK speaks to Alipay+), and the merchant's side (order codes, entry codes, the cashier page,
the result page) as local-only sandbox controls. Decoding an order code makes Alipay+ call our
signed ``pay`` through ``AlipayPlusDriver``.
"""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import Field

from alipayplus import (
    Amount,
    ApplyTokenResponse,
    CamelModel,
    Merchant,
    NotifyPaymentRequest,
    Order,
    PayRequest,
    PayResponse,
    Result,
    ResultCode,
    ResultStatus,
    TransportError,
    minor_unit_exponent,
)
from alipayplus.messages import MerchantAddress, Store
from alipayplus.sdk import (
    AcceptanceMarkLogo,
    CodeType,
    CreateSessionRequest,
    CreateSessionResponse,
    DecodeRequest,
    DecodeResponse,
    FetchConfigRequest,
    FetchConfigResponse,
    RegionAcceptanceMarks,
)
from sandbox._http import answer_sdk_call, local_only
from sandbox.code_service import ENTRY_CODE_PREFIX, ORDER_CODE_PREFIX

from .driver import _UTC8, MPM_PAYMENT_EXPIRY, PSP_ID, AlipayPlusDriver, apply_token_request, mpm_order, request_id
from .peer import Received, SandboxAlipayPlus

if TYPE_CHECKING:
    from wallet.settings import Settings

logger = logging.getLogger(__name__)

PayHook = Callable[[PayRequest], Awaitable[None]]
SESSION_TTL = timedelta(minutes=30)  # seed 003, step 1.3: set by Alipay+ for security reasons
CODE_EXPIRY = timedelta(seconds=120)
CONFIG_VERSION = "sandbox-1"

EXPIRED_CODE_MESSAGE = "This code has expired. Ask the merchant for a new code and scan again."
INVALID_CODE_MESSAGE = "This code is not valid. Check you scanned the merchant's Alipay+ code and try again."
USED_CODE_MESSAGE = "This code has already been paid by someone else. Ask the merchant for a new code."


@dataclass(frozen=True)
class SandboxStore:
    """A merchant's store that has a static entry code (the user types the amount in)."""

    store_id: str
    currency: str
    merchant: Merchant  # with its store and address, as the pay request's order carries it

    @property
    def name(self) -> str:
        store = self.merchant.store
        return (store.store_name if store else None) or self.store_id


def _store(store_id: str, currency: str, name: str, mcc: str, region: str, city: str, merchant_id: str) -> SandboxStore:
    merchant = Merchant(
        reference_merchant_id=merchant_id,
        merchant_mcc=mcc,
        merchant_name=name,
        merchant_display_name=name,
        merchant_address=MerchantAddress(region=region, city=city),
        store=Store(reference_store_id=store_id, store_name=f"{name} {city}", store_mcc=mcc),
    )
    return SandboxStore(store_id=store_id, currency=currency, merchant=merchant)


DEFAULT_STORES: tuple[SandboxStore, ...] = (
    _store("SG-KOPI-01", "SGD", "Sandbox Kopitiam", "5814", "SG", "Singapore", "2188120040000001"),
    _store("HK-TEA-01", "HKD", "Sandbox Tea House", "5814", "HK", "Hong Kong", "2188120040000002"),
    _store("JP-SHOES-01", "JPY", "Sandbox Shoes", "5661", "JP", "Tokyo", "2188120040000003"),
    _store("KR-MART-01", "KRW", "Sandbox Mart", "5411", "KR", "Seoul", "2188120040000004"),
)

# quotePrice per "FROM/TO" pair: 1 major unit of FROM in major units of TO.
DEFAULT_EXCHANGE_RATES: Mapping[str, Decimal] = {
    "SGD/IDR": Decimal("12150.75"),
    "HKD/IDR": Decimal("2085.40"),
    "JPY/IDR": Decimal("105.2850"),
    "KRW/IDR": Decimal("11.7325"),
    "MYR/IDR": Decimal("3520.10"),
    "THB/IDR": Decimal("455.60"),
    "USD/IDR": Decimal("16250.00"),
}

# The logos the client SDK shows on the Scan page, per region: Alipay+ and local wallets.
ACCEPTANCE_MARKS: Mapping[str, tuple[str, ...]] = {
    "SG": ("Alipay+",),
    "HK": ("Alipay+", "AlipayHK"),
    "JP": ("Alipay+",),
    "KR": ("Alipay+", "Kakao Pay", "NAVER Pay", "Toss Pay"),
    "MY": ("Alipay+", "Touch 'n Go eWallet"),
    "TH": ("Alipay+", "TrueMoney"),
    "ID": ("Alipay+", "DANA"),
}


class NoExchangeRate(ValueError):
    """The sandbox has no rate to quote the merchant's currency into the MPP's."""


@dataclass
class MpmSession:
    """A client-SDK session: the user our applyToken named, and the token to pay as them."""

    session_id: str
    customer_id: str
    access_token: str
    access_token_expires_at: datetime | None
    expires_at: datetime


@dataclass
class OrderCode:
    """A merchant's order code; ``payment`` is built at the first decode and re-sent after."""

    code_value: str
    order: Order
    code_expires_at: datetime
    payment_expires_in: timedelta
    redirect_url: str | None = None
    payment: PayRequest | None = None

    @property
    def reference_order_id(self) -> str:
        return self.order.reference_order_id


@dataclass(frozen=True)
class PayExchange:
    """One pay Alipay+ sent us and what came back (``response`` None: no usable answer)."""

    request: PayRequest
    response: PayResponse | None
    error: str | None
    sent_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "request": json.loads(self.request.to_wire()),
            "response": json.loads(self.response.to_wire()) if self.response else None,
            "error": self.error,
            "sentAt": self.sent_at.isoformat(),
        }


class OrderCodeRequest(CamelModel):
    """The merchant/ACQP asks Alipay+ for an order code (a sandbox control)."""

    amount: Amount
    description: str = Field(min_length=1, max_length=256)
    code_expires_in_seconds: int = Field(default=int(CODE_EXPIRY.total_seconds()), gt=0)
    payment_expires_in_seconds: int = Field(default=int(MPM_PAYMENT_EXPIRY.total_seconds()), gt=0)
    redirect_url: str | None = None
    store_id: str | None = None  # default: the first store charging in the amount's currency


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _fail(code: ResultCode, message: str | None = None) -> DecodeResponse:
    return DecodeResponse(result=Result.of(code, message))


def _order_decoded(payment: PayRequest, result: Result, payment_url: str | None = None) -> DecodeResponse:
    return DecodeResponse(
        result=result,
        code_type=CodeType.ORDER_CODE,
        payment_request_id=payment.payment_request_id,
        payment_url=payment_url,
    )


def parse_major_amount(text: str, currency: str) -> Amount:
    """What a person types on the cashier page ("12.50") as minor units; ValueError says what to fix."""
    exponent = minor_unit_exponent(currency)
    example = "12" if exponent == 0 else f"12.{'5'.ljust(exponent, '0')}"
    try:
        major = Decimal(text.strip())
    except InvalidOperation:
        major = Decimal("NaN")
    if not major.is_finite():
        raise ValueError(f"Enter the amount in {currency}, e.g. {example}.")
    minor = major.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise ValueError(f"Enter the amount in {currency} with at most {exponent} decimals, e.g. {example}.")
    if not 0 < minor < 10**18:
        raise ValueError(f"Enter an amount above zero in {currency}, e.g. {example}.")
    return Amount(currency=currency, value=int(minor))


class SandboxMpm:
    """Alipay+'s merchant-presented mode, with ``driver`` to call OUR applyToken and pay.

    ``base_url`` is where this sandbox is served (cashier pages, the result page, notifyPayment);
    ``clock`` is injectable so tests can age sessions and codes; ``on_pay_in_process`` (async) is
    called once per payment we answer U, as Alipay+ then starts inquiring; ``peer`` lets the
    merchant's result page show the result our notifyPayment reported.
    """

    def __init__(
        self,
        driver: AlipayPlusDriver,
        base_url: str,
        *,
        psp_id: str = PSP_ID,
        mpp_currency: str = "IDR",
        session_ttl: timedelta = SESSION_TTL,
        exchange_rates: Mapping[str, Decimal] = DEFAULT_EXCHANGE_RATES,
        stores: Iterable[SandboxStore] = DEFAULT_STORES,
        clock: Callable[[], datetime] = _utc_now,
        on_pay_in_process: PayHook | None = None,
        peer: SandboxAlipayPlus | None = None,
    ) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.psp_id = psp_id
        self.mpp_currency = mpp_currency
        self.session_ttl = session_ttl
        self.exchange_rates: dict[str, Decimal] = dict(exchange_rates)
        self.stores: dict[str, SandboxStore] = {store.store_id: store for store in stores}
        if not self.stores:
            raise ValueError("the sandbox needs at least one store to issue codes for")
        self.clock = clock
        self.on_pay_in_process = on_pay_in_process
        self.peer = peer
        self.config_fetches = 0
        self.sessions: dict[str, MpmSession] = {}
        self.refresh_tokens: dict[str, str] = {}  # by customerId: Alipay+ keeps the latest
        self.order_codes: dict[str, OrderCode] = {}  # by code value
        self.pay_exchanges: list[PayExchange] = []
        self._inquiring: set[str] = set()  # paymentRequestIds the hook has been told about

    @classmethod
    def from_settings(
        cls, settings: Settings, driver: AlipayPlusDriver, *, peer: SandboxAlipayPlus | None = None
    ) -> SandboxMpm:
        return cls(driver, settings.alipayplus_base_url, psp_id=settings.psp_id, peer=peer)

    # --- client SDK: fetchConfig, createSession, decode ----------------------------------

    def fetch_config(self, request: FetchConfigRequest) -> FetchConfigResponse:
        self.config_fetches += 1
        marks = [
            RegionAcceptanceMarks(
                region=region,
                logos=[AcceptanceMarkLogo(name=name, logo_url=self.logo_url(name)) for name in names],
            )
            for region, names in ACCEPTANCE_MARKS.items()
        ]
        return FetchConfigResponse(result=Result.success(), config_version=CONFIG_VERSION, acceptance_marks=marks)

    async def create_session(self, request: CreateSessionRequest) -> CreateSessionResponse:
        """Exchange the authCode through OUR applyToken; an F answer (USED_CODE, ...) goes back as is."""
        if request.psp_id != self.psp_id:
            message = f"pspId: {request.psp_id!r} is not an MPP this sandbox knows ({self.psp_id!r})"
            return CreateSessionResponse(result=Result.of(ResultCode.PARAM_ILLEGAL, message))
        try:
            answer = await self.driver.apply_token(apply_token_request(auth_code=request.auth_code, psp_id=self.psp_id))
        except TransportError as exc:
            logger.warning("applyToken got no usable answer: %s", exc)
            return CreateSessionResponse(
                result=Result.of(ResultCode.UNKNOWN_EXCEPTION, "The wallet did not answer applyToken; try again")
            )
        if not answer.result.is_success:
            return CreateSessionResponse(result=answer.result)
        session = self._open_session(answer)
        if session is None:
            message = "applyToken answered S without accessToken and customerId"
            return CreateSessionResponse(result=Result.of(ResultCode.PROCESS_FAIL, message))
        return CreateSessionResponse(
            result=Result.success(),
            session_id=session.session_id,
            session_expiry_time=session.expires_at.astimezone(_UTC8).replace(microsecond=0),
        )

    async def decode(self, request: DecodeRequest) -> DecodeResponse:
        session = self._live_session(request.session_id)
        if session is None:
            return _fail(ResultCode.SESSION_EXPIRED)
        if request.code_value.startswith(ENTRY_CODE_PREFIX):
            return self._decode_entry_code(request.code_value)
        return await self._decode_order_code(request.code_value, session)

    def _open_session(self, answer: ApplyTokenResponse) -> MpmSession | None:
        if answer.access_token is None or answer.customer_id is None:
            return None
        if answer.refresh_token is not None:
            self.refresh_tokens[answer.customer_id] = answer.refresh_token
        session = MpmSession(
            session_id=secrets.token_urlsafe(24),
            customer_id=answer.customer_id,
            access_token=answer.access_token,
            access_token_expires_at=answer.access_token_expiry_time,
            expires_at=self.clock() + self.session_ttl,
        )
        self.sessions[session.session_id] = session
        return session

    def _live_session(self, session_id: str) -> MpmSession | None:
        session = self.sessions.get(session_id)
        if session is not None and self.clock() >= session.expires_at:
            del self.sessions[session_id]
            return None
        return session

    def _decode_entry_code(self, code_value: str) -> DecodeResponse:
        store = self.stores.get(code_value.removeprefix(ENTRY_CODE_PREFIX))
        if store is None:
            return _fail(ResultCode.INVALID_CODE, INVALID_CODE_MESSAGE)
        return DecodeResponse(
            result=Result.success(), code_type=CodeType.ENTRY_CODE, redirect_url=self.cashier_url(store.store_id)
        )

    async def _decode_order_code(self, code_value: str, session: MpmSession) -> DecodeResponse:
        order_code = self.order_codes.get(code_value)
        if order_code is None:
            return _fail(ResultCode.INVALID_CODE, INVALID_CODE_MESSAGE)
        if self.clock() >= order_code.code_expires_at:
            return _fail(ResultCode.EXPIRED_CODE, EXPIRED_CODE_MESSAGE)
        access_token = await self._current_access_token(session)
        if access_token is None:
            return _fail(ResultCode.SESSION_EXPIRED, "The session's access token could not be refreshed")
        if order_code.payment is None:
            try:
                order_code.payment = self._payment_for(order_code, session, access_token)
            except NoExchangeRate as exc:
                return _fail(ResultCode.CURRENCY_NOT_SUPPORT, str(exc))
        elif order_code.payment.payment_method.customer_id != session.customer_id:
            return _fail(ResultCode.USED_CODE, USED_CODE_MESSAGE)
        return await self._pay(order_code.payment)

    async def _current_access_token(self, session: MpmSession) -> str | None:
        """The session's access token, refreshed with the customer's refreshToken once it expired."""
        expires_at = session.access_token_expires_at
        if expires_at is None or self.clock() < expires_at:
            return session.access_token
        refresh_token = self.refresh_tokens.get(session.customer_id)
        if refresh_token is None:
            return None
        try:
            answer = await self.driver.apply_token(apply_token_request(refresh_token=refresh_token, psp_id=self.psp_id))
        except TransportError as exc:
            logger.warning("applyToken (refresh) got no usable answer: %s", exc)
            return None
        if not answer.result.is_success or answer.access_token is None:
            return None
        if answer.refresh_token is not None:
            self.refresh_tokens[session.customer_id] = answer.refresh_token
        session.access_token, session.access_token_expires_at = answer.access_token, answer.access_token_expiry_time
        return answer.access_token

    def _payment_for(self, order_code: OrderCode, session: MpmSession, access_token: str) -> PayRequest:
        now = self.clock()
        return mpm_order(
            request_id(now),
            order_code.order,
            access_token=access_token,
            customer_id=session.customer_id,
            psp_id=self.psp_id,
            pay_to_currency=self.mpp_currency,
            rate=self.rate_for(order_code.order.order_amount.currency),
            notify_url=f"{self.base_url}{NotifyPaymentRequest.PATH}",
            redirect_url=order_code.redirect_url,
            expires_in=order_code.payment_expires_in,
            now=now,
        )

    async def _pay(self, payment: PayRequest) -> DecodeResponse:
        try:
            answer = await self.driver.pay(payment)
        except TransportError as exc:
            self._record(payment, None, str(exc))
            await self._pay_in_process(payment)  # no answer is "unknown" to Alipay+: it inquires
            message = "The wallet did not answer the payment; check the payment in the wallet"
            return _order_decoded(payment, Result.of(ResultCode.UNKNOWN_EXCEPTION, message))
        self._record(payment, answer, None)
        if answer.result.result_status is ResultStatus.UNKNOWN:
            await self._pay_in_process(payment)
            if answer.result.result_code == ResultCode.PAYMENT_IN_PROCESS and answer.payment_url:
                return _order_decoded(payment, Result.success(), answer.payment_url)
        return _order_decoded(payment, Result.success() if answer.result.is_success else answer.result)

    async def _pay_in_process(self, payment: PayRequest) -> None:
        """Tell the hook once per payment (a re-decode re-sends the same pay)."""
        request_id = payment.payment_request_id
        if self.on_pay_in_process is None or request_id in self._inquiring:
            return
        try:
            await self.on_pay_in_process(payment)
        except Exception:
            # the user's decode must not fail because the inquiry schedule could not start
            logger.exception("on_pay_in_process failed for %s", request_id)
            return
        self._inquiring.add(request_id)

    def _record(self, request: PayRequest, response: PayResponse | None, error: str | None) -> None:
        self.pay_exchanges.append(PayExchange(request=request, response=response, error=error, sent_at=self.clock()))

    def payments(self, payment_request_id: str | None = None) -> list[PayExchange]:
        """pay calls sent to the MPP and their answers, oldest first, re-sends included."""
        return [
            exchange
            for exchange in self.pay_exchanges
            if payment_request_id is None or exchange.request.payment_request_id == payment_request_id
        ]

    # --- the merchant / ACQP: order codes, entry codes, cashier -----------------------------

    def rate_for(self, currency: str) -> Decimal | None:
        """The quotePrice from ``currency`` into the MPP's; None when no conversion is needed."""
        if currency == self.mpp_currency:
            return None
        pair = f"{currency}/{self.mpp_currency}"
        try:
            return self.exchange_rates[pair]
        except KeyError:
            raise NoExchangeRate(f"The sandbox has no {pair} exchange rate") from None

    def create_order_code(
        self,
        amount: Amount,
        description: str,
        *,
        store: SandboxStore | None = None,
        code_expires_in: timedelta = CODE_EXPIRY,
        payment_expires_in: timedelta = MPM_PAYMENT_EXPIRY,
        redirect_url: str | None = None,
    ) -> OrderCode:
        """A new order code for ``amount``; raises ``NoExchangeRate`` when it could not be quoted."""
        self.rate_for(amount.currency)  # refuse now a code that could never be paid
        store = store or self._store_charging(amount.currency)
        now = self.clock()
        order = Order(
            reference_order_id=f"SBX{now.astimezone(_UTC8):%Y%m%d%H%M%S}{secrets.token_hex(6)}",
            order_description=description,
            order_amount=amount,
            merchant=store.merchant,
        )
        order_code = OrderCode(
            code_value=ORDER_CODE_PREFIX + secrets.token_urlsafe(24),  # unguessable: the code is the order
            order=order,
            code_expires_at=now + code_expires_in,
            payment_expires_in=payment_expires_in,
            redirect_url=redirect_url,
        )
        self.order_codes[order_code.code_value] = order_code
        return order_code

    def cashier_order(self, store: SandboxStore, amount_text: str) -> OrderCode:
        """The order a person makes on a store's cashier page; ValueError says what to fix."""
        amount = parse_major_amount(amount_text, store.currency)
        order_code = self.create_order_code(amount, f"Purchase at {store.name}", store=store)
        order_code.redirect_url = self.result_url(order_code.reference_order_id)
        return order_code

    def _store_charging(self, currency: str) -> SandboxStore:
        stores = list(self.stores.values())
        return next((store for store in stores if store.currency == currency), stores[0])

    def entry_code(self, store: SandboxStore) -> str:
        return ENTRY_CODE_PREFIX + store.store_id

    def order_by_reference(self, reference_order_id: str) -> OrderCode | None:
        return next((c for c in self.order_codes.values() if c.reference_order_id == reference_order_id), None)

    def order_status(self, order_code: OrderCode) -> str:
        """What the merchant knows: success / fail from notifyPayment or a final pay answer, else
        processing once paid for, waiting before anyone decoded the code."""
        if order_code.payment is None:
            return "waiting"
        request_id = order_code.payment.payment_request_id
        results = [NotifyPaymentRequest.model_validate(r.body).payment_result for r in self._notices(request_id)]
        results += [e.response.result for e in self.payments(request_id) if e.response and e.response.result.is_final]
        if any(result.is_success for result in results):
            return "success"
        return "fail" if results else "processing"

    def _notices(self, payment_request_id: str) -> list[Received]:
        return self.peer.notifications(payment_request_id) if self.peer else []

    # --- addresses ------------------------------------------------------------------------

    def cashier_url(self, store_id: str) -> str:
        return f"{self.base_url}/sandbox/merchant/cashier/{store_id}"

    def result_url(self, reference_order_id: str) -> str:
        return f"{self.base_url}/sandbox/merchant/result?{urlencode({'referenceOrderId': reference_order_id})}"

    def alipayplus_url(self, code_value: str) -> str:
        """The "Alipay+ URL" the merchant redirects to and the client SDK intercepts (seed 003, step 14)."""
        return f"{self.base_url}/aplus/decode?{urlencode({'codeValue': code_value})}"

    def logo_url(self, name: str) -> str:
        return f"{self.base_url}/sandbox/logos/{_slug(name)}.svg"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("'", "")).strip("-")


# --- HTTP ------------------------------------------------------------------------------------


def mpm_router(mpm: SandboxMpm) -> APIRouter:
    """The client SDK's endpoints, the Alipay+ URL, logos, and the merchant's local controls."""
    router = APIRouter()

    @router.post(FetchConfigRequest.PATH)
    async def fetch_config(request: Request) -> Response:
        return await answer_sdk_call(
            request, FetchConfigRequest, mpm.fetch_config, lambda result: FetchConfigResponse(result=result)
        )

    @router.post(CreateSessionRequest.PATH)
    async def create_session(request: Request) -> Response:
        return await answer_sdk_call(
            request, CreateSessionRequest, mpm.create_session, lambda result: CreateSessionResponse(result=result)
        )

    @router.post(DecodeRequest.PATH)
    async def decode(request: Request) -> Response:
        return await answer_sdk_call(request, DecodeRequest, mpm.decode, lambda result: DecodeResponse(result=result))

    @router.get("/aplus/decode", response_class=HTMLResponse)
    async def alipayplus_url(codeValue: str = "") -> HTMLResponse:  # noqa: N803
        """Only a browser gets here: in the wallet the client SDK intercepts this address."""
        return _page(
            "Alipay+",
            "<p>Open this page in an Alipay+ wallet to pay.</p>"
            f"<p>Code: <code id=codeValue>{html.escape(codeValue)}</code></p>",
        )

    @router.get("/sandbox/logos/{slug}.svg")
    async def logo(slug: str) -> Response:
        names = {_slug(name): name for names in ACCEPTANCE_MARKS.values() for name in names}
        if slug not in names:
            raise HTTPException(status_code=404, detail="no such logo")
        return Response(content=_logo_svg(names[slug]), media_type="image/svg+xml")

    @router.get("/sandbox/mpm/payments", dependencies=[Depends(local_only)])
    async def payments(paymentRequestId: str | None = None) -> list[dict[str, Any]]:  # noqa: N803
        return [exchange.as_json() for exchange in mpm.payments(paymentRequestId)]

    router.include_router(_merchant_router(mpm))
    return router


def _merchant_router(mpm: SandboxMpm) -> APIRouter:
    router = APIRouter(prefix="/sandbox/merchant", dependencies=[Depends(local_only)])

    def store_or_404(store_id: str) -> SandboxStore:
        store = mpm.stores.get(store_id)
        if store is None:
            raise HTTPException(status_code=404, detail=f"no sandbox store {store_id!r}")
        return store

    @router.post("/orderCodes")
    async def create_order_code(body: OrderCodeRequest) -> dict[str, str]:
        store = store_or_404(body.store_id) if body.store_id else None
        try:
            order_code = mpm.create_order_code(
                body.amount,
                body.description,
                store=store,
                code_expires_in=timedelta(seconds=body.code_expires_in_seconds),
                payment_expires_in=timedelta(seconds=body.payment_expires_in_seconds),
                redirect_url=body.redirect_url,
            )
        except NoExchangeRate as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return {"codeValue": order_code.code_value, "referenceOrderId": order_code.reference_order_id}

    @router.get("/entryCodes")
    async def entry_codes() -> list[dict[str, str]]:
        return [
            {"codeValue": mpm.entry_code(store), "storeId": store.store_id, "currency": store.currency}
            for store in mpm.stores.values()
        ]

    @router.get("/cashier/{store_id}", response_class=HTMLResponse)
    async def cashier_page(store_id: str) -> HTMLResponse:
        return _cashier_page(store_or_404(store_id))

    @router.post("/cashier/{store_id}", response_model=None)
    async def cashier_pay(store_id: str, amount: str = Form("")) -> Response:
        store = store_or_404(store_id)
        try:
            order_code = mpm.cashier_order(store, amount)
        except ValueError as exc:  # an amount to fix, or no rate to quote it (NoExchangeRate)
            return _cashier_page(store, str(exc), status_code=422)
        return RedirectResponse(mpm.alipayplus_url(order_code.code_value), status_code=302)

    @router.get("/result", response_class=HTMLResponse)
    async def result_page(referenceOrderId: str = "") -> HTMLResponse:  # noqa: N803
        """The merchant's WAP result page the wallet sends the user back to (seed 003, step 7)."""
        order_code = mpm.order_by_reference(referenceOrderId)
        if order_code is None:
            return _page("Order not found", "<p id=status>unknown</p>", status_code=404)
        order = order_code.order
        return _page(
            f"{html.escape(order.order_description)}",
            f"<p>Order <code id=referenceOrderId>{html.escape(order.reference_order_id)}</code>: "
            f"<span id=amount>{html.escape(str(order.order_amount))}</span></p>"
            f"<p>Payment: <strong id=status>{mpm.order_status(order_code)}</strong></p>",
        )

    return router


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status_code,
    )


def _cashier_page(store: SandboxStore, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    problem = f"<p id=error role=alert>{html.escape(error)}</p>" if error else ""
    return _page(
        store.name,
        f'{problem}<form id=cashier method=post action="/sandbox/merchant/cashier/{html.escape(store.store_id)}">'
        f"<label>Amount ({store.currency}) <input name=amount inputmode=decimal required autofocus></label> "
        "<button type=submit>Pay with Alipay+</button></form>",
        status_code,
    )


def _logo_svg(name: str) -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="160" height="48" viewBox="0 0 160 48">'
        '<rect width="160" height="48" rx="8" fill="#1677ff"/>'
        '<text x="80" y="30" font-family="sans-serif" font-size="16" fill="#fff" text-anchor="middle">'
        f"{html.escape(name)}</text></svg>"
    )


__all__ = [
    "ACCEPTANCE_MARKS",
    "DEFAULT_EXCHANGE_RATES",
    "DEFAULT_STORES",
    "MpmSession",
    "NoExchangeRate",
    "OrderCode",
    "OrderCodeRequest",
    "PayExchange",
    "PayHook",
    "SandboxMpm",
    "SandboxStore",
    "mpm_router",
    "parse_major_amount",
]
