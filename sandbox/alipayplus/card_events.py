"""Alipay+ turning card-network events into calls to the MPP (alipayplus-nfc.md §12, §13).

Mastercard hands a verified authorization to ``CardEventConverter.authorize`` (it is the network's
``Issuer``): Alipay+ finds the wallet user behind the token (the Ant server's tokens) and sends the
MPP an NFC ``pay``; only an S answer approves the tap. What the merchant's acquirer sends later —
reversal, clearing, authorization expiry, merchant refunds — becomes cancelPayment, refund or
adjustRefund by ``ConversionRules``. The spec's §12 table is marked inferred, so every mapping is a
rule: the defaults follow that table, and each can be changed (in code or over
``PUT /sandbox/card-events/rules``).

Decisions the spec leaves open:

* The cancel window closes at 00:30 UTC+8 on T+1 (T = the authorization's day in UTC+8); an event
  *at* 00:30:00 is already outside, so the converter never sends a cancel the MPP could refuse.
* pay answers are final S/F synchronously; a U or no answer is resent once with the same body (the
  spec's idempotent retry after a timeout: a busy MPP has usually finished by then); still U or no
  answer leaves the authorization PENDING and declines the tap (``on_pay_in_process`` can start
  Alipay+'s inquiry schedule). A PENDING authorization can only be cancelled (cancelPayment
  succeeds whatever the payment's state).
* Clearing compares with the amount still held (authorized minus what was already reversed).
  Higher than held is a gap in the spec: by default ignored and logged; the ``PAY`` rule debits
  the difference with a second NFC pay (later refunds only draw on the first payment).
* A merchant refund refunds what is left of the payment and sends the excess as adjustRefund
  EXCEED_REFUND (after the refund); for a cancelled payment all of it is excess.
* A reversal, clearing or expiry ends the hold once its call succeeded (or was ignored); after a
  failed call the same event can be sent again (with a new request id; the MPP's own checks keep
  refunds within the payment).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from alipayplus import (
    Amount,
    CamelModel,
    CancelPaymentRequest,
    CancelPaymentResponse,
    Message,
    PayRequest,
    PayResponse,
    RefundRequest,
    RefundResponse,
    Result,
    ResultStatus,
    TransportError,
)
from alipayplus.nfc import AdjustRefundRequest, AdjustRefundResponse, AdjustRefundScenario
from sandbox._http import local_only
from sandbox.nfc.mastercard import SandboxMastercard, VerifiedAuthorization
from sandbox.pos.authorization import AuthorizationDecision, DeclineReason

from .driver import PSP_ID, adjust_refund_request, nfc_pay_request, refund_request, request_id

if TYPE_CHECKING:
    from sandbox.nfc.ant import SandboxAntNfc


class MppDriver(Protocol):
    """The calls Alipay+ makes to the MPP (``AlipayPlusDriver`` has them all)."""

    async def pay(self, request: PayRequest) -> PayResponse: ...

    async def refund(self, request: RefundRequest) -> RefundResponse: ...

    async def adjust_refund(self, request: AdjustRefundRequest) -> AdjustRefundResponse: ...

    async def cancel(self, payment_request_id: str, acquirer_id: str, psp_id: str) -> CancelPaymentResponse: ...


logger = logging.getLogger(__name__)

PayHook = Callable[[PayRequest], Awaitable[None]]
CustomerLookup = Callable[[str], str | None]  # tokenReferenceId → customerId
MppApi = Literal["pay", "cancelPayment", "refund", "adjustRefund"]
ResponseT = TypeVar("ResponseT", PayResponse, RefundResponse, CancelPaymentResponse, AdjustRefundResponse)


class CardEvent(StrEnum):
    """A card event as the rules tell it apart (each is one field of ``ConversionRules``)."""

    AUTHORIZATION = "AUTHORIZATION"
    REVERSAL_IN_WINDOW = "REVERSAL_IN_WINDOW"  # full reversal before 00:30 UTC+8 on T+1
    REVERSAL_AFTER_WINDOW = "REVERSAL_AFTER_WINDOW"
    PARTIAL_REVERSAL = "PARTIAL_REVERSAL"
    CLEARING_LOWER = "CLEARING_LOWER"
    CLEARING_EQUAL = "CLEARING_EQUAL"
    CLEARING_HIGHER = "CLEARING_HIGHER"
    EXPIRY_IN_WINDOW = "EXPIRY_IN_WINDOW"  # the authorization expired without clearing
    EXPIRY_AFTER_WINDOW = "EXPIRY_AFTER_WINDOW"
    MERCHANT_REFUND = "MERCHANT_REFUND"  # the part of a merchant refund the payment covers
    MERCHANT_REFUND_EXCESS = "MERCHANT_REFUND_EXCESS"  # the part above it
    UNLINKED_REFUND = "UNLINKED_REFUND"  # a merchant refund with no payment


class CardAction(StrEnum):
    PAY = "PAY"
    CANCEL = "CANCEL"  # cancelPayment
    REFUND = "REFUND"
    ADJUST_REFUND = "ADJUST_REFUND"
    IGNORE = "IGNORE"  # nothing is sent; logged


class CardEventKind(StrEnum):
    """What the acquirer sent (one may be several ``CardEvent``s, e.g. a refund with an excess)."""

    AUTHORIZATION = "AUTHORIZATION"
    REVERSAL = "REVERSAL"
    CLEARING = "CLEARING"
    EXPIRY = "EXPIRY"
    MERCHANT_REFUND = "MERCHANT_REFUND"
    UNLINKED_REFUND = "UNLINKED_REFUND"


_CancelOrRefund = Literal[CardAction.CANCEL, CardAction.REFUND, CardAction.IGNORE]
_Refund = Literal[CardAction.REFUND, CardAction.IGNORE]
_AdjustRefund = Literal[CardAction.ADJUST_REFUND, CardAction.IGNORE]


class ConversionRules(CamelModel):
    """Which call each card event becomes; defaults per spec §12's (inferred) table."""

    authorization: Literal[CardAction.PAY] = CardAction.PAY
    reversal_in_window: _CancelOrRefund = CardAction.CANCEL
    reversal_after_window: _CancelOrRefund = CardAction.REFUND  # CANCEL would meet CANCEL_WINDOW_EXCEED
    partial_reversal: _Refund = CardAction.REFUND
    clearing_lower: _Refund = CardAction.REFUND
    clearing_equal: Literal[CardAction.IGNORE] = CardAction.IGNORE
    clearing_higher: Literal[CardAction.IGNORE, CardAction.PAY] = CardAction.IGNORE  # the spec's gap
    expiry_in_window: _CancelOrRefund = CardAction.CANCEL
    expiry_after_window: _CancelOrRefund = CardAction.REFUND
    merchant_refund: _Refund = CardAction.REFUND
    merchant_refund_excess: _AdjustRefund = CardAction.ADJUST_REFUND
    unlinked_refund: _AdjustRefund = CardAction.ADJUST_REFUND
    cancel_cutoff: time = time(0, 30)  # on the day after the authorization, in ``cancel_utc_offset``
    cancel_utc_offset: timedelta = Field(default=timedelta(hours=8), ge=timedelta(hours=-14), le=timedelta(hours=14))

    def action(self, event: CardEvent) -> CardAction:
        action: CardAction = getattr(self, event.value.lower())
        return action

    def cancel_deadline(self, authorized_at: datetime) -> datetime:
        zone = timezone(self.cancel_utc_offset)
        day = authorized_at.astimezone(zone).date() + timedelta(days=1)
        return datetime.combine(day, self.cancel_cutoff, tzinfo=zone)


