"""One activated NFC token's life: ``token/{tokenReferenceId}``, an entity workflow.

Started (signal-with-start) by whichever comes first: Alipay+'s tokenActivationNotification
or the phone's first report. It counts the token's single-use credentials: a credential is
identified by its ATC, so a tap reported twice, late or out of order is counted once. When
fewer than the threshold remain it replenishes through the NFC proxy (one replenish at a
time) and keeps the new credentials for the phone to collect. The user manages it: lock,
unlock and delete go to the Ant server first (which tells Mastercard) and change the state only
once it agreed. It waits for events until deleted and continues as new, with its state, before
its history grows large.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.nfc_proxy import NfcActivities
    from alipayplus import CamelModel
    from alipayplus.nfc import AccountSource
    from alipayplus.nfc_sdk import (
        Credential,
        DeleteTokenData,
        LockTokenData,
        ReplenishAnswer,
        ReplenishData,
        SdkRequestData,
        UnlockTokenData,
    )
    from wallet.nfc_proxy import SdkAnswer, SdkCall

REPLENISH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=5)
MAX_FAILED_REPLENISHES = 3  # histories before REPLENISH_BACKOFF_PATCH: then only the phone's replenish() tried again
# After a failed automatic replenish, wait this long before the next one (the last repeats), for as
# long as the token is low and active: a technical fault never stops replenishment for good.
REPLENISH_BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=1))
REPLENISH_BACKOFF_PATCH = "replenish-backoff"
REPLENISH_TIMEOUT = timedelta(seconds=20)  # above Alipay+'s 10 s for sdkProxy
# lock/unlock/delete: the user waits for the answer, so a short retry; then the call fails
MANAGE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


class TokenLifecycle(StrEnum):
    PENDING = "PENDING"  # started before Alipay+'s notification arrived
    ACTIVE = "ACTIVE"
    LOCKED = "LOCKED"  # lock(): Mastercard suspended the token; unlock() makes it ACTIVE again
    DELETED = "DELETED"  # delete(): the token never pays again and its workflow ends


class TokenRefusal(StrEnum):
    """Why an update failed: the ``type`` of its ``ApplicationError``."""

    ANT_FAILED = "AntFailed"  # the Ant server refused or could not be reached: nothing changed
    DELETED = "TokenDeleted"
    LOCKED = "TokenLocked"


class TokenActivated(BaseModel):
    """What tokenActivationNotification told us."""

    customer_id: str | None
    wallet_id: str | None
    token_requestor_id: str | None
    account_source: AccountSource | None
    service_request_time: datetime
    token_activated_time: datetime


class TapReport(CamelModel):
    """The phone's report of one tap: the credential (ATC) it used, and its own reference."""

    atc: int = Field(ge=1)
    custom_data: str | None = None
    tapped_at: datetime


class TokenState(CamelModel):
    token_reference_id: str
    customer_id: str | None = None
    lifecycle: TokenLifecycle = TokenLifecycle.PENDING
    activated_at: datetime | None = None
    activation_notices: int = 0  # Alipay+ may deliver the notification more than once
    issued_atcs: list[int] = []  # every credential the phone holds or held
    used_atcs: list[int] = []  # credentials a tap consumed
    taps: int = 0
    replenishments: int = 0
    undelivered: list[Credential] = []  # replenished (the Ant server's), not yet collected by the phone
    replenish_failures: int = 0  # automatic replenishes failed in a row
    replenish_again_at: datetime | None = None  # after a failure, the next automatic one waits until then

    @property
    def credentials_left(self) -> int:
        return len(set(self.issued_atcs) - set(self.used_atcs))


class TokenStart(BaseModel):
    token_reference_id: str
    customer_id: str | None = None
    replenish_below: int = 10  # seed 001: auto-replenish when fewer than 10 remain
    replenish_count: int = 10
    carried: TokenState | None = None  # continue-as-new hands the state over
    history_limit: int | None = None  # continue as new at this many events too (else when Temporal suggests)


