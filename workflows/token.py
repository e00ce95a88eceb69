"""One activated NFC token's life: ``token/{tokenReferenceId}``, an entity workflow.

Started (signal-with-start) by Alipay+'s tokenActivationNotification, which is its first
event: the token is active and ready for use. Later issues add the taps, credentials,
replenishment, lock and unlock as further signals. It waits for events without end and
continues as new before its history grows large.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from alipayplus.nfc import AccountSource


class TokenLifecycle(StrEnum):
    PENDING = "PENDING"  # started before any notification arrived
    ACTIVE = "ACTIVE"


class TokenStart(BaseModel):
    token_reference_id: str
    carried: TokenState | None = None  # continue-as-new hands the state over


class TokenActivated(BaseModel):
    """What tokenActivationNotification told us."""

    customer_id: str | None
    wallet_id: str | None
    token_requestor_id: str | None
    account_source: AccountSource | None
    service_request_time: datetime
    token_activated_time: datetime


class TokenState(BaseModel):
    token_reference_id: str
    lifecycle: TokenLifecycle = TokenLifecycle.PENDING
    customer_id: str | None = None
    activated_at: datetime | None = None
    activation_notices: int = 0  # Alipay+ may deliver the notification more than once


TokenStart.model_rebuild()


@workflow.defn
class TokenWorkflow:
    @workflow.init
    def __init__(self, start: TokenStart) -> None:
        self._state = start.carried or TokenState(token_reference_id=start.token_reference_id)

    @workflow.run
    async def run(self, start: TokenStart) -> None:
        await workflow.wait_condition(
            lambda: workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
        )
        workflow.continue_as_new(TokenStart(token_reference_id=self._state.token_reference_id, carried=self._state))

    @workflow.signal
    def activation_notified(self, notice: TokenActivated) -> None:
        """tokenActivationNotification (seed 002): the token is active; a repeat changes nothing."""
        state = self._state
        state.activation_notices += 1
        if state.lifecycle is TokenLifecycle.PENDING:
            state.lifecycle = TokenLifecycle.ACTIVE
            state.customer_id = notice.customer_id
            state.activated_at = notice.token_activated_time

    @workflow.query
    def state(self) -> TokenState:
        return self._state
