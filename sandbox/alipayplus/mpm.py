"""Merchant-presented mode (seed 003) on the sandbox Alipay+: what the client SDK and the merchant meet.

``SandboxMpm`` is Alipay+'s MPM memory: client-SDK sessions (made from OUR applyToken), the
merchants' order codes and stores' entry codes, FX rates, and every pay it sent us.
``mpm_router`` serves it: the client SDK's fetchConfig / createSession / decode (plain JSON, as
the SDK speaks to Alipay+), and the merchant's side (order codes, entry codes, the cashier page,
the result page) as local-only sandbox controls. Decoding an order code makes Alipay+ call our
signed ``pay`` through ``AlipayPlusDriver``.

This module holds ``SandboxMpm``'s client-SDK side and re-exports the rest: the merchant side,
stores, rates and marks (``_mpm_merchants``), what it remembers (``_mpm_records``) and its HTTP
side (``_mpm_routes``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from alipayplus import (
    ApplyTokenResponse,
    NotifyPaymentRequest,
    PayRequest,
    PayResponse,
    Result,
    ResultCode,
    ResultStatus,
    TransportError,
)
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
from sandbox.code_service import ENTRY_CODE_PREFIX

# Re-exported (``__all__``): importers keep using ``sandbox.alipayplus.mpm`` for all of these.
from ._mpm_merchants import (
    ACCEPTANCE_MARKS,
    DEFAULT_EXCHANGE_RATES,
    DEFAULT_STORES,
    MerchantSide,
    NoExchangeRate,
    SandboxStore,
    parse_major_amount,
)
from ._mpm_records import SESSION_TTL, MpmSession, OrderCode, OrderCodeRequest, PayExchange, PayHook
from ._mpm_routes import mpm_router
from .driver import _UTC8, PSP_ID, AlipayPlusDriver, apply_token_request, mpm_order, request_id
from .peer import SandboxAlipayPlus

if TYPE_CHECKING:
    from wallet.settings import Settings

logger = logging.getLogger(__name__)

CONFIG_VERSION = "sandbox-1"

EXPIRED_CODE_MESSAGE = "This code has expired. Ask the merchant for a new code and scan again."
INVALID_CODE_MESSAGE = "This code is not valid. Check you scanned the merchant's Alipay+ code and try again."
USED_CODE_MESSAGE = "This code has already been paid by someone else. Ask the merchant for a new code."


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


class SandboxMpm(MerchantSide):
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
