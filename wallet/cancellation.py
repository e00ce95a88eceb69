"""cancelPayment: succeeds in every payment state until 00:30 UTC+8 on T+1 (spec §6).

The payment record arbitrates: the cancel and the debit each change it with a conditional
update, so whichever commits first decides, and the other sees it:
  never seen   -> a tombstone, so a late pay is closed at once;
  in progress  -> closed, so no debit can follow (the debit's own condition fails);
  paid         -> closed and the rest of payToAmount returned (``cancel/{id}/reversal``);
  failed       -> marked cancelled; nothing to return.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import Engine, Update, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from alipayplus import Amount, ResultCode
from wallet.ledger import IdempotencyConflict, Ledger, PostingKind, PostingRefused
from wallet.records import PaymentRecord, read_payment
from wallet.states import PaymentStatus

UTC_PLUS_8 = timezone(timedelta(hours=8))


class Cancellation(StrEnum):
    TOMBSTONE = "TOMBSTONE"  # the payment was never seen
    CLOSED_UNPAID = "CLOSED_UNPAID"
    REVERSED = "REVERSED"
    ALREADY_FINAL = "ALREADY_FINAL"  # had failed or been closed; nothing moved
    WINDOW_EXCEEDED = "WINDOW_EXCEEDED"


class CancelApplication(BaseModel):
    payment_request_id: str
    now: datetime  # the workflow's clock
    cutoff: time = time(0, 30)  # on T+1, UTC+8


class CancelOutcome(BaseModel):
    result_code: ResultCode
    cancellation: Cancellation


def cancel_deadline(created_at: datetime, cutoff: time) -> datetime:
    """00:30 UTC+8 on the day after the payment was created (in UTC+8)."""
    day = created_at.astimezone(UTC_PLUS_8).date() + timedelta(days=1)
    return datetime.combine(day, cutoff, tzinfo=UTC_PLUS_8)


@dataclass
class Cancellations:
    engine: Engine
    ledger: Ledger

    def cancel_payment(self, application: CancelApplication) -> CancelOutcome:
        if self._leave_tombstone(application):
            return _done(Cancellation.TOMBSTONE)
        payment = self._payment(application)  # the tombstone insert found it
        if payment.cancelled_at is not None:
            return _already_cancelled(payment)
        if application.now > cancel_deadline(payment.created_at, application.cutoff):
            return CancelOutcome(result_code=ResultCode.CANCEL_WINDOW_EXCEED, cancellation=Cancellation.WINDOW_EXCEEDED)
        if payment.status is PaymentStatus.PROCESSING and self._close(application, PaymentStatus.PROCESSING):
            return _done(Cancellation.CLOSED_UNPAID)
        payment = self._payment(application)  # it may have been paid, or cancelled by a twin, a moment ago
        if payment.cancelled_at is not None:
            return _already_cancelled(payment)
        if payment.status is PaymentStatus.SUCCESS:
            return self._reverse(application, payment)
        self._close(application, payment.status)
        return _done(Cancellation.ALREADY_FINAL)

    def _payment(self, application: CancelApplication) -> PaymentRecord:
        payment = read_payment(self.engine, application.payment_request_id)
        assert payment is not None  # a cancel never deletes it
        return payment

    def _leave_tombstone(self, application: CancelApplication) -> bool:
        try:
            with Session(self.engine) as session:
                session.add(
                    PaymentRecord(
                        payment_request_id=application.payment_request_id,
                        status=PaymentStatus.CLOSED,
                        result_code=ResultCode.ORDER_IS_CLOSED,
                        result_message="The order was cancelled before it reached the wallet",
                        cancelled_at=application.now,
                        created_at=application.now,
                        updated_at=application.now,
                    )
                )
                session.commit()
        except IntegrityError:
            return False  # the payment exists
        return True

    def _close(self, application: CancelApplication, status: PaymentStatus) -> bool:
        """Close a payment still in ``status``; False if it moved on meanwhile."""
        with self.engine.begin() as connection:
            changed = connection.execute(_closing(application).where(col(PaymentRecord.status) == status)).rowcount
        return changed == 1

    def _reverse(self, application: CancelApplication, payment: PaymentRecord) -> CancelOutcome:
        """Close the paid payment and return what its refunds have not, in one transaction.

        The amount is read first, so the closing update also requires the refunded sum to be
        unchanged: a refund committed in between makes it retry with the new remainder.
        """
        for _ in range(10):
            remaining = (payment.pay_to_amount_value or 0) - payment.refunded_pay_to_value
            closing = (
                _closing(application)
                .where(
                    col(PaymentRecord.status) == PaymentStatus.SUCCESS,
                    col(PaymentRecord.refunded_pay_to_value) == payment.refunded_pay_to_value,
                )
                .values(
                    refunded_payment_value=col(PaymentRecord.payment_amount_value),
                    refunded_pay_to_value=col(PaymentRecord.pay_to_amount_value),
                )
            )
            try:
                if remaining == 0:  # refunded in full already: nothing left to return
                    with self.engine.begin() as connection:
                        if connection.execute(closing).rowcount != 1:
                            raise PostingRefused("the payment changed")
                else:
                    self.ledger.return_to_user(
                        f"cancel/{application.payment_request_id}/reversal",
                        PostingKind.CANCEL_REVERSAL,
                        application.payment_request_id,
                        Ledger.user_account_id(payment.customer_id or ""),
                        Amount(currency=payment.pay_to_amount_currency or "", value=remaining),
                        conditions=[(closing, "the payment changed")],
                    )
                return _done(Cancellation.REVERSED)
            except (PostingRefused, IdempotencyConflict):  # a refund, or a twin cancel, came first
                payment = self._payment(application)
                if payment.cancelled_at is not None:
                    return _already_cancelled(payment)
        raise RuntimeError(f"payment {application.payment_request_id} kept changing; the activity will retry")


def _closing(application: CancelApplication) -> Update:
    return (
        update(PaymentRecord)
        .where(
            col(PaymentRecord.payment_request_id) == application.payment_request_id,
            col(PaymentRecord.cancelled_at).is_(None),
        )
        .values(
            status=PaymentStatus.CLOSED,
            result_code=ResultCode.ORDER_IS_CLOSED,
            result_message="The order was cancelled",
            cancelled_at=application.now,
            updated_at=application.now,
        )
    )


def _already_cancelled(payment: PaymentRecord) -> CancelOutcome:
    """A repeat, or a twin that lost: the same answer the first cancel gave."""
    return _done(Cancellation.REVERSED if payment.payment_time else Cancellation.ALREADY_FINAL)


def _done(cancellation: Cancellation) -> CancelOutcome:
    return CancelOutcome(result_code=ResultCode.SUCCESS, cancellation=cancellation)