class AuthorizationStatus(StrEnum):
    PENDING = "PENDING"  # pay answered U or not at all
    APPROVED = "APPROVED"  # pay answered S: the user was debited
    DECLINED = "DECLINED"  # pay answered F, or no user behind the token
    CANCELLED = "CANCELLED"  # cancelPayment answered S


class CardAuthorization(CamelModel):
    """Alipay+'s memory of one authorization and the payment it became."""

    authorization_id: str  # the terminal's retrieval reference number
    token_reference_id: str
    customer_id: str | None
    payment: PayRequest | None
    authorized_at: datetime
    status: AuthorizationStatus
    payment_id: str | None = None
    refunded: int = 0  # minor units of the payment's currency, refunds answered S
    cleared_amount: Amount | None = None
    ended_by: CardEventKind | None = None  # the reversal, clearing or expiry that ended the hold
    extra_payment_request_ids: list[str] = Field(default_factory=list)  # clearing above the authorization

    @property
    def amount(self) -> Amount:
        if self.payment is None:
            raise CardEventRefused(f"authorization {self.authorization_id} has no payment")
        return self.payment.payment_amount

    @property
    def remaining(self) -> int:
        """What is left of the payment to refund (minor units)."""
        if self.payment is None or self.status is not AuthorizationStatus.APPROVED:
            return 0
        return self.amount.value - self.refunded


