"""Refunds: give a successful payment's money back, in full, in part or in several parts.

One activity does it all in one transaction: the checks, the user's credit and the growth of
the payment's refunded sums under their caps, so 16 concurrent refunds of 30% each can never
return more than was paid. A retry replays the posting by its key (``refund/{refundRequestId}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from alipayplus import Amount, RefundRequest, RefundResponse, Result, ResultCode
from wallet.ledger import Ledger, PostingKind, PostingRefused
from wallet.records import PaymentRecord, RefundRecord, read_payment
from wallet.states import PaymentStatus


class RefundApplication(BaseModel):
    request: RefundRequest
    refund_id: str
    now: datetime  # the workflow's clock: deterministic, and skippable in tests
    window: timedelta


class RefundOutcome(BaseModel):
    result_code: ResultCode
    result_message: str | None = None
    refund_id: str | None = None
    refund_time: datetime | None = None
    credited: Amount | None = None

    @classmethod
    def of_record(cls, record: RefundRecord) -> RefundOutcome:
        """The answer kept for a refundRequestId, for its repeats."""
        succeeded = record.result_code == ResultCode.SUCCESS
        return cls(
            result_code=ResultCode(record.result_code),
            result_message=record.result_message,
            refund_id=record.refund_id if succeeded else None,
            refund_time=record.refund_time,
        )

    def to_response(self) -> RefundResponse:
        return RefundResponse(
            result=Result.of(self.result_code, self.result_message),
            refund_id=self.refund_id,
            refund_time=self.refund_time,
        )


def credit_for(refund_amount: Amount, payment_amount: int, pay_to: Amount, refunded: int, refunded_pay_to: int) -> int:
    """What the user gets back when Alipay+ sends no refundFromAmount: refundAmount at the
    payment's own rate (payTo / payment, in integers, rounded down), and exactly the rest of
    payToAmount once the refunds reach the full paymentAmount."""
    if refunded + refund_amount.value >= payment_amount:
        return pay_to.value - refunded_pay_to
    return at_payment_rate(refund_amount.value, payment_amount, pay_to.value)


def at_payment_rate(value: int, payment_amount: int, pay_to_amount: int) -> int:
    """``value`` of the payment's currency in its payTo currency, at the payment's own rate
    (payTo / payment, in integer minor units, rounded down)."""
    return value * pay_to_amount // payment_amount


@dataclass
class Refunds:
    engine: Engine
    ledger: Ledger

    def apply_refund(self, application: RefundApplication) -> RefundOutcome:
        request = application.request
        with Session(self.engine) as session:
            earlier = session.get(RefundRecord, request.refund_request_id)
        if earlier is not None:  # a retry after the answer was stored
            return RefundOutcome.of_record(earlier)
        outcome = self._refund(application, read_payment(self.engine, request.payment_request_id))
        return self._store(application, outcome)

    def _refund(self, application: RefundApplication, payment: PaymentRecord | None) -> RefundOutcome:
        request = application.request
        if payment is None or payment.payment_id != request.payment_id or payment.pay_to_amount_value is None:
            return RefundOutcome(result_code=ResultCode.ORDER_NOT_EXIST)
        if payment.status is not PaymentStatus.SUCCESS or payment.cancelled_at is not None:
            return RefundOutcome(result_code=ResultCode.ORDER_STATUS_INVALID)
        if request.refund_amount.currency != payment.payment_amount_currency:
            return _illegal(f"refundAmount.currency: must be the payment's {payment.payment_amount_currency}")
        if request.refund_from_amount and request.refund_from_amount.currency != payment.pay_to_amount_currency:
            return _illegal(f"refundFromAmount.currency: must be the payment's {payment.pay_to_amount_currency}")
        if request.refund_amount.value <= 0:
            return _illegal("refundAmount.value: must be greater than zero")
        if payment.payment_time is None or application.now > payment.payment_time + application.window:
            return RefundOutcome(result_code=ResultCode.REFUND_WINDOW_EXCEED)

        pay_to = Amount(currency=payment.pay_to_amount_currency or "", value=payment.pay_to_amount_value)
        credit = (
            request.refund_from_amount.value
            if request.refund_from_amount
            else credit_for(
                request.refund_amount,
                payment.payment_amount_value or 0,
                pay_to,
                payment.refunded_payment_value,
                payment.refunded_pay_to_value,
            )
        )
        record = col(PaymentRecord.payment_request_id) == payment.payment_request_id
        within_caps = (
            update(PaymentRecord)
            .where(
                record,
                col(PaymentRecord.status) == PaymentStatus.SUCCESS,
                col(PaymentRecord.cancelled_at).is_(None),
                col(PaymentRecord.refunded_payment_value) + request.refund_amount.value
                <= col(PaymentRecord.payment_amount_value),
                col(PaymentRecord.refunded_pay_to_value) + credit <= col(PaymentRecord.pay_to_amount_value),
            )
            .values(
                refunded_payment_value=col(PaymentRecord.refunded_payment_value) + request.refund_amount.value,
                refunded_pay_to_value=col(PaymentRecord.refunded_pay_to_value) + credit,
                updated_at=application.now,
            )
        )
        answer = _answer_record(application, ResultCode.SUCCESS, None, credit, application.now)
        try:
            self.ledger.return_to_user(
                f"refund/{request.refund_request_id}",  # the posting's idempotency key
                PostingKind.REFUND,
                payment.payment_request_id,
                Ledger.user_account_id(payment.customer_id or ""),
                Amount(currency=pay_to.currency, value=credit),
                conditions=[
                    (within_caps, "refunds would exceed the payment, or it was cancelled"),
                    # the answer commits with the money: a retry after a crash finds it, and
                    # never recomputes a credit from sums that already include this refund
                    (insert(RefundRecord).values(**answer), "answered already"),
                ],
            )
        except PostingRefused:
            now_payment = read_payment(self.engine, payment.payment_request_id)
            cancelled = now_payment is None or now_payment.cancelled_at is not None
            return RefundOutcome(
                result_code=ResultCode.ORDER_STATUS_INVALID if cancelled else ResultCode.REFUND_AMOUNT_EXCEED
            )
        return RefundOutcome(
            result_code=ResultCode.SUCCESS,
            refund_id=application.refund_id,
            refund_time=application.now,
            credited=Amount(currency=pay_to.currency, value=credit),
        )

    def _store(self, application: RefundApplication, outcome: RefundOutcome) -> RefundOutcome:
        """Keep a refusal's answer (a success's is kept with its posting); if a twin stored
        one first, that one is the answer."""
        if outcome.result_code is ResultCode.SUCCESS:
            return outcome
        request = application.request
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(RefundRecord).values(
                        **_answer_record(application, outcome.result_code, outcome.result_message, 0, None)
                    )
                )
        except IntegrityError:
            with Session(self.engine) as session:
                stored = session.get(RefundRecord, request.refund_request_id)
            assert stored is not None
            return RefundOutcome.of_record(stored)
        return outcome


def _answer_record(
    application: RefundApplication, code: ResultCode, message: str | None, credited: int, refund_time: datetime | None
) -> dict[str, object]:
    request = application.request
    return {
        "refund_request_id": request.refund_request_id,
        "refund_id": application.refund_id,
        "payment_request_id": request.payment_request_id,
        "key_fields_digest": request.key_fields_digest(),
        "result_code": code.value,
        "result_message": message,
        "credited_value": credited,
        "refund_time": refund_time,
        "created_at": application.now,
    }


def _illegal(message: str) -> RefundOutcome:
    return RefundOutcome(result_code=ResultCode.PARAM_ILLEGAL, result_message=message)
