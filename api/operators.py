"""The operator's credential on the ops listener (``api.main.create_ops_app``): a bearer token read
from ``MPP_OPS_TOKEN_FILE``, compared in constant time; the route dependencies that require it."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from fastapi import HTTPException, Request

from wallet.keys import InsecureSecretError, read_secret_file

MIN_TOKEN_LENGTH = 32
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: it travels in a header


class OpsConfigError(Exception):
    """The operator listener cannot start: its credential is missing or unusable."""


class OperatorToken:
    """The operator's bearer token; only digests of equal length are ever compared."""

    def __init__(self, token: str) -> None:
        if len(token) < MIN_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
            raise OpsConfigError(
                f"the operator token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces"
            )
        self._digest = hashlib.sha256(token.encode()).digest()

    @classmethod
    def from_file(cls, path: Path | None, *, check_mode: bool = True) -> OperatorToken:
        """The token in ``path``, a secret like the keys: refused if group or others may read it."""
        if path is None:
            raise OpsConfigError("no operator token: set MPP_OPS_TOKEN_FILE")
        try:
            token = read_secret_file(path, check_mode=check_mode).decode("ascii").strip()
        except (OSError, UnicodeDecodeError, InsecureSecretError) as exc:
            raise OpsConfigError(f"cannot use the operator token in {path} (MPP_OPS_TOKEN_FILE): {exc}") from None
        return cls(token)

    def matches(self, presented: str) -> bool:
        presented_digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(presented_digest, self._digest)


def _refused() -> HTTPException:
    return HTTPException(401, "operator credential required", headers={"WWW-Authenticate": 'Bearer realm="mpp-ops"'})


def require_operator(request: Request) -> None:
    """Dependency of every ops route: ``Authorization: Bearer <token>``."""
    token: OperatorToken = request.app.state.operator_token
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.matches(presented.strip()):
        raise _refused()


def require_operator_in_path(request: Request, operator_token: str) -> None:
    """Dependency of the ``/codec/{token}/…`` routes (``MPP_OPS_TOKEN_IN_PATH``), for a Web UI that
    cannot send the header: the token is the path segment instead."""
    token: OperatorToken = request.app.state.operator_token
    if not token.matches(operator_token):
        raise _refused()
