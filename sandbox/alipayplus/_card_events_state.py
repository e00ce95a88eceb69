"""Alipay+'s memory of card authorizations and what each event became, with the checks on one authorization."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from alipayplus import Amount, CamelModel, PayRequest, Result

from ._card_events_rules import CardAction, CardEvent, CardEventKind

MppApi = Literal["pay", "cancelPayment", "refund", "adjustRefund"]


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


# --- checks on one authorization (the converter's events share them) --------------------------


def require_payment(state: CardAuthorization, verb: str) -> None:
    if state.status is not AuthorizationStatus.APPROVED or state.payment_id is None:
        raise CardEventRefused(f"cannot {verb} authorization {state.authorization_id}: the payment is not known")


def held_value(state: CardAuthorization) -> int:
    """A pending payment is held in full as far as Alipay+ knows."""
    return state.amount.value if state.status is AuthorizationStatus.PENDING else state.remaining


def value_in(state: CardAuthorization, amount: Amount) -> int:
    """``amount``'s minor units, refused unless in the authorization's currency."""
    if amount.currency != state.amount.currency:
        raise CardEventRefused(f"the authorization is in {state.amount.currency}, not {amount.currency}")
    return amount.value


def end_hold(state: CardAuthorization, kind: CardEventKind, step: ConversionStep) -> None:
    if step.succeeded:
        state.ended_by = kind
