"""The sandbox Ant server's NFC logic, reached through Alipay+'s signed ``sdkProxy`` (seed 000).

The NFC SDK's requests are opaque to the MPP: it wraps them in ``SdkProxyRequest`` with the
user's customerId and Alipay+ hands them to the Ant server. ``SandboxAntNfc`` is that server's
memory (token applications, tokens, credentials) and ``ant_nfc_router`` is Alipay+'s sdkProxy
in front of it: the MPP's signature is checked and the answer signed, exactly as for every other
Alipay+ API. The Ant server's own outcome travels inside ``sdkResponseHeader.code``; a transport
or envelope problem is Alipay+'s ``result``. The payloads it reads and answers are
``alipayplus.nfc_sdk``'s, the same the MPP's workflows send and read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, get_args

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, ValidationError

from alipayplus import Result, ResultCode
from alipayplus.nfc import SDK_SUCCESS, SdkProxyRequest, SdkProxyResponse
from alipayplus.nfc_sdk import (
    ApplyNfcTokenAnswer,
    ApplyNfcTokenData,
    CardProfile,
    Credential,
    DeleteTokenData,
    LockTokenData,
    NotifyProvisionResultAnswer,
    NotifyProvisionResultData,
    NtuStatus,
    ProvisionAnswer,
    ProvisionData,
    QueryNtuResultAnswer,
    QueryNtuResultData,
    QueryTokenAnswer,
    QueryTokenData,
    RefusalAnswer,
    ReplenishAnswer,
    ReplenishData,
    SdkData,
    SdkRequestData,
    SdkRequestHeader,
    SdkResponseHeader,
    TokenRequestStatus,
    TokenStateAnswer,
    UnlockTokenData,
)
from sandbox._http import answer_signed_call, first_error, local_only
from sandbox.alipayplus.peer import SandboxAlipayPlus

from .mastercard import Fault, SandboxMastercard, Script, Sleep, TokenState

logger = logging.getLogger(__name__)

AntApi = Literal[
    "applyNfcToken",
    "queryToken",
    "provision",
    "notifyProvisionResult",
    "queryNTUResult",
    "replenish",
    "lockToken",
    "unlockToken",
    "deleteToken",
]
ANT_APIS: tuple[str, ...] = get_args(AntApi)
TokenActiveHook = Callable[[str, str, str], Awaitable[None]]  # (tokenReferenceId, customerId, deviceFingerprint)

SYSTEM_ERROR = "SYSTEM_ERROR"
UNKNOWN_API = "UNKNOWN_API"
PARAM_ILLEGAL = "PARAM_ILLEGAL"
TOKEN_NOT_FOUND = "TOKEN_NOT_FOUND"
TOKEN_NOT_ACTIVE = "TOKEN_NOT_ACTIVE"
REJECTED = "REJECTED"

TOKEN_PAN_PREFIX = "5413"
TOKEN_REFERENCE_PREFIX = "DAPLMC"
AID = "A0000000041010"
DEFAULT_REJECT_REASON = "The card network declined the token request"
CREDENTIAL_TTL = timedelta(days=7)

PayloadT = TypeVar("PayloadT", bound=SdkRequestData)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- memory ------------------------------------------------------------------------------


@dataclass
class Application:
    """One applyNfcToken: decided (approved or rejected) once it has been polled enough."""

    token_request_id: str
    customer_id: str
    device_fingerprint: str
    public_key_id: str
    reject_reason: str | None = None  # decided at creation (customer / next application), told later
    polls: int = 0
    status: TokenRequestStatus = TokenRequestStatus.PENDING
    token_reference_id: str | None = None


@dataclass
class AntToken:
    """An approved token as the Ant server tracks it, from approval to credentials."""

    token_reference_id: str
    customer_id: str
    device_fingerprint: str
    card_profile: CardProfile | None = None
    state: TokenState | None = None  # None until provisioned
    ntu_polls: int = 0
    next_atc: int = 1
    activated_at: datetime | None = None


@dataclass(frozen=True)
class AntAnswer:
    """The Ant server's answer: ``sdkResponseHeader.code`` and the ``sdkResponseData`` payload."""

    code: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, code: str, payload: SdkData) -> AntAnswer:
        """``payload`` as the JSON object it is sent as (absent optional fields left out)."""
        return cls(code, payload.model_dump(mode="json", exclude_none=True))


