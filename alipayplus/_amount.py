"""Money on the wire: ``{"currency": "IDR", "value": "5000"}``, value in ISO 4217 minor units."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from iso4217 import Currency
from pydantic import ConfigDict, ValidationInfo, field_serializer, field_validator

from ._base import Message

_DIGITS = re.compile(r"[0-9]{1,18}")


def minor_unit_exponent(currency: str) -> int:
    """Digits after the decimal point for an ISO 4217 currency (JPY 0, USD 2, KWD 3)."""
    exponent = Currency(currency).exponent
    return 0 if exponent is None else exponent


class Amount(Message):
    """An amount in integer minor units of an ISO 4217 currency. Never a float."""

    model_config = Message.model_config | ConfigDict(frozen=True)

    currency: str
    value: int

    @field_validator("currency", mode="before")
    @classmethod
    def _known_currency(cls, currency: Any) -> str:
        if not isinstance(currency, str):
            raise ValueError("must be a string")
        try:
            Currency(currency)
        except ValueError:
            raise ValueError(f"{currency!r} is not an ISO 4217 currency code") from None
        return currency

    @field_validator("value", mode="before")
    @classmethod
    def _minor_units(cls, value: Any, info: ValidationInfo) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and info.mode == "python":
            # built in code; JSON (the wire, Temporal payloads) always carries a string
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if not isinstance(value, str) or not _DIGITS.fullmatch(value):
            raise ValueError('must be a string of digits (minor units), e.g. "100"')
        return int(value)

    @field_serializer("value")
    def _as_string(self, value: int) -> str:
        return str(value)

    def __str__(self) -> str:
        """Human form for pages and logs: ``IDR 50.00``."""
        exponent = minor_unit_exponent(self.currency)
        major = Decimal(self.value).scaleb(-exponent)
        return f"{self.currency} {major:,.{exponent}f}"
