"""The phone's secure local store for the NFC token, its card profile and its credentials.

An HCE phone has no secure element (emv-hce.md §7.1): the token PAN, the card profile and the
single-use keys live in app storage, so they are sealed with AES-GCM before they touch it. The key
sits in a ``DeviceKeystore`` (the stand-in for Android Keystore): it encrypts and decrypts for its
callers and never hands the key out, so no code path can leak it. Each record is bound to its name
(GCM associated data), so swapping two sealed files is caught like any other tampering.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # 96 bits, GCM's native nonce size; random per write
_FORMAT = b"\x01"  # leading byte of a sealed record: lets the format change later
_AAD_PREFIX = b"hce_device.secure_store/v1:"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_SUFFIX = ".sealed"


class SecureStoreError(RuntimeError):
    """The store cannot give a trustworthy answer (bad key file, unreadable record, bad name)."""


class TamperedRecord(SecureStoreError):
    """A sealed record failed authentication: changed, truncated, moved, or sealed by another key."""


class DeviceKeystore:
    """Holds a 256-bit AES key and seals/opens data with it; the key never leaves this object.

    ``path`` None keeps the key in memory only (lost with the object, as with an uninstalled app);
    otherwise the key is created once with mode 0600 and refused if others may read it.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.__aead = AESGCM(self.__load_or_create(Path(path)) if path is not None else AESGCM.generate_key(256))

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """``nonce ‖ ciphertext ‖ tag`` with a fresh random nonce (never reused under this key)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self.__aead.encrypt(nonce, plaintext, associated_data)

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        """The plaintext of ``seal``'s output; ``TamperedRecord`` if it does not authenticate."""
        if len(sealed) < _NONCE_BYTES + 16:
            raise TamperedRecord("the sealed data is too short to be a record")
        try:
            return self.__aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise TamperedRecord("the sealed data failed authentication (tampered or wrong key)") from None

    def __repr__(self) -> str:
        return "DeviceKeystore(<key hidden>)"

    @staticmethod
    def __load_or_create(path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise SecureStoreError(f"the key file {path} is readable by others (mode {mode:o})") from None
            key = path.read_bytes()
            if len(key) != _KEY_BYTES:
                raise SecureStoreError(f"the key file {path} does not hold a 256-bit key") from None
            return key
        key = AESGCM.generate_key(256)
        with os.fdopen(fd, "wb") as file:
            file.write(key)
        return key


class SecureStore:
    """Named JSON records sealed by a ``DeviceKeystore``; one file per record, or in memory.

    Writes go through a temporary file and an atomic rename, so a crash leaves the old record or
    the new one, never half of one.
    """

    def __init__(self, keystore: DeviceKeystore, directory: Path | str | None = None) -> None:
        self._keystore = keystore
        self._directory = Path(directory) if directory is not None else None
        self._memory: dict[str, bytes] = {}
        if self._directory is not None:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, name: str, record: dict[str, Any]) -> None:
        sealed = _FORMAT + self._keystore.seal(json.dumps(record).encode(), _aad(name))
        if self._directory is None:
            self._memory[name] = sealed
            return
        target = self._path(name)
        temporary = target.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(sealed)
        os.replace(temporary, target)

    def get(self, name: str) -> dict[str, Any] | None:
        """The record, None if there is none; ``TamperedRecord`` if it was changed."""
        if self._directory is None:
            sealed = self._memory.get(name)
            _aad(name)
        else:
            try:
                sealed = self._path(name).read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise SecureStoreError(f"record {name!r} cannot be read: {exc}") from exc
        if sealed is None:
            return None
        if not sealed.startswith(_FORMAT):
            raise TamperedRecord(f"record {name!r} has an unknown format")
        try:
            plaintext = self._keystore.open(sealed[len(_FORMAT) :], _aad(name))
        except TamperedRecord as exc:
            raise TamperedRecord(f"record {name!r}: {exc}") from None
        record = json.loads(plaintext)
        if not isinstance(record, dict):
            raise SecureStoreError(f"record {name!r} is not a JSON object")
        return record

    def delete(self, name: str) -> None:
        if self._directory is None:
            _aad(name)
            self._memory.pop(name, None)
        else:
            self._path(name).unlink(missing_ok=True)

    def _path(self, name: str) -> Path:
        assert self._directory is not None
        _aad(name)  # validates the name: no path tricks
        return self._directory / f"{name}{_SUFFIX}"


def _aad(name: str) -> bytes:
    """The associated data binding a record to its name (and refusing names that are paths)."""
    if not _NAME.fullmatch(name):
        raise SecureStoreError(f"bad record name {name!r}")
    return _AAD_PREFIX + name.encode()


__all__ = ["DeviceKeystore", "SecureStore", "SecureStoreError", "TamperedRecord"]
