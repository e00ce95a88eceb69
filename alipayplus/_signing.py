"""Message signatures, exactly as Alipay+ specifies them (spec §1.3–1.5).

Content to sign: ``POST <Request-URI>\\n<Client-Id>.<Request-Time or Response-Time>.<raw body>``;
SHA256withRSA (PKCS#1 v1.5), Base64, then URL-encoded. Verification always runs over the
raw bytes received and the path as received, never over re-serialised JSON.

A request's ``Request-Time`` must also be an ISO 8601 date-time with its UTC offset (the RFC 3339
form Alipay+ sends, ``2019-05-28T12:12:12+08:00``, or ``…Z``); anything else is answered F
``PARAM_ILLEGAL`` naming the header. A freshness window is the caller's choice (``Verifier``'s
``request_time_window``): the spec sets none, and Alipay+ resends a request later.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._result import ResultCode
from ._types import format_datetime

ALGORITHM = "RSA256"
_HEADER_PART = re.compile(r"\s*([A-Za-z]+)\s*=\s*([^,]*?)\s*(?:,|$)")
# RFC 3339's profile of ISO 8601: date, "T", time, optional fraction, then "Z" or ±hh:mm. Python's
# fromisoformat alone would also take a space, week dates and basic formats, which Alipay+ never sends.
_REQUEST_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})", re.ASCII)
_REQUEST_TIME_EXAMPLE = "2019-05-28T12:12:12+08:00"


class SignatureFailure(StrEnum):
    """Why a signed message was refused: a small closed set, for metrics and logs (never the values)."""

    UNKNOWN_CLIENT = "unknown_client"  # Client-Id missing or not the expected one
    MISSING_TIME = "missing_time"  # no Request-Time / Response-Time header
    MISSING_SIGNATURE = "missing_signature"  # no Signature header
    BAD_FORMAT = "bad_format"  # a Signature header that does not parse, or not RSA256
    UNKNOWN_KEY = "unknown_key"  # no public key for the Client-Id and keyVersion
    BAD_SIGNATURE = "bad_signature"  # the signature does not verify
    BAD_TIME = "bad_time"  # a Request-Time that is not an ISO 8601 date-time with an offset
    CLOCK_SKEW = "clock_skew"  # a Request-Time outside the verifier's window


class SignatureError(Exception):
    """A signed message refused before it is read: its signature could not be checked or did not
    verify, or its Request-Time is unusable; ``code`` is the Alipay+ result code to answer with,
    ``reason`` which check refused it."""

    def __init__(
        self, code: ResultCode, message: str, reason: SignatureFailure = SignatureFailure.BAD_SIGNATURE
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


def content_to_sign(method: str, path: str, client_id: str, time: str, body: bytes) -> bytes:
    return f"{method.upper()} {path}\n{client_id}.{time}.".encode() + body


def now_timestamp() -> str:
    return format_datetime(datetime.now(UTC))


def parse_request_time(value: str) -> datetime:
    """``Request-Time`` as an aware datetime; ``SignatureError`` (PARAM_ILLEGAL) unless it is an
    ISO 8601 date-time with a UTC offset or ``Z``, e.g. ``2019-05-28T12:12:12+08:00``."""
    problem = f"Request-Time: must be an ISO 8601 date-time with a UTC offset, e.g. {_REQUEST_TIME_EXAMPLE}"
    if not _REQUEST_TIME.fullmatch(value):
        raise SignatureError(ResultCode.PARAM_ILLEGAL, problem, SignatureFailure.BAD_TIME)
    try:  # the shape is right; the values may not be (month 13, 25:00, an offset of 24 h)
        return datetime.fromisoformat(value)
    except ValueError:
        raise SignatureError(ResultCode.PARAM_ILLEGAL, problem, SignatureFailure.BAD_TIME) from None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _seconds(window: timedelta) -> str:
    return f"{window.total_seconds():g} s"


@dataclass(frozen=True)
class SignatureHeader:
    key_version: str
    signature: str  # URL-encoded Base64, as sent
    algorithm: str = ALGORITHM

    def __str__(self) -> str:
        return f"algorithm={self.algorithm},keyVersion={self.key_version},signature={self.signature}"

    @classmethod
    def parse(cls, header: str | None) -> SignatureHeader:
        """Parse ``algorithm=RSA256, keyVersion=1, signature=...`` (spaces after commas allowed)."""
        if not header:
            raise SignatureError(
                ResultCode.INVALID_SIGNATURE, "The Signature header is missing", SignatureFailure.MISSING_SIGNATURE
            )
        parts = {name: value for name, value in _HEADER_PART.findall(header)}
        if parts.get("algorithm") != ALGORITHM or not parts.get("signature"):
            raise SignatureError(
                ResultCode.INVALID_SIGNATURE, "The Signature header is malformed", SignatureFailure.BAD_FORMAT
            )
        return cls(key_version=parts.get("keyVersion") or "1", signature=parts["signature"])


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def sign(private_key: rsa.RSAPrivateKey, content: bytes) -> str:
    raw = private_key.sign(content, padding.PKCS1v15(), hashes.SHA256())
    return quote(base64.b64encode(raw).decode(), safe="")


def verify(public_key: rsa.RSAPublicKey, content: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(unquote(signature), validate=True)
        public_key.verify(raw, content, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class KeyRegistry:
    """The peer's public keys by Client-Id and keyVersion, each parsed once."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], rsa.RSAPublicKey] = {}

    def add(self, client_id: str, key_version: str, public_key_pem: bytes) -> None:
        self._keys[(client_id, str(key_version))] = load_public_key(public_key_pem)

    def add_file(self, client_id: str, key_version: str, path: Path) -> None:
        self.add(client_id, key_version, path.read_bytes())

    def knows_client(self, client_id: str) -> bool:
        return any(known == client_id for known, _ in self._keys)

    def get(self, client_id: str, key_version: str) -> rsa.RSAPublicKey:
        try:
            return self._keys[(client_id, key_version)]
        except KeyError:
            raise SignatureError(
                ResultCode.KEY_NOT_FOUND,
                f"No key for Client-Id {client_id!r} keyVersion {key_version!r}",
                SignatureFailure.UNKNOWN_KEY,
            ) from None


