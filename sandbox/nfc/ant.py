"""The sandbox Ant server's NFC logic, reached through Alipay+'s signed ``sdkProxy`` (seed 000).

The NFC SDK's requests are opaque to the MPP: it wraps them in ``SdkProxyRequest`` with the
user's customerId and Alipay+ hands them to the Ant server. ``SandboxAntNfc`` is that server's
memory (token applications, tokens, credentials) and ``ant_nfc_router`` is Alipay+'s sdkProxy
in front of it: the MPP's signature is checked and the answer signed, exactly as for every other
Alipay+ API. The Ant server's own outcome travels inside ``sdkResponseHeader.code``; a transport
or envelope problem is Alipay+'s ``result``. The payloads it reads and answers are
``alipayplus.nfc_sdk``'s, the same the MPP's workflows send and read.

This module holds ``SandboxAntNfc`` and re-exports the rest: its memory, answers and token
numbers (``_ant_records``) and Alipay+'s sdkProxy with the sandbox controls (``_ant_routes``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from alipayplus.nfc import SDK_SUCCESS
from alipayplus.nfc_sdk import (
    ApplyNfcTokenAnswer,
    ApplyNfcTokenData,
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
    ReplenishAnswer,
    ReplenishData,
    SdkData,
    TokenRequestStatus,
    TokenStateAnswer,
    UnlockTokenData,
)

# Re-exported (``__all__``): importers keep using ``sandbox.nfc.ant`` for all of these.
from ._ant_records import (
    ANT_APIS,
    DEFAULT_REJECT_REASON,
    REJECTED,
    SYSTEM_ERROR,
    TOKEN_NOT_ACTIVE,
    TOKEN_NOT_FOUND,
    UNKNOWN_API,
    AntAnswer,
    AntApi,
    AntCall,
    AntError,
    AntToken,
    Application,
    TokenActiveHook,
    new_card_profile,
    parse_payload,
    token_pan,
    token_reference_id,
    token_status,
)
from ._ant_routes import ant_nfc_router
from .mastercard import Fault, SandboxMastercard, Script, Sleep, TokenState

logger = logging.getLogger(__name__)

CREDENTIAL_TTL = timedelta(days=7)


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        payload = parse_payload(ApplyNfcTokenData, data)
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
        application = self._own_application(customer_id, parse_payload(QueryTokenData, data).token_request_id)
        if reject and application.status is TokenRequestStatus.PENDING:
            application.reject_reason = application.reject_reason or DEFAULT_REJECT_REASON
            application.status = TokenRequestStatus.REJECTED
        if application.status is TokenRequestStatus.PENDING:
            application.polls += 1
            if application.polls > self.approve_after_polls:
                self._decide(application)
        return token_status(application)

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
        token = self._own_token(customer_id, parse_payload(ProvisionData, data).token_reference_id, reject)
        profile = token.card_profile
        if profile is None:  # a retried provision gets the same profile
            profile = token.card_profile = new_card_profile(self.clock())
            token.state = TokenState.PROVISIONED
            self.mastercard.register_token(
                token.token_reference_id, str(profile.token_pan), str(profile.pan_sequence_number)
            )
        return ProvisionAnswer(token_reference_id=token.token_reference_id, card_profile=profile, credentials=[])

    async def _notify_provision_result(self, customer_id: str, data: str, reject: bool) -> NotifyProvisionResultAnswer:
        payload = parse_payload(NotifyProvisionResultData, data)
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
        token = self._own_token(customer_id, parse_payload(QueryNtuResultData, data).token_reference_id, reject)
        if token.state is not TokenState.ACTIVE:
            return QueryNtuResultAnswer(status=NtuStatus.PENDING)  # no NTU before the device confirmed the token
        token.ntu_polls += 1
        return QueryNtuResultAnswer(
            status=NtuStatus.UPDATED if token.ntu_polls > self.ntu_after_polls else NtuStatus.PENDING
        )

    async def _replenish(self, customer_id: str, data: str, reject: bool) -> ReplenishAnswer:
        payload = parse_payload(ReplenishData, data)
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
        token = self._own_token(customer_id, parse_payload(LockTokenData, data).token_reference_id, reject)
        if token.state not in (TokenState.ACTIVE, TokenState.SUSPENDED):
            raise AntError(TOKEN_NOT_ACTIVE, "Only an active token can be locked")
        self._set_state(token, TokenState.SUSPENDED)
        return TokenStateAnswer(state=TokenState.SUSPENDED.value)

    async def _unlock_token(self, customer_id: str, data: str, reject: bool) -> TokenStateAnswer:
        """SUSPENDED → ACTIVE; a repeat answers the same."""
        token = self._own_token(customer_id, parse_payload(UnlockTokenData, data).token_reference_id, reject)
        if token.state not in (TokenState.SUSPENDED, TokenState.ACTIVE):
            raise AntError(TOKEN_NOT_ACTIVE, "Only a locked token can be unlocked")
        self._set_state(token, TokenState.ACTIVE)
        return TokenStateAnswer(state=TokenState.ACTIVE.value)

    async def _delete_token(self, customer_id: str, data: str, reject: bool) -> TokenStateAnswer:
        """Any state → DELETED, for good; a repeat answers the same (the MPP may retry)."""
        token = self._own_token(customer_id, parse_payload(DeleteTokenData, data).token_reference_id, reject)
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