class AntError(Exception):
    """A refusal by the Ant server: answered with ``code`` in the header and ``reason`` in the data."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def answer(self) -> AntAnswer:
        return AntAnswer.of(self.code, RefusalAnswer(reason=self.reason))


@dataclass(frozen=True)
class AntCall:
    """One call received, for tests and the sandbox's controls."""

    api: str
    customer_id: str
    code: str
    received_at: datetime


def _luhn_digit(digits: str) -> str:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def token_pan() -> str:
    """A random 16-digit Mastercard token PAN (5413…) with a valid Luhn check digit, as real ones have."""
    body = TOKEN_PAN_PREFIX + "".join(str(secrets.randbelow(10)) for _ in range(11))
    return body + _luhn_digit(body)


def token_reference_id() -> str:
    return TOKEN_REFERENCE_PREFIX + secrets.token_hex(13).upper()


def _expiry(now: datetime) -> str:
    """YYMM three years ahead: the token's lifetime."""
    return f"{(now.year + 3) % 100:02d}{now.month:02d}"


class SandboxAntNfc:
    """The Ant server's NFC APIs, in memory.

    ``approve_after_polls``/``ntu_after_polls`` are how many queryToken/queryNTUResult polls answer
    PENDING first, so the MPP's polling is exercised; ``clock`` and ``sleep`` are injectable; set
    ``on_token_active`` (async) to learn of each token's activation, as Alipay+ does before it sends
    tokenActivationNotification.
    """

    def __init__(
        self,
        mastercard: SandboxMastercard,
        *,
        approve_after_polls: int = 2,
        ntu_after_polls: int = 1,
        clock: Callable[[], datetime] = _utc_now,
        sleep: Sleep = asyncio.sleep,
        on_token_active: TokenActiveHook | None = None,
    ) -> None:
        self.mastercard = mastercard
        self.approve_after_polls = approve_after_polls
        self.ntu_after_polls = ntu_after_polls
        self.clock = clock
        self.sleep = sleep
        self.on_token_active = on_token_active
        self.calls: list[AntCall] = []
        self._scripts: dict[str, Script] = {api: Script() for api in ANT_APIS}
        self._rejected_customers: dict[str, str] = {}
        self._applications: dict[str, Application] = {}
        self._tokens: dict[str, AntToken] = {}
        self._answered: dict[tuple[str, str, str], AntAnswer] = {}  # by (customer, api, requestId)
        self._handlers: dict[str, Callable[[str, str, bool], Awaitable[SdkData]]] = {
            "applyNfcToken": self._apply_nfc_token,
            "queryToken": self._query_token,
            "provision": self._provision,
            "notifyProvisionResult": self._notify_provision_result,
            "queryNTUResult": self._query_ntu_result,
            "replenish": self._replenish,
            "lockToken": self._lock_token,
            "unlockToken": self._unlock_token,
            "deleteToken": self._delete_token,
        }

    # --- scripting ---------------------------------------------------------------------

    def script(
        self, api: AntApi, calls: int = 1, *, fail: bool = False, reject: bool = False, delay: float = 0.0
    ) -> None:
        """The next ``calls`` calls to ``api`` wait ``delay`` seconds, then answer SYSTEM_ERROR
        (``fail``) or are rejected (``reject``): applyNfcToken's application / queryToken's answer
        become REJECTED, any other API answers code REJECTED."""
        fault = Fault.FAIL if fail else Fault.REJECT if reject else Fault.NONE
        self._scripts[api].add(calls, fault, delay)

    def reject_next_application(self) -> None:
        self.script("applyNfcToken", reject=True)

    def reject_customer(self, customer_id: str, reason: str = DEFAULT_REJECT_REASON) -> None:
        """Every application by ``customer_id`` from now on is REJECTED with ``reason``."""
        self._rejected_customers[customer_id] = reason

    def accept_customer(self, customer_id: str) -> None:
        """Undo ``reject_customer``: the customer's next application is approved as usual."""
        self._rejected_customers.pop(customer_id, None)

    def reset(self) -> None:
        for script in self._scripts.values():
            script.clear()
        self._rejected_customers.clear()
        self._applications.clear()
        self._tokens.clear()
        self._answered.clear()
        self.calls.clear()

    # --- inspection --------------------------------------------------------------------

    def application(self, token_request_id: str) -> Application | None:
        return self._applications.get(token_request_id)

    def token(self, token_reference_id: str) -> AntToken | None:
        return self._tokens.get(token_reference_id)

    def tokens(self) -> list[AntToken]:
        return list(self._tokens.values())

    # --- the SDK's calls ---------------------------------------------------------------

    async def call(self, api: str, customer_id: str, data: str, request_id: str | None = None) -> AntAnswer:
        """One SDK request for ``api`` by ``customer_id`` with the raw ``sdkRequestData``. A repeat of
        a request that succeeded (the same ``requestId`` from the SDK's header [inferred]: the MPP
        retries after a lost answer) gets the same answer and changes nothing: no second application,
        no second batch of credentials."""
        key = (customer_id, api, request_id) if request_id else None
        answer = self._answered.get(key) if key else None
        if answer is None:
            answer = await self._answer(api, customer_id, data)
            if key and answer.code == SDK_SUCCESS:
                self._answered[key] = answer
        self.calls.append(AntCall(api, customer_id, answer.code, self.clock()))
        return answer

    async def _answer(self, api: str, customer_id: str, data: str) -> AntAnswer:
        handler = self._handlers.get(api)
        if handler is None:
            return AntError(UNKNOWN_API, f"Unknown api {api!r}").answer()
        scripted = self._scripts[api].next()
        if scripted.delay:
            await self.sleep(scripted.delay)
        if scripted.fault is Fault.FAIL:
            return AntError(SYSTEM_ERROR, "The Ant server failed (scripted)").answer()
        try:
            return AntAnswer.of(SDK_SUCCESS, await handler(customer_id, data, scripted.fault is Fault.REJECT))
        except AntError as error:
            return error.answer()

    async def _apply_nfc_token(self, customer_id: str, data: str, reject: bool) -> ApplyNfcTokenAnswer:
        payload = _parse(ApplyNfcTokenData, data)
        reason = DEFAULT_REJECT_REASON if reject else self._rejected_customers.get(customer_id)
        application = Application(
            token_request_id=secrets.token_hex(16),
            customer_id=customer_id,
            device_fingerprint=payload.device_fingerprint.lower(),
            public_key_id=payload.public_key_id,
            reject_reason=reason,
        )
        self._applications[application.token_request_id] = application
        return ApplyNfcTokenAnswer(status=TokenRequestStatus.PENDING, token_request_id=application.token_request_id)

    async def _query_token(self, customer_id: str, data: str, reject: bool) -> QueryTokenAnswer:
        application = self._own_application(customer_id, _parse(QueryTokenData, data).token_request_id)
        if reject and application.status is TokenRequestStatus.PENDING:
            application.reject_reason = application.reject_reason or DEFAULT_REJECT_REASON
            application.status = TokenRequestStatus.REJECTED
        if application.status is TokenRequestStatus.PENDING:
            application.polls += 1
            if application.polls > self.approve_after_polls:
                self._decide(application)
        return _token_status(application)

    def _decide(self, application: Application) -> None:
        if application.reject_reason is not None:
            application.status = TokenRequestStatus.REJECTED
            return
        application.status = TokenRequestStatus.APPROVED
        application.token_reference_id = token_reference_id()
        self._tokens[application.token_reference_id] = AntToken(
            application.token_reference_id, application.customer_id, application.device_fingerprint
        )

    async def _provision(self, customer_id: str, data: str, reject: bool) -> ProvisionAnswer:
        token = self._own_token(customer_id, _parse(ProvisionData, data).token_reference_id, reject)
        profile = token.card_profile
        if profile is None:  # a retried provision gets the same profile
            profile = token.card_profile = self._card_profile()
            token.state = TokenState.PROVISIONED
            self.mastercard.register_token(
                token.token_reference_id, str(profile.token_pan), str(profile.pan_sequence_number)
            )
        return ProvisionAnswer(token_reference_id=token.token_reference_id, card_profile=profile, credentials=[])

    def _card_profile(self) -> CardProfile:
        return CardProfile(
            token_pan=token_pan(),
            pan_sequence_number="00",
            expiry_date=_expiry(self.clock()),
            aid=AID,
            issuer_master_key_id="IMK" + secrets.token_hex(8).upper(),
        )

    async def _notify_provision_result(self, customer_id: str, data: str, reject: bool) -> NotifyProvisionResultAnswer:
        payload = _parse(NotifyProvisionResultData, data)
        token = self._own_token(customer_id, payload.token_reference_id, reject)
        if token.state is None:
            raise AntError(TOKEN_NOT_ACTIVE, "The token has not been provisioned")
        if payload.result == "FAILURE":
            if token.state is not TokenState.ACTIVE:
                self._set_state(token, TokenState.INACTIVE)
        elif token.state is not TokenState.ACTIVE:  # a repeated SUCCESS activates (and notifies) once
            self._set_state(token, TokenState.ACTIVE)
            token.activated_at = self.clock()
            await self._token_active(token)
        return NotifyProvisionResultAnswer(acknowledged=True)

    def _set_state(self, token: AntToken, state: TokenState) -> None:
        token.state = state
        self.mastercard.set_state(token.token_reference_id, state)

    async def _token_active(self, token: AntToken) -> None:
        """Tell the hook; its failure must not undo the acknowledgement the SDK is waiting for."""
        if self.on_token_active is None:
            return
        try:
            await self.on_token_active(token.token_reference_id, token.customer_id, token.device_fingerprint)
        except Exception:
            logger.exception("on_token_active failed for %s", token.token_reference_id)

    async def _query_ntu_result(self, customer_id: str, data: str, reject: bool) -> QueryNtuResultAnswer:
        token = self._own_token(customer_id, _parse(QueryNtuResultData, data).token_reference_id, reject)
        if token.state is not TokenState.ACTIVE:
            return QueryNtuResultAnswer(status=NtuStatus.PENDING)  # no NTU before the device confirmed the token
        token.ntu_polls += 1
        return QueryNtuResultAnswer(
            status=NtuStatus.UPDATED if token.ntu_polls > self.ntu_after_polls else NtuStatus.PENDING
        )

    async def _replenish(self, customer_id: str, data: str, reject: bool) -> ReplenishAnswer:
        payload = _parse(ReplenishData, data)
        token = self._own_token(customer_id, payload.token_reference_id, reject)
        if token.state is not TokenState.ACTIVE:
            raise AntError(TOKEN_NOT_ACTIVE, "The token is not active")
        expires_at = (self.clock() + CREDENTIAL_TTL).isoformat()
        first, token.next_atc = token.next_atc, token.next_atc + payload.count
        credentials = [
            Credential(
                atc=atc,
                single_use_key=self.mastercard.single_use_key(token.token_reference_id, atc).hex(),
                expires_at=expires_at,
            )
            for atc in range(first, token.next_atc)
        ]
        return ReplenishAnswer(credentials=credentials)

    # --- token management (lock, unlock, delete): the token's state at Mastercard ---------

    async def _lock_token(self, customer_id: str, data: str, reject: bool) -> TokenStateAnswer:
        """ACTIVE → SUSPENDED; a repeat answers the same."""
        token = self._own_token(customer_id, _parse(LockTokenData, data).token_reference_id, reject)
        if token.state not in (TokenState.ACTIVE, TokenState.SUSPENDED):
            raise AntError(TOKEN_NOT_ACTIVE, "Only an active token can be locked")
        self._set_state(token, TokenState.SUSPENDED)
        return TokenStateAnswer(state=TokenState.SUSPENDED.value)

    async def _unlock_token(self, customer_id: str, data: str, reject: bool) -> TokenStateAnswer:
        """SUSPENDED → ACTIVE; a repeat answers the same."""
        token = self._own_token(customer_id, _parse(UnlockTokenData, data).token_reference_id, reject)
        if token.state not in (TokenState.SUSPENDED, TokenState.ACTIVE):
            raise AntError(TOKEN_NOT_ACTIVE, "Only a locked token can be unlocked")
        self._set_state(token, TokenState.ACTIVE)
        return TokenStateAnswer(state=TokenState.ACTIVE.value)

    async def _delete_token(self, customer_id: str, data: str, reject: bool) -> TokenStateAnswer:
        """Any state → DELETED, for good; a repeat answers the same (the MPP may retry)."""
        token = self._own_token(customer_id, _parse(DeleteTokenData, data).token_reference_id, reject)
        self._set_state(token, TokenState.DELETED)
        return TokenStateAnswer(state=TokenState.DELETED.value)

    # --- lookups (a customer sees only their own) --------------------------------------

    def _own_application(self, customer_id: str, token_request_id: str) -> Application:
        application = self._applications.get(token_request_id)
        if application is None or application.customer_id != customer_id:
            raise AntError(TOKEN_NOT_FOUND, f"No token request {token_request_id!r}")
        return application

    def _own_token(self, customer_id: str, reference: str, reject: bool) -> AntToken:
        token = self._tokens.get(reference)
        if token is None or token.customer_id != customer_id:
            raise AntError(TOKEN_NOT_FOUND, f"No token {reference!r}")
        if reject:
            raise AntError(REJECTED, "Rejected by the Ant server (scripted)")
        return token


