"""The sandbox Mastercard (MDES): the public key the NFC SDK encrypts with, and the tokens it knows.

The SDK reaches Mastercard through our proxy with plain HTTPS JSON (no Alipay+ signatures), so
``mastercard_router`` answers plain JSON; a scripted outage is an HTTP 503, as a gateway in front
of MDES would answer. Token states are learnt from the sandbox Ant server (``ant.SandboxAntNfc``),
which is how the real Ant server and Mastercard keep each other informed.

``authorize`` is the network's side of a tap (emv-hce.md §5.3, §8): the token behind the PAN must
be ACTIVE, the ARQC is recomputed from IMK-AC with pyemv (ICC MK option A, EMV common session key
for the ATC, CVN 0x14) over the authorization's own fields, an ATC authorized once is never
accepted again, and only then does the issuer side (Alipay+ converting the authorization into the
MPP's pay, ``sandbox.alipayplus.card_events``) decide.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from iso4217 import Currency
from pydantic import BaseModel, Field
from pyemv import ac, kd

from alipayplus.nfc_sdk import PublicKeyAnswer
from sandbox._http import local_only
from sandbox.pos.authorization import Authorization, AuthorizationDecision, DeclineReason, numeric

logger = logging.getLogger(__name__)

GET_PUBLIC_KEY_PATH = "/mdes/digitization/1/0/getPublicKey"
CID_TYPE_MASK, CID_ARQC = 0xC0, 0x80
CVN_EMV_CSK = 0x14  # IAD byte 2: the only cryptogram version the sandbox cards use (emv-hce.md §5.2)

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


@dataclass(frozen=True)
class VerifiedAuthorization:
    """An authorization whose cryptogram checked out, with the token behind its PAN."""

    authorization: Authorization
    token_reference_id: str


class Issuer(Protocol):
    """Who decides a verified authorization: for Alipay+ tokens, Alipay+ asking the MPP to pay."""

    async def authorize(self, request: VerifiedAuthorization) -> AuthorizationDecision: ...


@dataclass(frozen=True)
class AuthorizationRecord:
    authorization: Authorization
    decision: AuthorizationDecision
    received_at: datetime


class MastercardScript(BaseModel):
    calls: int = Field(1, ge=1, le=1000)
    fail: bool = False
    delay: float = Field(0.0, ge=0, le=120)


class SandboxMastercard:
    """Mastercard as the NFC SDK (through our proxy) and the Ant server meet it.

    One RSA key pair per instance (tests get a fresh one each); ``sleep`` is injectable so scripted
    delays need not slow tests down."""

    def __init__(
        self,
        *,
        key_size: int = 2048,
        sleep: Sleep = asyncio.sleep,
        imk_ac: bytes | None = None,
        issuer: Issuer | None = None,
    ) -> None:
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
        self.issuer = issuer  # without one, a verified authorization has nobody to approve it
        self.authorizations: list[AuthorizationRecord] = []
        self._authorized_atcs: dict[str, set[int]] = {}  # by tokenReferenceId

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

    def public_key(self) -> PublicKeyAnswer:
        return PublicKeyAnswer(public_key_id=self.public_key_id, certificate=self.certificate)

    # --- what the Ant server tells Mastercard -----------------------------------------

    def register_token(self, token_reference_id: str, token_pan: str, pan_sequence_number: str = "00") -> None:
        self._tokens[token_reference_id] = McToken(
            token_reference_id, token_pan, TokenState.PROVISIONED, pan_sequence_number
        )

    def single_use_key(self, token_reference_id: str, atc: int) -> bytes:
        """The credential for ``atc`` as the cloud (CMS-D) derives it: ICC MK by option A from IMK-AC,
        PAN and PSN, then the EMV common session key for that ATC (CVN 0x14, emv-hce.md §7.1)."""
        token = self._tokens[token_reference_id]
        return self._session_key(token.token_pan, token.pan_sequence_number, atc)

    def _session_key(self, pan: str, pan_sequence_number: str, atc: int) -> bytes:
        with warnings.catch_warnings():  # pyemv warns that 2-key 3DES is legacy; EMV still uses it
            warnings.simplefilter("ignore")
            icc_mk = kd.derive_icc_mk_a(self.imk_ac, pan, pan_sequence_number)
            return kd.derive_common_sk(icc_mk, atc.to_bytes(2, "big") + bytes(6))

    def set_state(self, token_reference_id: str, state: TokenState) -> None:
        token = self._tokens.get(token_reference_id)
        if token is not None:
            token.state = state

    def token(self, token_reference_id: str) -> McToken | None:
        return self._tokens.get(token_reference_id)

    def tokens(self) -> list[McToken]:
        return list(self._tokens.values())

    def token_by_pan(self, token_pan: str) -> McToken | None:
        return next((token for token in self._tokens.values() if token.token_pan == token_pan), None)

    def reset(self) -> None:
        self._script.clear()
        self._tokens.clear()
        self.authorizations.clear()
        self._authorized_atcs.clear()

    # --- authorizations from the terminals' acquirers -----------------------------------

    async def authorize(self, authorization: Authorization) -> AuthorizationDecision:
        """Verify the token, the cryptogram and the ATC, then let the issuer side decide."""
        decision = await self._decide(authorization)
        self.authorizations.append(AuthorizationRecord(authorization, decision, datetime.now(UTC)))
        return decision

    async def _decide(self, authorization: Authorization) -> AuthorizationDecision:
        token = self.token_by_pan(authorization.token_pan)
        if token is None:
            return AuthorizationDecision.decline(DeclineReason.UNKNOWN_TOKEN, "No token has this PAN")
        reference = token.token_reference_id
        if token.state is not TokenState.ACTIVE:
            return _declined(reference, DeclineReason.TOKEN_NOT_ACTIVE, f"The token is {token.state}")
        if int(authorization.cryptogram_information_data, 16) & CID_TYPE_MASK != CID_ARQC:
            return _declined(reference, DeclineReason.NOT_AN_ARQC, "Only an ARQC is authorized online")
        problem = self._cryptogram_problem(authorization)
        if problem is not None:
            return _declined(reference, DeclineReason.CRYPTOGRAM_INVALID, problem)
        authorized = self._authorized_atcs.setdefault(reference, set())
        if authorization.atc in authorized:
            return _declined(reference, DeclineReason.REPLAYED_ATC, f"ATC {authorization.atc} was already authorized")
        authorized.add(authorization.atc)  # before the issuer answers: a concurrent replay is refused too
        if self.issuer is None:
            return _declined(reference, DeclineReason.ISSUER_UNAVAILABLE, "No issuer is connected")
        try:
            decision = await self.issuer.authorize(VerifiedAuthorization(authorization, reference))
        except Exception:
            logger.exception("the issuer failed on authorization %s", authorization.retrieval_reference)
            return _declined(reference, DeclineReason.ISSUER_UNAVAILABLE, "The issuer did not answer")
        return decision.model_copy(update={"token_reference_id": reference})

    def _cryptogram_problem(self, authorization: Authorization) -> str | None:
        """Why the ARQC does not verify, or None. Recomputed from IMK-AC over the message's own
        fields (the issuer trusts neither the terminal nor the card): 9F02 ‖ 9F03 ‖ 9F1A ‖ 95 ‖
        5F2A ‖ 9A ‖ 9C ‖ 9F37 ‖ AIP ‖ ATC ‖ CVR, CVN 0x14 (emv-hce.md §5.3)."""
        iad = bytes.fromhex(authorization.issuer_application_data)
        if iad[1] != CVN_EMV_CSK:
            return f"Cryptogram version {iad[1]:02X} is not supported"
        other = authorization.amount_other
        if other is not None and other.currency != authorization.amount.currency:
            return "The other amount is in another currency"
        data = (
            numeric(authorization.amount.value, 6)
            + numeric(other.value if other is not None else 0, 6)
            + bytes.fromhex(authorization.country_code)
            + bytes.fromhex(authorization.terminal_verification_results)
            + numeric(Currency(authorization.amount.currency).number, 2)
            + bytes.fromhex(f"{authorization.transaction_date:%y%m%d}")
            + bytes.fromhex(authorization.transaction_type)
            + bytes.fromhex(authorization.unpredictable_number)
            + bytes.fromhex(authorization.application_interchange_profile)
            + authorization.atc.to_bytes(2, "big")
            + authorization.card_verification_results
        )
        session_key = self._session_key(authorization.token_pan, authorization.pan_sequence_number, authorization.atc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = ac.generate_ac(session_key, data)
        if not hmac.compare_digest(expected, bytes.fromhex(authorization.cryptogram)):
            return "The cryptogram does not match the authorization"
        return None


def _declined(token_reference_id: str, reason: DeclineReason, message: str) -> AuthorizationDecision:
    decision = AuthorizationDecision.decline(reason, message)
    return decision.model_copy(update={"token_reference_id": token_reference_id})


def mastercard_router(mc: SandboxMastercard) -> APIRouter:
    """MDES's getPublicKey (plain JSON) and the local-only controls under ``/sandbox/mastercard``."""
    router = APIRouter()

    @router.post(GET_PUBLIC_KEY_PATH)
    async def get_public_key() -> Response:
        if await mc.scripted_outage():
            return JSONResponse({"errorCode": "SERVICE_UNAVAILABLE"}, status_code=503)
        return JSONResponse(mc.public_key().model_dump(mode="json", exclude_none=True))

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

    @router.post("/authorizations")
    async def authorize(body: Authorization) -> dict[str, Any]:
        """A terminal's acquirer sends an authorization (sandbox.pos.HttpCardNetwork)."""
        return (await mc.authorize(body)).model_dump(mode="json")

    @router.get("/authorizations")
    async def authorizations() -> list[dict[str, Any]]:
        return [
            {
                "authorization": record.authorization.model_dump(mode="json"),
                "decision": record.decision.model_dump(mode="json"),
                "receivedAt": record.received_at.isoformat(),
            }
            for record in mc.authorizations
        ]

    return router


__all__ = [
    "GET_PUBLIC_KEY_PATH",
    "AuthorizationRecord",
    "Fault",
    "Issuer",
    "McToken",
    "SandboxMastercard",
    "Script",
    "Scripted",
    "TokenState",
    "VerifiedAuthorization",
    "mastercard_router",
]
