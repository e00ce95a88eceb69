"""Digests of secrets: PINs, OTP codes and tokens are stored only as digests, never in plain text."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

PIN_SCRYPT_COST = 14  # log2 of scrypt's N: about 35 ms a check on one core (r=8, p=1)
_SCRYPT = "scrypt"


def keyed_digest(secret_key: bytes, purpose: str, subject: str, code: str) -> str:
    """HMAC-SHA256 (hex) of ``"{purpose}:{subject}:{code}"`` under the server's secret key.

    Keyed, because a PIN or OTP has so few possible values that a plain hash would be
    reversed by trying them all. ``purpose`` ("pin", "otp") and ``subject`` (the customer or
    challenge id) bind the digest, so one cannot be replayed in place of another.
    """
    message = f"{purpose}:{subject}:{code}".encode()
    return hmac.new(secret_key, message, hashlib.sha256).hexdigest()


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


def pin_verifier(keyed_pin_digest: str, cost: int = PIN_SCRYPT_COST) -> str:
    """What is stored for a PIN: scrypt, salted, over its ``keyed_digest`` (the server secret is the pepper).

    ``"scrypt${cost}${salt}${hash}"``. A six-digit PIN has a million values: the pepper keeps a stolen
    table useless without the server's secret, and scrypt makes each guess cost tens of milliseconds
    even with it. The API and workflows only ever handle the keyed digest, never the PIN.
    """
    salt = os.urandom(16)
    derived = _scrypt(salt, cost).derive(keyed_pin_digest.encode())
    return f"{_SCRYPT}${cost}${_b64(salt)}${_b64(derived)}"


def pin_verifier_matches(stored: str | None, keyed_pin_digest: str) -> bool:
    """Whether the PIN behind ``keyed_pin_digest`` is the one ``stored`` was made from.

    Also reads the older stored form, the keyed digest itself (see ``pin_verifier_outdated``).
    """
    if not stored:
        return False
    if not stored.startswith(f"{_SCRYPT}$"):
        return hmac.compare_digest(stored, keyed_pin_digest)
    try:
        _, cost, salt, derived = stored.split("$")
        _scrypt(_unb64(salt), int(cost)).verify(keyed_pin_digest.encode(), _unb64(derived))
    except (InvalidKey, ValueError):
        return False
    return True


def pin_verifier_outdated(stored: str, cost: int = PIN_SCRYPT_COST) -> bool:
    """A stored PIN to rewrite on its next right entry: a bare keyed digest, or scrypt at another cost."""
    return not stored.startswith(f"{_SCRYPT}${cost}$")


def _scrypt(salt: bytes, cost: int) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=2**cost, r=8, p=1)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
