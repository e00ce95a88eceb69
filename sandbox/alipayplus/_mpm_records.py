"""What the sandbox MPM remembers and is asked for: client-SDK sessions, order codes, pay exchanges."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from alipayplus import Amount, CamelModel, Order, PayRequest, PayResponse

from .driver import MPM_PAYMENT_EXPIRY

PayHook = Callable[[PayRequest], Awaitable[None]]
SESSION_TTL = timedelta(minutes=30)  # seed 003, step 1.3: set by Alipay+ for security reasons
CODE_EXPIRY = timedelta(seconds=120)


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
