"""The activities of a payment order (account checks, record, SMS code, code checks, debit): each one
call of ``wallet.payments``, a single side effect under a stable idempotency key."""

from __future__ import annotations

from temporalio import activity

from alipayplus import PayRequest
from wallet.credentials import Attempt
from wallet.payments import (
    AccountCheck,
    CodeAttempt,
    CodeCheck,
    DebitRequest,
    DebitResult,
    OrderOpened,
    OrderOpening,
    OtpRequest,
    OtpSent,
    PaymentRecordUpdate,
    Payments,
)
from wallet.states import PaymentStatus


class PaymentActivities(Payments):
    """``Payments`` as the activities the workflows call; each runs once per attempt, safely twice."""

    @activity.defn
    def check_account(self, request: PayRequest) -> AccountCheck:
        return super().check_account(request)

    @activity.defn
    def check_token_account(self, request: PayRequest) -> AccountCheck:
        return super().check_token_account(request)

    @activity.defn
    def check_customer_account(self, request: PayRequest) -> AccountCheck:
        return super().check_customer_account(request)

    @activity.defn
    def open_order(self, opening: OrderOpening) -> OrderOpened:
        return super().open_order(opening)

    @activity.defn
    def record_payment(self, change: PaymentRecordUpdate) -> PaymentStatus:
        return super().record_payment(change)

    @activity.defn
    def send_otp(self, request: OtpRequest) -> OtpSent:
        return super().send_otp(request)

    @activity.defn
    def verify_code(self, attempt: CodeAttempt) -> Attempt:
        return super().verify_code(attempt)

    @activity.defn
    def check_code(self, check: CodeCheck) -> bool:
        return super().check_code(check)

    @activity.defn
    def debit(self, request: DebitRequest) -> DebitResult:
        return super().debit(request)