class MppCall(CamelModel):
    """One call to the MPP: the request as sent, and the answer (or why there was none)."""

    api: MppApi
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    result: Result | None = None
    error: str | None = None  # no usable answer (timeout, bad signature, ...)

    @property
    def succeeded(self) -> bool:
        return self.result is not None and self.result.is_success


class ConversionStep(CamelModel):
    event: CardEvent
    action: CardAction
    amount: Amount | None = None
    call: MppCall | None = None  # None: nothing was sent (IGNORE, or nothing left to refund)

    @property
    def succeeded(self) -> bool:
        return self.call is None or self.call.succeeded


class CardEventResult(CamelModel):
    """What one acquirer event became: the steps, each with its call and the MPP's answer."""

    kind: CardEventKind
    authorization_id: str | None
    steps: list[ConversionStep]
    at: datetime


class CardEventRefused(ValueError):
    """The event does not fit the authorization's state (already cancelled, amount too high, ...)."""


class UnknownAuthorization(LookupError):
    """No authorization with this id (or no wallet user behind this token)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _wire(message: Message) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(message.to_wire())
    return body


def ant_customers(ant: SandboxAntNfc) -> CustomerLookup:
    """tokenReferenceId → customerId from the sandbox Ant server's tokens."""

    def customer_for(token_reference_id: str) -> str | None:
        token = ant.token(token_reference_id)
        return token.customer_id if token is not None else None

    return customer_for


PAY_ATTEMPTS = 2  # an NFC pay answered U or not at all is resent once before the tap is declined


