"""First-run key material for the local stack, under ``var/keys/`` (git-ignored).

Production keys come from Alipay+ Developer Center and the operator, never from here.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def ensure_key_pair(keys_dir: Path, name: str) -> None:
    """``{name}_private.pem`` (PKCS#8) and ``{name}_public.pem`` (SPKI), RSA-2048, made once."""
    private_path, public_path = keys_dir / f"{name}_private.pem", keys_dir / f"{name}_public.pem"
    if private_path.exists() and public_path.exists():
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(
        private_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def ensure_dev_keys(keys_dir: Path) -> None:
    """The MPP's and the sandbox Alipay+'s key pairs, the MPP's secret for keyed digests and
    the AES-256 key that encrypts workflow payloads."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    ensure_key_pair(keys_dir, "mpp")
    ensure_key_pair(keys_dir, "alipayplus")
    for secret in (keys_dir / "mpp_secret.key", keys_dir / "payload.key"):
        if not secret.exists():
            _write_private(secret, secrets.token_bytes(32))
