"""Which MPP call each card event becomes: the card events, the actions, and the configurable ``ConversionRules``."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Literal

from pydantic import Field

from alipayplus import CamelModel


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