class CardEventConverter:
    """Alipay+'s conversion of one network's card events into the MPP's payment APIs."""

    def __init__(
        self,
        driver: MppDriver,
        customer_for_token: CustomerLookup,
        *,
        rules: ConversionRules | None = None,
        psp_id: str = PSP_ID,
        clock: Callable[[], datetime] = _utc_now,
        on_pay_in_process: PayHook | None = None,
    ) -> None:
        self.driver = driver
        self.customer_for_token = customer_for_token
        self.rules = rules or ConversionRules()
        self.psp_id = psp_id
        self.clock = clock
        self.on_pay_in_process = on_pay_in_process
        self.authorizations: dict[str, CardAuthorization] = {}
        self.results: list[CardEventResult] = []
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def behind(
        cls,
        mastercard: SandboxMastercard,
        ant: SandboxAntNfc,
        driver: MppDriver,
        *,
        psp_id: str,
        on_pay_in_process: PayHook | None = None,
    ) -> CardEventConverter:
        """The sandbox's wiring: what ``mastercard`` verifies becomes our pay, for the user Ant's token names."""
        converter = cls(driver, ant_customers(ant), psp_id=psp_id, on_pay_in_process=on_pay_in_process)
        mastercard.issuer = converter
        return converter

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _request_id(self) -> str:
        return request_id(self.clock())

    # --- authorization → pay -------------------------------------------------------------

    async def authorize(self, request: VerifiedAuthorization) -> AuthorizationDecision:
        """Mastercard's verified authorization: pay the MPP; approve only on S."""
        authorization = request.authorization
        authorization_id = authorization.retrieval_reference
        async with self._lock(authorization_id):
            if authorization_id in self.authorizations:
                return AuthorizationDecision.decline(
                    DeclineReason.ISSUER_DECLINED, f"Authorization {authorization_id} was already sent"
                )
            now = self.clock()
            customer_id = self.customer_for_token(request.token_reference_id)
            state = CardAuthorization(
                authorization_id=authorization_id,
                token_reference_id=request.token_reference_id,
                customer_id=customer_id,
                payment=None,
                authorized_at=now,
                status=AuthorizationStatus.DECLINED,
            )
            self.authorizations[authorization_id] = state
            if customer_id is None:
                self._record(CardEventKind.AUTHORIZATION, authorization_id, [])
                return AuthorizationDecision.decline(DeclineReason.ISSUER_DECLINED, "No wallet user has this token")
            payment = nfc_pay_request(
                self._request_id(),
                customer_id,
                request.token_reference_id,
                authorization.amount,
                psp_id=self.psp_id,
                custom_data=authorization.custom_data,
                atc=authorization.atc,
                merchant_name=authorization.merchant_name,
            )
            state.payment, state.status = payment, AuthorizationStatus.PENDING
            for _ in range(PAY_ATTEMPTS):  # the same body again after a U or no answer
                call, answer = await self._call("pay", payment, self.driver.pay(payment))
                if answer is not None and answer.result.result_status is not ResultStatus.UNKNOWN:
                    break
            step = ConversionStep(
                event=CardEvent.AUTHORIZATION, action=CardAction.PAY, amount=payment.payment_amount, call=call
            )
            self._record(CardEventKind.AUTHORIZATION, authorization_id, [step])
            request_id = payment.payment_request_id
            if answer is None or answer.result.result_status is ResultStatus.UNKNOWN:
                await self._pay_in_process(payment)
                return AuthorizationDecision.decline(
                    DeclineReason.ISSUER_UNAVAILABLE, "The wallet gave no final answer", payment_request_id=request_id
                )
            if not answer.result.is_success:
                state.status = AuthorizationStatus.DECLINED
                message = f"{answer.result.result_code}: {answer.result.result_message or ''}".rstrip(": ")
                return AuthorizationDecision.decline(
                    DeclineReason.ISSUER_DECLINED, message, payment_request_id=request_id
                )
            state.status, state.payment_id = AuthorizationStatus.APPROVED, answer.payment_id
            return AuthorizationDecision.approve(payment_request_id=request_id)

    async def _pay_in_process(self, payment: PayRequest) -> None:
        if self.on_pay_in_process is None:
            return
        try:
            await self.on_pay_in_process(payment)
        except Exception:  # the decline at the POS must not fail because the inquiry did not start
            logger.exception("on_pay_in_process failed for %s", payment.payment_request_id)

    # --- the acquirer's later events -----------------------------------------------------

    async def reverse(self, authorization_id: str, amount: Amount | None = None) -> CardEventResult:
        """A reversal (0400) of the whole authorization (``amount`` None or all that is held) or of part."""
        async with self._lock(authorization_id):
            state = self._open_hold(authorization_id, "reverse")
            held = self._held(state)
            value = held if amount is None else self._value(state, amount)
            if not 0 < value <= held:
                raise CardEventRefused(f"a reversal of {value} but {held} is held")
            if value < held:
                self._require_payment(state, "partially reverse")
                step = await self._apply(state, CardEvent.PARTIAL_REVERSAL, value)
                return self._record(CardEventKind.REVERSAL, authorization_id, [step])
            event = CardEvent.REVERSAL_IN_WINDOW if self._in_cancel_window(state) else CardEvent.REVERSAL_AFTER_WINDOW
            step = await self._apply(state, event, held)
            self._end_hold(state, CardEventKind.REVERSAL, step)
            return self._record(CardEventKind.REVERSAL, authorization_id, [step])

    async def clear(self, authorization_id: str, amount: Amount) -> CardEventResult:
        """Clearing (first presentment): compared with what is still held."""
        async with self._lock(authorization_id):
            state = self._open_hold(authorization_id, "clear")
            self._require_payment(state, "clear")
            held, value = self._held(state), self._value(state, amount)
            if value < held:
                step = await self._apply(state, CardEvent.CLEARING_LOWER, held - value)
            elif value == held:
                step = await self._apply(state, CardEvent.CLEARING_EQUAL, 0)
            else:
                step = await self._apply(state, CardEvent.CLEARING_HIGHER, value - held)
            if step.succeeded:
                state.cleared_amount = amount
            self._end_hold(state, CardEventKind.CLEARING, step)
            return self._record(CardEventKind.CLEARING, authorization_id, [step])

    async def expire(self, authorization_id: str) -> CardEventResult:
        """The authorization expired without clearing: give back what is held."""
        async with self._lock(authorization_id):
            state = self._open_hold(authorization_id, "expire")
            event = CardEvent.EXPIRY_IN_WINDOW if self._in_cancel_window(state) else CardEvent.EXPIRY_AFTER_WINDOW
            step = await self._apply(state, event, self._held(state))
            self._end_hold(state, CardEventKind.EXPIRY, step)
            return self._record(CardEventKind.EXPIRY, authorization_id, [step])

    async def merchant_refund(self, authorization_id: str, amount: Amount) -> CardEventResult:
        """A refund (credit) linked to the payment: refund what is left, adjustRefund the excess."""
        async with self._lock(authorization_id):
            state = self._known(authorization_id)
            if state.status not in (AuthorizationStatus.APPROVED, AuthorizationStatus.CANCELLED):
                raise CardEventRefused(
                    f"authorization {authorization_id} is {state.status}: send a refund with no payment as unlinked"
                )
            value = self._value(state, amount)
            if value <= 0:
                raise CardEventRefused("a refund must be above zero")
            linked = min(value, state.remaining)
            steps = []
            if linked:
                steps.append(await self._apply(state, CardEvent.MERCHANT_REFUND, linked))
            if value > linked:
                steps.append(await self._apply(state, CardEvent.MERCHANT_REFUND_EXCESS, value - linked))
            return self._record(CardEventKind.MERCHANT_REFUND, authorization_id, steps)

    async def unlinked_refund(self, token_reference_id: str, amount: Amount) -> CardEventResult:
        """A refund to a card with no payment behind it: adjustRefund UNLINKED_REFUND to its user."""
        customer_id = self.customer_for_token(token_reference_id)
        if customer_id is None:
            raise UnknownAuthorization(f"no wallet user has token {token_reference_id}")
        if amount.value <= 0:
            raise CardEventRefused("a refund must be above zero")
        action = self.rules.action(CardEvent.UNLINKED_REFUND)
        step = ConversionStep(event=CardEvent.UNLINKED_REFUND, action=action, amount=amount)
        if action is CardAction.ADJUST_REFUND:
            request = adjust_refund_request(
                self._request_id(),
                AdjustRefundScenario.UNLINKED_REFUND,
                amount,
                customer_id=customer_id,
                psp_id=self.psp_id,
            )
            call, _ = await self._call("adjustRefund", request, self.driver.adjust_refund(request))
            step.call = call
        else:
            logger.info("unlinked refund of %s to %s ignored by the rules", amount, token_reference_id)
        return self._record(CardEventKind.UNLINKED_REFUND, None, [step])

    # --- state checks --------------------------------------------------------------------

    def _known(self, authorization_id: str) -> CardAuthorization:
        state = self.authorizations.get(authorization_id)
        if state is None:
            raise UnknownAuthorization(f"no authorization {authorization_id}")
        return state

    def _open_hold(self, authorization_id: str, verb: str) -> CardAuthorization:
        """An authorization whose hold is still open: approved (or pending), not yet ended."""
        state = self._known(authorization_id)
        if state.status not in (AuthorizationStatus.APPROVED, AuthorizationStatus.PENDING):
            raise CardEventRefused(f"cannot {verb} authorization {authorization_id}: it is {state.status}")
        if state.ended_by is not None:
            raise CardEventRefused(f"cannot {verb} authorization {authorization_id}: already ended by {state.ended_by}")
        return state

    @staticmethod
    def _require_payment(state: CardAuthorization, verb: str) -> None:
        if state.status is not AuthorizationStatus.APPROVED or state.payment_id is None:
            raise CardEventRefused(f"cannot {verb} authorization {state.authorization_id}: the payment is not known")

    @staticmethod
    def _held(state: CardAuthorization) -> int:
        """A pending payment is held in full as far as Alipay+ knows."""
        return state.amount.value if state.status is AuthorizationStatus.PENDING else state.remaining

    @staticmethod
    def _value(state: CardAuthorization, amount: Amount) -> int:
        if amount.currency != state.amount.currency:
            raise CardEventRefused(f"the authorization is in {state.amount.currency}, not {amount.currency}")
        return amount.value

    def _in_cancel_window(self, state: CardAuthorization) -> bool:
        return self.clock() < self.rules.cancel_deadline(state.authorized_at)

    @staticmethod
    def _end_hold(state: CardAuthorization, kind: CardEventKind, step: ConversionStep) -> None:
        if step.succeeded:
            state.ended_by = kind

    # --- actions ---------------------------------------------------------------------------

    async def _apply(self, state: CardAuthorization, event: CardEvent, value: int) -> ConversionStep:
        """Carry out the rule for ``event`` on ``value`` minor units of the payment's currency."""
        action = self.rules.action(event)
        amount = Amount(currency=state.amount.currency, value=value)
        step = ConversionStep(event=event, action=action, amount=amount)
        if state.status is AuthorizationStatus.PENDING and action is not CardAction.CANCEL:
            if action is CardAction.IGNORE:
                return step
            raise CardEventRefused(
                f"the payment of {state.authorization_id} has no final result: only a cancel can reverse it"
            )
        if action is CardAction.IGNORE or (value == 0 and action is not CardAction.CANCEL):
            logger.info("%s of %s on %s: nothing sent (%s)", event, amount, state.authorization_id, action)
            return step
        if action is CardAction.CANCEL:
            step.call = await self._cancel(state)
        elif action is CardAction.REFUND:
            step.call = await self._refund(state, amount)
        elif action is CardAction.ADJUST_REFUND:
            step.call = await self._exceed_refund(state, amount)
        else:
            step.call = await self._extra_pay(state, amount)
        return step

    async def _cancel(self, state: CardAuthorization) -> MppCall:
        payment = state.payment
        assert payment is not None  # every state with a hold has a payment
        request = CancelPaymentRequest(
            acquirer_id=payment.acquirer_id, psp_id=payment.psp_id, payment_request_id=payment.payment_request_id
        )
        call, _ = await self._call(
            "cancelPayment",
            request,
            self.driver.cancel(request.payment_request_id, request.acquirer_id, request.psp_id),
        )
        if call.succeeded:
            state.status = AuthorizationStatus.CANCELLED
        return call

    async def _refund(self, state: CardAuthorization, amount: Amount) -> MppCall:
        if state.payment is None or state.payment_id is None:
            raise CardEventRefused(f"authorization {state.authorization_id} has no payment to refund")
        request = refund_request(state.payment, state.payment_id, self._request_id(), amount)
        call, _ = await self._call("refund", request, self.driver.refund(request))
        if call.succeeded:
            state.refunded += amount.value
        return call

    async def _exceed_refund(self, state: CardAuthorization, amount: Amount) -> MppCall:
        assert state.payment is not None
        request = adjust_refund_request(
            self._request_id(),
            AdjustRefundScenario.EXCEED_REFUND,
            amount,
            payment_request_id=state.payment.payment_request_id,
            psp_id=self.psp_id,
        )
        call, _ = await self._call("adjustRefund", request, self.driver.adjust_refund(request))
        return call

    async def _extra_pay(self, state: CardAuthorization, amount: Amount) -> MppCall:
        """Clearing above the authorization under the PAY rule: debit the difference."""
        assert state.customer_id is not None
        payment = nfc_pay_request(
            self._request_id(), state.customer_id, state.token_reference_id, amount, psp_id=self.psp_id
        )
        call, _ = await self._call("pay", payment, self.driver.pay(payment))
        if call.succeeded:
            state.extra_payment_request_ids.append(payment.payment_request_id)
        return call

    async def _call(
        self, api: MppApi, request: Message, sent: Awaitable[ResponseT]
    ) -> tuple[MppCall, ResponseT | None]:
        try:
            response = await sent
        except TransportError as exc:
            logger.warning("%s got no usable answer: %s", api, exc)
            return MppCall(api=api, request=_wire(request), error=str(exc)), None
        return MppCall(api=api, request=_wire(request), response=_wire(response), result=response.result), response

    def _record(
        self, kind: CardEventKind, authorization_id: str | None, steps: list[ConversionStep]
    ) -> CardEventResult:
        result = CardEventResult(kind=kind, authorization_id=authorization_id, steps=steps, at=self.clock())
        self.results.append(result)
        return result


