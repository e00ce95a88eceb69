"""Digests of secrets: PINs, OTP codes and tokens are stored only as digests, never in plain text."""

from __future__ import annotations

import hashlib
import hmac


def keyed_digest(secret_key: bytes, purpose: str, subject: str, code: str) -> str:
    """HMAC-SHA256 (hex) of ``"{purpose}:{subject}:{code}"`` under the server's secret key.

    Keyed, because a PIN or OTP has so few possible values that a plain hash would be
    reversed by trying them all. ``purpose`` ("pin", "otp") and ``subject`` (the customer or
    challenge id) bind the digest, so one cannot be replayed in place of another.
    """
    message = f"{purpose}:{subject}:{code}".encode()
    return hmac.new(secret_key, message, hashlib.sha256).hexdigest()


def keyed_digest_matches(expected_digest: str | None, secret_key: bytes, purpose: str, subject: str, code: str) -> bool:
    """Whether ``code`` is the one ``expected_digest`` was made from (constant-time compare)."""
    if expected_digest is None:
        return False
    return hmac.compare_digest(expected_digest, keyed_digest(secret_key, purpose, subject, code))


def token_digest(token: str) -> str:
    """SHA-256 (hex) of a random token: the key tokens are stored and looked up under.

    Unkeyed is enough here: tokens are long and random, so they cannot be guessed from it.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def derive_token(secret_key: bytes, purpose: str, subject: str) -> str:
    """A bearer token derived from its subject, not drawn: a retry re-sends byte-identical
    tokens while the database holds only their digests (``token_digest``)."""
    mac = hmac.new(secret_key, f"{purpose}:{subject}".encode(), "sha256").hexdigest()
    return f"{purpose[0].upper()}T{mac[:62]}"