@dataclass(frozen=True)
class Signer:
    """Signs what one party sends: its Client-Id, private key and key version."""

    client_id: str
    private_key: rsa.RSAPrivateKey
    key_version: str = "1"

    @classmethod
    def from_pem(cls, client_id: str, private_key_pem: bytes, key_version: str = "1") -> Signer:
        return cls(client_id, load_private_key(private_key_pem), key_version)

    def headers(self, path: str, body: bytes, *, time: str | None = None, response: bool = False) -> dict[str, str]:
        """Headers for a signed request (``Request-Time``) or response (``Response-Time``)."""
        time = time or now_timestamp()
        signature = sign(self.private_key, content_to_sign("POST", path, self.client_id, time, body))
        return {
            "Content-Type": "application/json; charset=UTF-8",
            "Client-Id": self.client_id,
            "Response-Time" if response else "Request-Time": time,
            "Signature": str(SignatureHeader(self.key_version, signature)),
        }


@dataclass(frozen=True)
class Verifier:
    """Checks what one party receives: the expected Client-Id and the peer's key registry.

    ``request_time_window``, when given, also refuses a request whose ``Request-Time`` lies further
    than that from ``clock()`` in either direction (F PARAM_ILLEGAL naming the header); ``None``
    (the default) sets no window, as the spec sets none.
    """

    client_id: str
    keys: KeyRegistry
    request_time_window: timedelta | None = None
    clock: Callable[[], datetime] = field(default=_utc_now, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.request_time_window is not None and self.request_time_window <= timedelta(0):
            raise ValueError(f"request_time_window must be positive, not {self.request_time_window}")

    def check(self, path: str, headers: Mapping[str, str], body: bytes, *, response: bool = False) -> None:
        """Raise ``SignatureError`` unless it verifies: INVALID_CLIENT, KEY_NOT_FOUND, INVALID_SIGNATURE;
        for a request, PARAM_ILLEGAL when ``Request-Time`` is missing, is not an ISO 8601 date-time with
        an offset, or lies outside ``request_time_window``.

        The signature is checked before the time's value, so a request that is not authentic is only
        ever told so."""
        get = headers.get  # a dict, or httpx/Starlette headers (case-insensitive)
        client_id = get("Client-Id") or get("client-id")
        if client_id != self.client_id:
            raise SignatureError(
                ResultCode.INVALID_CLIENT, f"Unknown Client-Id {client_id!r}", SignatureFailure.UNKNOWN_CLIENT
            )
        time_header = "Response-Time" if response else "Request-Time"
        time = get(time_header) or get(time_header.lower())
        if not time:
            code = ResultCode.INVALID_SIGNATURE if response else ResultCode.PARAM_ILLEGAL
            raise SignatureError(code, f"{time_header}: the header is missing", SignatureFailure.MISSING_TIME)
        header = SignatureHeader.parse(get("Signature") or get("signature"))
        public_key = self.keys.get(client_id, header.key_version)
        if not verify(public_key, content_to_sign("POST", path, client_id, time, body), header.signature):
            raise SignatureError(
                ResultCode.INVALID_SIGNATURE, "The signature does not verify", SignatureFailure.BAD_SIGNATURE
            )
        if not response:
            self._check_request_time(time)

    def _check_request_time(self, value: str) -> None:
        sent = parse_request_time(value)
        if self.request_time_window is None:
            return
        now = self.clock()
        if abs(now - sent) > self.request_time_window:
            raise SignatureError(
                ResultCode.PARAM_ILLEGAL,
                f"Request-Time: {value} is more than {_seconds(self.request_time_window)} from this server's time "
                f"({format_datetime(now.astimezone(UTC))}); check the sender's clock",
                SignatureFailure.CLOCK_SKEW,
            )