# --- local HTTP controls ----------------------------------------------------------------------


class ReversalEvent(CamelModel):
    authorization_id: str
    amount: Amount | None = None  # None: the whole authorization


class ClearingEvent(CamelModel):
    authorization_id: str
    amount: Amount


class ExpiryEvent(CamelModel):
    authorization_id: str


class MerchantRefundEvent(CamelModel):
    authorization_id: str
    amount: Amount


class UnlinkedRefundEvent(CamelModel):
    token_reference_id: str
    amount: Amount


def _json(model: BaseModel) -> dict[str, Any]:
    body: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return body


async def _answer(event: Awaitable[CardEventResult]) -> dict[str, Any]:
    try:
        return _json(await event)
    except UnknownAuthorization as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except CardEventRefused as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


def card_events_router(converter: CardEventConverter) -> APIRouter:
    """The acquirer's events as local-only controls under ``/sandbox/card-events``, so a demo can
    drive them: 404 for an unknown authorization, 409 for an event its state does not allow."""
    router = APIRouter(prefix="/sandbox/card-events", dependencies=[Depends(local_only)])

    @router.get("")
    async def listing() -> dict[str, Any]:
        return {
            "authorizations": [_json(state) for state in converter.authorizations.values()],
            "events": [_json(result) for result in converter.results],
        }

    @router.post("/reverse")
    async def reverse(body: ReversalEvent) -> dict[str, Any]:
        return await _answer(converter.reverse(body.authorization_id, body.amount))

    @router.post("/clear")
    async def clear(body: ClearingEvent) -> dict[str, Any]:
        return await _answer(converter.clear(body.authorization_id, body.amount))

    @router.post("/expire")
    async def expire(body: ExpiryEvent) -> dict[str, Any]:
        return await _answer(converter.expire(body.authorization_id))

    @router.post("/merchant-refund")
    async def merchant_refund(body: MerchantRefundEvent) -> dict[str, Any]:
        return await _answer(converter.merchant_refund(body.authorization_id, body.amount))

    @router.post("/unlinked-refund")
    async def unlinked_refund(body: UnlinkedRefundEvent) -> dict[str, Any]:
        return await _answer(converter.unlinked_refund(body.token_reference_id, body.amount))

    @router.get("/rules")
    async def rules() -> dict[str, Any]:
        return _json(converter.rules)

    @router.put("/rules")
    async def set_rules(body: ConversionRules) -> dict[str, Any]:
        converter.rules = body
        return _json(body)

    return router


__all__ = [
    "AuthorizationStatus",
    "CardAction",
    "CardAuthorization",
    "CardEvent",
    "CardEventConverter",
    "CardEventKind",
    "CardEventRefused",
    "CardEventResult",
    "ConversionRules",
    "ConversionStep",
    "MppCall",
    "UnknownAuthorization",
    "ant_customers",
    "card_events_router",
]
