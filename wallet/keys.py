"""First-run key material for the local stack, under ``var/keys/`` (git-ignored), and reading key files.

Production keys come from Alipay+ Developer Center and the operator, never from here. Every file
made here is written whole or not at all, owner-only (0600) from its first byte, in a 0700
directory; ``read_secret_file`` refuses a private key or secret that others can read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class InsecureSecretError(Exception):
    """A secret configured so that it would leak: a key file others may read, an API key sent in
    plaintext. Deliberately not a ValueError: inside ``Settings`` validation pydantic would turn
    that into a ValidationError, which prints every input, the secret among them."""


class KeyFileModeError(InsecureSecretError):
    """A private key or secret file that group or others may read."""


def read_secret_file(path: Path, *, check_mode: bool = True) -> bytes:
    """The bytes of a private key or secret, refused (``KeyFileModeError``) if others may read it.

    The rule, on POSIX (Windows has no mode bits to check): others get no permission at all; the
    group none either (0600), unless root owns the file and this process is not root, when the group
    may read (0640): a secret mounted root-owned and readable by the service's group (a Kubernetes
    secret with fsGroup) is how shared secrets are handed over, and PostgreSQL's rule for its own
    key. The mode is taken from the opened file, so what is checked is what is read.
    ``check_mode=False`` (``MPP_KEY_FILE_MODE_CHECK=false``) is for test keys committed to git,
    which git can only store as 0644.
    """
    with path.open("rb") as file:
        if check_mode and os.name == "posix":
            info = os.fstat(file.fileno())
            mode = stat.S_IMODE(info.st_mode)
            shared_by_root = info.st_uid == 0 and os.geteuid() != 0
            if mode & (0o037 if shared_by_root else 0o077):
                rule = (
                    f"a root-owned private key or secret may be read by its group at most: run `chmod 640 {path}`"
                    if shared_by_root
                    else f"a private key or secret must be readable by its owner only: run `chmod 600 {path}`"
                )
                raise KeyFileModeError(
                    f"{path} is open to group or others (mode {mode:04o}); {rule} "
                    "(MPP_KEY_FILE_MODE_CHECK=false skips this check, for test keys only)"
                )
        return file.read()


def _private_directory(directory: Path) -> None:
    """``directory`` with mode 0700: made so (its parents as the umask says), or tightened if it
    exists, is ours and is open to others (made by an older version)."""
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        info = directory.stat()
        if os.name != "posix" or info.st_uid != os.getuid() or not stat.S_IMODE(info.st_mode) & 0o077:
            return
    os.chmod(directory, 0o700)  # mkdir's mode passes through the umask; this does not


def _write_private(path: Path, data: bytes) -> None:
    """``data`` into ``path``, atomically and owner-only from the first byte: a temporary file
    beside it, created 0600 with O_EXCL, written and synced, then renamed over ``path``. A crash
    leaves the old file or the new one, never a partial or a briefly world-readable one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), 0o600)  # exactly 0600, whatever the umask took away
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    if os.name == "posix":  # the rename itself survives a power cut only once the directory is synced
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


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
    _write_private(
        public_path,
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


def ensure_dev_keys(keys_dir: Path) -> None:
    """The MPP's and the sandbox Alipay+'s key pairs, the MPP's secret for keyed digests and
    the AES-256 key that encrypts workflow payloads; every file 0600, in a 0700 directory."""
    _private_directory(keys_dir)
    ensure_key_pair(keys_dir, "mpp")
    ensure_key_pair(keys_dir, "alipayplus")
    for secret in (keys_dir / "mpp_secret.key", keys_dir / "payload.key"):
        if not secret.exists():
            _write_private(secret, secrets.token_bytes(32))
    if os.name == "posix":  # files an older version made readable to others are closed now, or loading refuses them
        for made in keys_dir.iterdir():
            info = made.stat()
            if made.is_file() and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
                os.chmod(made, 0o600)


def ensure_ops_token(path: Path) -> str:
    """The operator listener's bearer token (``ops.token``, 43 URL-safe characters), made once,
    created readable by its owner only (mode 0600 from the start, never wider)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text(encoding="ascii").strip()