def _token_status(application: Application) -> QueryTokenAnswer:
    if application.status is TokenRequestStatus.APPROVED:
        return QueryTokenAnswer(status=application.status, token_reference_id=application.token_reference_id)
    if application.status is TokenRequestStatus.REJECTED:
        return QueryTokenAnswer(status=application.status, reason=application.reject_reason)
    return QueryTokenAnswer(status=TokenRequestStatus.PENDING)


def _parse(payload_type: type[PayloadT], data: str) -> PayloadT:
    try:
        return payload_type.from_wire(data)
    except ValidationError as exc:
        raise AntError(PARAM_ILLEGAL, "sdkRequestData." + first_error(exc)) from None


# --- Alipay+'s sdkProxy ------------------------------------------------------------------


def _parse_header(header: str) -> SdkRequestHeader:
    """The SDK's header: a JSON object naming the ``api``; raises ``ValueError`` otherwise."""
    try:
        return SdkRequestHeader.model_validate_json(header)
    except ValidationError as exc:
        raise ValueError(f"sdkRequestHeader is not a JSON object with an api ({first_error(exc)})") from None


def _response(header: SdkRequestHeader, answer: AntAnswer) -> SdkProxyResponse:
    response_header = SdkResponseHeader(api=header.api, request_id=header.request_id, code=answer.code)
    return SdkProxyResponse(
        result=Result.success(),
        sdk_response_header=json.dumps(response_header.model_dump(exclude_unset=True)),  # requestId even if null
        sdk_response_data=json.dumps(answer.data),
    )


