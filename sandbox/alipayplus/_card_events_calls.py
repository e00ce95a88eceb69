"""Carrying out a conversion rule: the cancelPayment, refund, adjustRefund or pay Alipay+ sends the MPP."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from alipayplus import (
    Amount,
    CancelPaymentRequest,
    CancelPaymentResponse,
    Message,
    PayRequest,
    PayResponse,
    RefundRequest,
    RefundResponse,
    TransportError,
)
from alipayplus.nfc import AdjustRefundRequest, AdjustRefundResponse, AdjustRefundScenario

from ._card_events_rules import CardAction, CardEvent, ConversionRules
from ._card_events_state import (
    AuthorizationStatus,
    CardAuthorization,
    CardEventRefused,
    ConversionStep,
    MppApi,
    MppCall,
)
from .driver import adjust_refund_request, nfc_pay_request, refund_request, request_id

# The public module's logger, so what is logged here is filtered (and captured in tests) under its name.
logger = logging.getLogger("sandbox.alipayplus.card_events")

ResponseT = TypeVar("ResponseT", PayResponse, RefundResponse, CancelPaymentResponse, AdjustRefundResponse)


class MppDriver(Protocol):
    """The calls Alipay+ makes to the MPP (``AlipayPlusDriver`` has them all)."""

    async def pay(self, request: PayRequest) -> PayResponse: ...

    async def refund(self, request: RefundRequest) -> RefundResponse: ...

    async def adjust_refund(self, request: AdjustRefundRequest) -> AdjustRefundResponse: ...

    async def cancel(self, payment_request_id: str, acquirer_id: str, psp_id: str) -> CancelPaymentResponse: ...


def _wire(message: Message) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(message.to_wire())
    return body


class MppActions:
    """The converter's calls to the MPP, one per rule action; a mixin of ``CardEventConverter``,
    whose ``__init__`` sets the attributes below."""

    driver: MppDriver
    psp_id: str
    clock: Callable[[], datetime]
    rules: ConversionRules

    def _request_id(self) -> str:
        return request_id(self.clock())

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
