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

This module holds ``CardEventConverter``'s events and re-exports the rest: the rules
(``_card_events_rules``), the authorizations and results (``_card_events_state``), the calls to
the MPP (``_card_events_calls``) and the HTTP controls (``_card_events_routes``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from alipayplus import Amount, PayRequest, ResultStatus
from alipayplus.nfc import AdjustRefundScenario
from sandbox.nfc.mastercard import SandboxMastercard, VerifiedAuthorization
from sandbox.pos.authorization import AuthorizationDecision, DeclineReason

# Re-exported (``__all__``): importers keep using ``sandbox.alipayplus.card_events`` for all of these.
from ._card_events_calls import MppActions, MppDriver
from ._card_events_routes import card_events_router
from ._card_events_rules import CardAction, CardEvent, CardEventKind, ConversionRules
from ._card_events_state import (
    AuthorizationStatus,
    CardAuthorization,
    CardEventRefused,
    CardEventResult,
    ConversionStep,
    MppCall,
    UnknownAuthorization,
    end_hold,
    held_value,
    require_payment,
    value_in,
)
from .driver import PSP_ID, adjust_refund_request, nfc_pay_request

if TYPE_CHECKING:
    from sandbox.nfc.ant import SandboxAntNfc

logger = logging.getLogger(__name__)

PayHook = Callable[[PayRequest], Awaitable[None]]
CustomerLookup = Callable[[str], str | None]  # tokenReferenceId → customerId


def _utc_now() -> datetime:
    return datetime.now(UTC)


def ant_customers(ant: SandboxAntNfc) -> CustomerLookup:
    """tokenReferenceId → customerId from the sandbox Ant server's tokens."""

    def customer_for(token_reference_id: str) -> str | None:
        token = ant.token(token_reference_id)
        return token.customer_id if token is not None else None

    return customer_for


PAY_ATTEMPTS = 2  # an NFC pay answered U or not at all is resent once before the tap is declined


class CardEventConverter(MppActions):
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
            held = held_value(state)
            value = held if amount is None else value_in(state, amount)
            if not 0 < value <= held:
                raise CardEventRefused(f"a reversal of {value} but {held} is held")
            if value < held:
                require_payment(state, "partially reverse")
                step = await self._apply(state, CardEvent.PARTIAL_REVERSAL, value)
                return self._record(CardEventKind.REVERSAL, authorization_id, [step])
            event = CardEvent.REVERSAL_IN_WINDOW if self._in_cancel_window(state) else CardEvent.REVERSAL_AFTER_WINDOW
            step = await self._apply(state, event, held)
            end_hold(state, CardEventKind.REVERSAL, step)
            return self._record(CardEventKind.REVERSAL, authorization_id, [step])

    async def clear(self, authorization_id: str, amount: Amount) -> CardEventResult:
        """Clearing (first presentment): compared with what is still held."""
        async with self._lock(authorization_id):
            state = self._open_hold(authorization_id, "clear")
            require_payment(state, "clear")
            held, value = held_value(state), value_in(state, amount)
            if value < held:
                step = await self._apply(state, CardEvent.CLEARING_LOWER, held - value)
            elif value == held:
                step = await self._apply(state, CardEvent.CLEARING_EQUAL, 0)
            else:
                step = await self._apply(state, CardEvent.CLEARING_HIGHER, value - held)
            if step.succeeded:
                state.cleared_amount = amount
            end_hold(state, CardEventKind.CLEARING, step)
            return self._record(CardEventKind.CLEARING, authorization_id, [step])

    async def expire(self, authorization_id: str) -> CardEventResult:
        """The authorization expired without clearing: give back what is held."""
        async with self._lock(authorization_id):
            state = self._open_hold(authorization_id, "expire")
            event = CardEvent.EXPIRY_IN_WINDOW if self._in_cancel_window(state) else CardEvent.EXPIRY_AFTER_WINDOW
            step = await self._apply(state, event, held_value(state))
            end_hold(state, CardEventKind.EXPIRY, step)
            return self._record(CardEventKind.EXPIRY, authorization_id, [step])

    async def merchant_refund(self, authorization_id: str, amount: Amount) -> CardEventResult:
        """A refund (credit) linked to the payment: refund what is left, adjustRefund the excess."""
        async with self._lock(authorization_id):
            state = self._known(authorization_id)
            if state.status not in (AuthorizationStatus.APPROVED, AuthorizationStatus.CANCELLED):
                raise CardEventRefused(
                    f"authorization {authorization_id} is {state.status}: send a refund with no payment as unlinked"
                )
            value = value_in(state, amount)
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

    def _in_cancel_window(self, state: CardAuthorization) -> bool:
        return self.clock() < self.rules.cancel_deadline(state.authorized_at)

    def _record(
        self, kind: CardEventKind, authorization_id: str | None, steps: list[ConversionStep]
    ) -> CardEventResult:
        result = CardEventResult(kind=kind, authorization_id=authorization_id, steps=steps, at=self.clock())
        self.results.append(result)
        return result


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
