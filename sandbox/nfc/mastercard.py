"""The sandbox Mastercard (MDES): the public key the NFC SDK encrypts with, and the tokens it knows.

The SDK reaches Mastercard through our proxy with plain HTTPS JSON (no Alipay+ signatures), so
``mastercard_router`` answers plain JSON; a scripted outage is an HTTP 503, as a gateway in front
of MDES would answer. Token states are learnt from the sandbox Ant server (``ant.SandboxAntNfc``),
which is how the real Ant server and Mastercard keep each other informed.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pyemv import kd

from sandbox._http import local_only

GET_PUBLIC_KEY_PATH = "/mdes/digitization/1/0/getPublicKey"

Sleep = Callable[[float], Awaitable[None]]


class Fault(StrEnum):
    """What a scripted call does after its delay (the Ant server also tells a rejection apart)."""

    NONE = "NONE"
    FAIL = "FAIL"
    REJECT = "REJECT"


@dataclass(frozen=True)
class Scripted:
    """One scripted call: wait ``delay`` seconds, then answer with ``fault`` (or normally)."""

    fault: Fault = Fault.NONE
    delay: float = 0.0


class Script:
    """Answers queued for the next calls, oldest first; once used up, calls are answered normally.

    Shared by the sandbox Mastercard and the Ant server so both are scripted the same way."""

    def __init__(self) -> None:
        self._queue: deque[Scripted] = deque()

    def add(self, calls: int, fault: Fault, delay: float) -> None:
        self._queue.extend(Scripted(fault, delay) for _ in range(calls))

    def next(self) -> Scripted:
        return self._queue.popleft() if self._queue else Scripted()

    def clear(self) -> None:
        self._queue.clear()


class TokenState(StrEnum):
    PROVISIONED = "PROVISIONED"  # handed to the device, not yet confirmed
    ACTIVE = "ACTIVE"  # the device stored it (notifyProvisionResult SUCCESS)
    INACTIVE = "INACTIVE"  # the device could not store it (notifyProvisionResult FAILURE)
    SUSPENDED = "SUSPENDED"  # locked by the user (lock); unlock makes it ACTIVE again
    DELETED = "DELETED"  # deleted by the user; never pays again


@dataclass
class McToken:
    token_reference_id: str
    token_pan: str
    state: TokenState
    pan_sequence_number: str = "00"


class MastercardScript(BaseModel):
    calls: int = Field(1, ge=1, le=1000)
    fail: bool = False
    delay: float = Field(0.0, ge=0, le=120)


class SandboxMastercard:
    """Mastercard as the NFC SDK (through our proxy) and the Ant server meet it.

    One RSA key pair per instance (tests get a fresh one each); ``sleep`` is injectable so scripted
    delays need not slow tests down."""

    def __init__(self, *, key_size: int = 2048, sleep: Sleep = asyncio.sleep, imk_ac: bytes | None = None) -> None:
        # The issuer's application-cryptogram master key (emv-hce.md §5.1): every token's
        # single-use keys derive from it, so authorizations can be checked against it.
        self.imk_ac: bytes = imk_ac or secrets.token_bytes(16)
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        public_key = self._private_key.public_key()
        self.certificate: str = public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        # Derived from the key itself, so the id names exactly one key.
        self.public_key_id: str = hashlib.sha256(der).hexdigest()[:32].upper()
        self.sleep: Sleep = sleep
        self._script = Script()
        self._tokens: dict[str, McToken] = {}

    # --- scripting ---------------------------------------------------------------------

    def script(self, calls: int = 1, *, fail: bool = False, delay: float = 0.0) -> None:
        """The next ``calls`` HTTP calls wait ``delay`` seconds, then answer 503 when ``fail``."""
        self._script.add(calls, Fault.FAIL if fail else Fault.NONE, delay)

    async def scripted_outage(self) -> bool:
        """Play the next scripted call: its delay, then whether it is answered 503."""
        scripted = self._script.next()
        if scripted.delay:
            await self.sleep(scripted.delay)
        return scripted.fault is not Fault.NONE

    # --- the SDK's calls ---------------------------------------------------------------

    def public_key(self) -> dict[str, str]:
        return {"publicKeyId": self.public_key_id, "certificate": self.certificate}

    # --- what the Ant server tells Mastercard -----------------------------------------

    def register_token(self, token_reference_id: str, token_pan: str, pan_sequence_number: str = "00") -> None:
        self._tokens[token_reference_id] = McToken(
            token_reference_id, token_pan, TokenState.PROVISIONED, pan_sequence_number
        )

    def single_use_key(self, token_reference_id: str, atc: int) -> bytes:
        """The credential for ``atc`` as the cloud (CMS-D) derives it: ICC MK by option A from IMK-AC,
        PAN and PSN, then the EMV common session key for that ATC (CVN 0x14, emv-hce.md §7.1)."""
        token = self._tokens[token_reference_id]
        with warnings.catch_warnings():  # pyemv warns that 2-key 3DES is legacy; EMV still uses it
            warnings.simplefilter("ignore")
            icc_mk = kd.derive_icc_mk_a(self.imk_ac, token.token_pan, token.pan_sequence_number)
            return kd.derive_common_sk(icc_mk, atc.to_bytes(2, "big") + bytes(6))

    def set_state(self, token_reference_id: str, state: TokenState) -> None:
        token = self._tokens.get(token_reference_id)
        if token is not None:
            token.state = state

    def token(self, token_reference_id: str) -> McToken | None:
        return self._tokens.get(token_reference_id)

    def tokens(self) -> list[McToken]:
        return list(self._tokens.values())

    def reset(self) -> None:
        self._script.clear()
        self._tokens.clear()


def mastercard_router(mc: SandboxMastercard) -> APIRouter:
    """MDES's getPublicKey (plain JSON) and the local-only controls under ``/sandbox/mastercard``."""
    router = APIRouter()

    @router.post(GET_PUBLIC_KEY_PATH)
    async def get_public_key() -> Response:
        if await mc.scripted_outage():
            return JSONResponse({"errorCode": "SERVICE_UNAVAILABLE"}, status_code=503)
        return JSONResponse(mc.public_key())

    router.include_router(_control_router(mc))
    return router


def _control_router(mc: SandboxMastercard) -> APIRouter:
    router = APIRouter(prefix="/sandbox/mastercard", dependencies=[Depends(local_only)])

    @router.post("/script")
    async def script(body: MastercardScript) -> dict[str, Any]:
        mc.script(body.calls, fail=body.fail, delay=body.delay)
        return {"queued": body.calls}

    @router.get("/tokens")
    async def tokens() -> list[dict[str, str]]:
        return [{"tokenReferenceId": t.token_reference_id, "state": t.state} for t in mc.tokens()]

    @router.post("/reset")
    async def reset() -> dict[str, bool]:
        mc.reset()
        return {"reset": True}

    return router


__all__ = [
    "GET_PUBLIC_KEY_PATH",
    "Fault",
    "McToken",
    "SandboxMastercard",
    "Script",
    "Scripted",
    "TokenState",
    "mastercard_router",
]
