"""What a delivery to Alipay+ (notifyPayment, authNotify) is, for whoever starts, runs or redelivers
one: its workflow type and id, its input and schedule, and how it ended. The workflows run them
(``workflows.delivery``); an activity starts them and ``mpp redeliver`` starts them again, by name.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from alipayplus import AuthorizationNotifyType, NotifyPaymentRequest

NOTIFY_PAYMENT_WORKFLOW = "NotifyPaymentWorkflow"  # the workflow types, started by name from below them
AUTH_NOTIFY_WORKFLOW = "AuthNotifyWorkflow"


DELIVERING = "DELIVERING"  # DeliveryStatus while attempts go on; a final Delivery value once it ends


class Delivery(StrEnum):
    ACKNOWLEDGED = "ACKNOWLEDGED"  # S: stop
    REJECTED = "REJECTED"  # F: do not blind-retry; an operator must look
    UNKNOWN = "UNKNOWN"  # U, timeout or no answer: retry the same body
    GAVE_UP = "GAVE_UP"  # how a delivery ends when no attempt got S or F before its horizon


class DeliveryReport(BaseModel):
    delivery: Delivery
    detail: str


class AuthorizationGrant(BaseModel):
    """What an authNotify tells Alipay+ about an agreement: by default (one-click consent on Easy Pay's
    pay #2) the token bound to it, TOKEN_CREATED; for an Auto Debit binding the authCode,
    AUTHCODE_CREATED; after the user unbound in the app, TOKEN_CANCELED (then ``agreement_id`` names it)."""

    reference_agreement_id: str
    auth_client_id: str
    customer_id: str
    user_login_id: str | None = None
    acquirer_id: str
    psp_id: str
    notify_type: AuthorizationNotifyType = AuthorizationNotifyType.TOKEN_CREATED
    agreement_id: str | None = None


class DeliverySchedule(BaseModel):
    """When to try again after an unanswered attempt, and when to stop trying."""

    delays: list[timedelta] = Field(
        default=[
            timedelta(seconds=5),
            timedelta(seconds=30),
            timedelta(minutes=1),
            timedelta(minutes=2),
            timedelta(minutes=5),
            timedelta(minutes=10),
            timedelta(minutes=30),
            timedelta(hours=1),
        ],
        min_length=1,
    )  # before attempts 2, 3, …; the last one repeats
    horizon: timedelta = timedelta(days=3)  # no attempt starts later than this after the first
    attempt_timeout: timedelta = timedelta(seconds=10)  # one signed call (the client gives up at 5 s)

    def delay_before(self, attempt: int) -> timedelta:
        """The wait before attempt ``attempt`` (1-based; attempt 1 goes at once)."""
        return self.delays[min(attempt - 2, len(self.delays) - 1)]


class DeliveryInput(BaseModel):
    """What every delivery run carries: its schedule, and where an earlier run left off."""

    schedule: DeliverySchedule = DeliverySchedule()
    attempts_so_far: int = 0
    first_attempt_at: datetime | None = None  # set by the first run; the horizon counts from it


class DeliveryProgress(BaseModel):
    """The ``delivery`` query: how far the delivery has come."""

    status: str  # DELIVERING, or the final Delivery: ACKNOWLEDGED, REJECTED, GAVE_UP
    attempts: int
    first_attempt_at: datetime | None
    gives_up_at: datetime | None
    last_detail: str | None


class NotifyPaymentInput(DeliveryInput):
    request: NotifyPaymentRequest


class AuthNotifyInput(DeliveryInput):
    grant: AuthorizationGrant