@workflow.defn
class TokenWorkflow:
    @workflow.init
    def __init__(self, start: TokenStart) -> None:
        self._start = start
        self._state = start.carried or TokenState(token_reference_id=start.token_reference_id)
        if self._state.customer_id is None:
            self._state.customer_id = start.customer_id
        self._replenishing = False
        self._managing = asyncio.Lock()  # one lock/unlock/delete at a time, in arrival order

    @workflow.run
    async def run(self, start: TokenStart) -> None:
        while not self._deleted() and not self._history_is_long():
            with contextlib.suppress(TimeoutError):  # the back-off after a failed replenish has passed
                await workflow.wait_condition(
                    lambda: self._needs_replenishing() or self._history_is_long() or self._deleted(),
                    timeout=self._until_replenish_again(),
                )
            if self._needs_replenishing():
                await self._replenish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._deleted():
            return  # nothing can happen to a deleted token any more
        workflow.continue_as_new(start.model_copy(update={"carried": self._state}))

    # --- Alipay+ and the phone talk to the token ------------------------------------------------

    @workflow.signal
    def activation_notified(self, notice: TokenActivated) -> None:
        """tokenActivationNotification (seed 002): the token is active; a repeat changes nothing."""
        state = self._state
        state.activation_notices += 1
        if state.activated_at is None:  # also when the user locked the token before the notice came
            # Alipay+ names the owner: a phone's report that started this workflow first cannot claim it
            state.customer_id = notice.customer_id or state.customer_id
            state.activated_at = notice.token_activated_time
        if state.lifecycle is TokenLifecycle.PENDING:
            state.lifecycle = TokenLifecycle.ACTIVE

    @workflow.signal
    def credentials_stored(self, credentials: list[Credential]) -> None:
        """The phone stored these credentials (at activation, or collected after a replenish)."""
        stored = {credential.atc for credential in credentials}
        self._state.issued_atcs = sorted(set(self._state.issued_atcs) | stored)
        self._state.undelivered = [c for c in self._state.undelivered if c.atc not in stored]

    @workflow.signal
    def tap_reported(self, tap: TapReport) -> None:
        """A tap used the credential with this ATC; reports retried, duplicated or reordered count once.
        A locked token's taps count too: the tap may predate the lock (the phone reports later)."""
        if tap.atc in self._state.used_atcs:
            return
        self._state.used_atcs = sorted({*self._state.used_atcs, tap.atc})
        self._state.issued_atcs = sorted({*self._state.issued_atcs, tap.atc})  # a tap proves the credential
        self._state.taps += 1

    @workflow.update
    async def replenish(self) -> TokenState:
        """Manual replenish(): fetch credentials now, whatever is left. Credentials already waiting for
        the phone, or the automatic replenish under way, are the answer: asking Ant again would only
        strand more. (Refused while locked or deleted by its validator.)"""
        if self._replenishing:
            await workflow.wait_condition(lambda: not self._replenishing)
        elif not self._state.undelivered:
            await self._replenish()
        return self._state

    @replenish.validator
    def _validate_replenish(self) -> None:
        self._refuse_unless_usable()

    @workflow.update
    async def lock(self) -> TokenState:
        """lock(): the Ant server suspends the token at Mastercard, then it is LOCKED. Not replenished
        while locked: Ant issues no credentials for a suspended token, and a locked one cannot pay."""
        async with self._managing:
            self._refuse_if_deleted()
            if self._state.lifecycle is not TokenLifecycle.LOCKED:
                await self._ask_ant(LockTokenData(token_reference_id=self._state.token_reference_id))
                self._state.lifecycle = TokenLifecycle.LOCKED
        return self._state

    @workflow.update
    async def unlock(self) -> TokenState:
        """unlock(): the Ant server reactivates the token; replenishing resumes if it is low."""
        async with self._managing:
            self._refuse_if_deleted()
            if self._state.lifecycle is TokenLifecycle.LOCKED:
                await self._ask_ant(UnlockTokenData(token_reference_id=self._state.token_reference_id))
                activated = self._state.activated_at is not None
                self._state.lifecycle = TokenLifecycle.ACTIVE if activated else TokenLifecycle.PENDING
        return self._state

    @workflow.update
    async def delete(self) -> TokenState:
        """delete: the Ant server deletes the token at Mastercard; the workflow then ends. A repeat
        answers the same."""
        async with self._managing:
            if self._state.lifecycle is not TokenLifecycle.DELETED:
                await self._ask_ant(DeleteTokenData(token_reference_id=self._state.token_reference_id))
                self._state.lifecycle = TokenLifecycle.DELETED
                self._state.undelivered = []  # never to be collected
        return self._state

    @lock.validator
    def _validate_lock(self) -> None:
        self._refuse_if_deleted()

    @unlock.validator
    def _validate_unlock(self) -> None:
        self._refuse_if_deleted()

    @workflow.query
    def state(self) -> TokenState:
        return self._state

    # --- steps ----------------------------------------------------------------------------

    def _deleted(self) -> bool:
        return self._state.lifecycle is TokenLifecycle.DELETED

    def _history_is_long(self) -> bool:
        info = workflow.info()
        limit = self._start.history_limit
        return info.is_continue_as_new_suggested() or (limit is not None and info.get_current_history_length() >= limit)

    def _refuse_if_deleted(self) -> None:
        if self._deleted():
            raise ApplicationError("The token was deleted.", type=TokenRefusal.DELETED, non_retryable=True)

    def _refuse_unless_usable(self) -> None:
        self._refuse_if_deleted()
        if self._state.lifecycle is TokenLifecycle.LOCKED:
            raise ApplicationError("The token is locked.", type=TokenRefusal.LOCKED, non_retryable=True)

    def _needs_replenishing(self) -> bool:
        state = self._state
        waiting = len(state.undelivered)  # already fetched, on their way to the phone
        again_at = state.replenish_again_at
        return (
            not self._replenishing
            and state.lifecycle is TokenLifecycle.ACTIVE
            and bool(state.issued_atcs)
            and state.credentials_left + waiting < self._start.replenish_below
            and (workflow.now() >= again_at if again_at else state.replenish_failures < MAX_FAILED_REPLENISHES)
        )

    def _until_replenish_again(self) -> timedelta | None:
        """How long the back-off after a failed replenish still runs; None once it has passed (then
        only an event, a tap report or an unlock, can make the token need replenishing)."""
        again_at = self._state.replenish_again_at
        return again_at - workflow.now() if again_at and again_at > workflow.now() else None

    async def _replenish(self) -> None:
        self._replenishing = True
        try:
            request = ReplenishData(
                token_reference_id=self._state.token_reference_id, count=self._start.replenish_count
            )
            answer = await self._sdk(request)
        except ActivityError:
            return self._replenish_failed()  # the phone can still ask at once by replenish()
        finally:
            self._replenishing = False
        if self._deleted():
            return  # deleted meanwhile: nobody will collect them
        if not answer.succeeded:  # e.g. TOKEN_NOT_ACTIVE: nothing came, try again later
            return self._replenish_failed()
        try:
            fresh = answer.data(ReplenishAnswer).credentials
        except ValidationError:  # not credentials: as good as none, try again later
            return self._replenish_failed()
        self._state.undelivered += [c for c in fresh if c.atc not in self._state.issued_atcs]
        self._state.replenishments += 1
        self._state.replenish_failures = 0
        self._state.replenish_again_at = None

    def _replenish_failed(self) -> None:
        state = self._state
        state.replenish_failures += 1
        if workflow.patched(REPLENISH_BACKOFF_PATCH):
            backoff = REPLENISH_BACKOFF[min(state.replenish_failures, len(REPLENISH_BACKOFF)) - 1]
            state.replenish_again_at = workflow.now() + backoff

    async def _ask_ant(self, request: SdkRequestData) -> None:
        """A token-management SDK request; any answer but SUCCESS fails the update, state unchanged."""
        api = request.API
        try:
            answer = await self._sdk(request, retry_policy=MANAGE_RETRY)
        except ActivityError as exc:
            raise ApplicationError(
                f"{api}: the Ant server could not be reached", type=TokenRefusal.ANT_FAILED, non_retryable=True
            ) from exc
        if not answer.succeeded:
            raise ApplicationError(
                f"{api}: the Ant server answered {answer.code}", type=TokenRefusal.ANT_FAILED, non_retryable=True
            )

    async def _sdk(self, request: SdkRequestData, retry_policy: RetryPolicy = REPLENISH_RETRY) -> SdkAnswer:
        """The token's SDK request (each names the token) through the proxy."""
        call = SdkCall.of(self._state.customer_id or "", request, request_id=str(workflow.uuid4()))
        return await workflow.execute_activity_method(
            NfcActivities.sdk_request,
            call,
            start_to_close_timeout=REPLENISH_TIMEOUT,
            retry_policy=retry_policy,
            summary=f"{request.API} for {self._state.token_reference_id}",
        )
