"""Scalar wire types: Alipay+ sends every scalar as a JSON string.

Inbound, a number where a string belongs is PARAM_ILLEGAL; an empty string for an
optional field is read as absent (Alipay+'s own samples send ``"paymentMethodId": ""``).
Outbound, every scalar is written as a string and absent fields are omitted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, Strict, StringConstraints, ValidationInfo


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


def _parse_flag(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, bool) and info.mode == "python":  # built in code
        return value
    if not isinstance(value, str) or value.lower() not in ("true", "false"):
        raise ValueError('must be the string "true" or "false"')
    return value.lower() == "true"


def _parse_datetime(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, datetime) and info.mode == "python":
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time string with an offset") from None
    if parsed.tzinfo is None:
        raise ValueError("must carry a UTC offset")
    return parsed


def format_datetime(value: datetime) -> str:
    """ISO 8601 with offset and no fractional seconds, e.g. ``2023-09-18T09:47:51+08:00``."""
    return value.isoformat(timespec="seconds")


Text = Annotated[str, Strict()]
"""A required string scalar."""

Id64 = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)]
"""An identifier of at most 64 characters (acquirerId, pspId, paymentRequestId, ...)."""

OptionalText = Annotated[Text | None, BeforeValidator(_empty_is_none)]
OptionalId64 = Annotated[Id64 | None, BeforeValidator(_empty_is_none)]
OptionalId16 = Annotated[
    Annotated[str, Strict(), StringConstraints(min_length=1, max_length=16)] | None, BeforeValidator(_empty_is_none)
]
OptionalId128 = Annotated[
    Annotated[str, Strict(), StringConstraints(min_length=1, max_length=128)] | None, BeforeValidator(_empty_is_none)
]

Flag = Annotated[
    bool,
    BeforeValidator(_parse_flag),
    PlainSerializer(lambda v: "true" if v else "false", return_type=str),
]
"""A boolean sent as ``"true"``/``"false"``."""

DateTime = Annotated[
    datetime,
    BeforeValidator(_parse_datetime),
    PlainSerializer(format_datetime, return_type=str),
]
"""An ISO 8601 timestamp with offset."""
