"""Scalar wire types: Alipay+ sends every scalar as a JSON string.

Inbound, a number where a string belongs is PARAM_ILLEGAL; an empty string for an
optional field is read as absent (Alipay+'s own samples send ``"paymentMethodId": ""``).
Outbound, every scalar is written as a string and absent fields are omitted.

Whatever these types accept can be stored, identically on SQLite and PostgreSQL, so input that
could never succeed is refused up front (a final PARAM_ILLEGAL naming the field) instead of
failing later in the database, where the answer would be U and Alipay+ would retry forever:

- an identifier (ids, codes, types, logins, tokens, URLs) holds no control character
  (U+0000–U+001F, U+007F); free text holds no NUL (PostgreSQL text cannot store U+0000);
- a ``DateTime`` carries an offset, converts to UTC, and, in a request to this MPP, lies in
  [EARLIEST_TIME, LATEST_TIME).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, Strict, StringConstraints, ValidationInfo

EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""The first time accepted: no Alipay+ payment, token or expiry is older; an earlier one is a sender's bug."""
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)
"""The first time refused: real expiries reach a few years ahead at most; a later one is a sender's bug."""
URL_MAX_LENGTH = 2048
"""Alipay+'s limit for its URLs, and our ``payment_record.redirect_url`` column."""

INBOUND = "inbound"  # validation context key: a request to this MPP, as received

_OUT_OF_RANGE = f"must be between {EARLIEST_TIME:%Y-%m-%d} and {LATEST_TIME:%Y-%m-%d} (UTC)"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


def _no_control_characters(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(
            f"must not contain control characters (U+{ord(found.group()):04X} at position {found.start()})"
        )
    return value


def _no_nul(value: str) -> str:
    position = value.find("\x00")
    if position >= 0:
        raise ValueError(f"must not contain NUL (U+0000 at position {position})")
    return value


def _parse_flag(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, bool) and info.mode == "python":  # built in code
        return value
    if not isinstance(value, str) or value.lower() not in ("true", "false"):
        raise ValueError('must be the string "true" or "false"')
    return value.lower() == "true"


def _parse_datetime(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, datetime) and info.mode == "python":  # built in code: the same rules
        parsed = value
    elif not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string")
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time string with an offset") from None
    if parsed.utcoffset() is None:
        raise ValueError("must carry a UTC offset")
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00: before the first datetime in UTC
        raise ValueError(_OUT_OF_RANGE) from None
    # The range is a rule for what reaches this MPP's records (``Message.from_wire(..., inbound=True)``),
    # not for times our own code builds, a peer reads back from us, or Temporal hands back: the
    # workflow clock of the time-skipping test server runs decades ahead within one session.
    if info.context and info.context.get(INBOUND) and not EARLIEST_TIME <= in_utc < LATEST_TIME:
        raise ValueError(_OUT_OF_RANGE)
    return parsed  # with the offset it was sent with


def format_datetime(value: datetime) -> str:
    """ISO 8601 with offset and no fractional seconds, e.g. ``2023-09-18T09:47:51+08:00``."""
    return value.isoformat(timespec="seconds")


_IDENTIFIER = AfterValidator(_no_control_characters)
_FREE_TEXT = AfterValidator(_no_nul)

Text = Annotated[str, Strict(), _FREE_TEXT]
"""A required free-text string (a description, a name, opaque data): no NUL."""

Identifier = Annotated[str, Strict(), StringConstraints(min_length=1), _IDENTIFIER]
"""An identifier-like string we never store, so no length rule of ours: a type, a code, a login
(paymentMethodType, an MCC, userLoginId). No control characters."""

Id16 = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=16), _IDENTIFIER]
Id32 = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=32), _IDENTIFIER]
Id64 = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64), _IDENTIFIER]
"""An identifier of at most 64 characters (acquirerId, pspId, paymentRequestId, ...); no control characters."""
Id128 = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=128), _IDENTIFIER]

Url = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=URL_MAX_LENGTH), _IDENTIFIER]
"""A URL (paymentRedirectUrl, paymentNotifyUrl, paymentUrl); no control characters."""

OptionalText = Annotated[Text | None, BeforeValidator(_empty_is_none)]
OptionalIdentifier = Annotated[Identifier | None, BeforeValidator(_empty_is_none)]
OptionalId16 = Annotated[Id16 | None, BeforeValidator(_empty_is_none)]
OptionalId32 = Annotated[Id32 | None, BeforeValidator(_empty_is_none)]
OptionalId64 = Annotated[Id64 | None, BeforeValidator(_empty_is_none)]
OptionalId128 = Annotated[Id128 | None, BeforeValidator(_empty_is_none)]
OptionalUrl = Annotated[Url | None, BeforeValidator(_empty_is_none)]

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
"""An ISO 8601 timestamp with offset, kept as sent; inbound, in [EARLIEST_TIME, LATEST_TIME)."""


def contains_nul(value: Any) -> bool:
    """Whether a NUL hides in a JSON value kept as received (its strings and keys, at any depth)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(key) or contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(contains_nul(item) for item in value)
    return False