class AntScript(BaseModel):
    api: AntApi
    calls: int = Field(1, ge=1, le=1000)
    fail: bool = False
    reject: bool = False
    delay: float = Field(0.0, ge=0, le=120)


class RejectCustomer(BaseModel):
    customerId: str  # noqa: N815
    reason: str = DEFAULT_REJECT_REASON


def ant_nfc_router(peer: SandboxAlipayPlus, ant: SandboxAntNfc) -> APIRouter:
    """Alipay+'s signed sdkProxy in front of ``ant``, plus local-only controls under ``/sandbox/nfc``."""
    router = APIRouter()

    async def forward(message: SdkProxyRequest, _body: bytes) -> SdkProxyResponse:
        try:
            header = _parse_header(message.sdk_request_header)
        except ValueError as exc:
            return SdkProxyResponse(result=Result.of(ResultCode.PARAM_ILLEGAL, str(exc)))
        answer = await ant.call(header.api, message.customer_id, message.sdk_request_data, header.request_id)
        return _response(header, answer)

    @router.post(SdkProxyRequest.PATH)
    async def sdk_proxy(request: Request) -> Response:
        return await answer_signed_call(request, peer.signer, peer.verifier, SdkProxyRequest, forward)

    router.include_router(_control_router(ant))
    return router


def _control_router(ant: SandboxAntNfc) -> APIRouter:
    router = APIRouter(prefix="/sandbox/nfc", dependencies=[Depends(local_only)])

    @router.post("/script")
    async def script(body: AntScript) -> dict[str, Any]:
        ant.script(body.api, body.calls, fail=body.fail, reject=body.reject, delay=body.delay)
        return {"api": body.api, "queued": body.calls}

    @router.post("/reject-customer")
    async def reject_customer(body: RejectCustomer) -> dict[str, str]:
        ant.reject_customer(body.customerId, body.reason)
        return {"rejected": body.customerId}

    @router.get("/tokens")
    async def tokens() -> list[dict[str, Any]]:
        return [
            {"tokenReferenceId": t.token_reference_id, "customerId": t.customer_id, "state": t.state}
            for t in ant.tokens()
        ]

    @router.post("/reset")
    async def reset() -> dict[str, bool]:
        ant.reset()
        return {"reset": True}

    return router


__all__ = [
    "ANT_APIS",
    "AntAnswer",
    "AntApi",
    "AntCall",
    "AntToken",
    "Application",
    "SandboxAntNfc",
    "TokenActiveHook",
    "ant_nfc_router",
    "token_pan",
    "token_reference_id",
]
