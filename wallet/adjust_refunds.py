"""adjustRefund (spec §13.3, NFC only): the excess of a merchant refund above its payment, or a
merchant refund with no payment behind it, credited to the user.

The MPP may not fail it for business reasons: a frozen user is credited, no payment's refunded
sums cap it (the normal refund covers the payment's part), and the money is owed to us by Alipay+
(``Ledger.adjustments_account``), which never refuses. Only technical failures remain: a missing or
unknown payment or customer, a value not above zero, a currency we cannot convert. One activity
credits once (``adjust-refund/{refundRequestId}/credit``) and writes the answer in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from alipayplus import Amount, Result, ResultCode
from alipayplus.nfc import AdjustRefundRequest, AdjustRefundResponse, AdjustRefundScenario
from wallet.ledger import Ledger
from wallet.records import AdjustRefundRecord, WalletUser, read_payment

from .refunds import at_payment_rate


class IllegalAdjustRefund(ValueError):
    """A technical failure: ``field: what is wrong``, answered as PARAM_ILLEGAL."""


class AdjustmentCredit(BaseModel):
    """Whom an adjustRefund credits, and how much in their account's currency."""

    customer_id: str
    account_id: str
    amount: Amount


def adjustment_credit(engine: Engine, request: AdjustRefundRequest) -> AdjustmentCredit:
    """The credit ``request`` asks for, or ``IllegalAdjustRefund`` naming the field at fault."""
    if request.refund_amount.value <= 0:
        raise IllegalAdjustRefund("refundAmount.value: must be greater than zero")
    if request.sub_scenario_type is AdjustRefundScenario.EXCEED_REFUND:
        return _excess_credit(engine, request)
    return _unlinked_credit(engine, request)


def _excess_credit(engine: Engine, request: AdjustRefundRequest) -> AdjustmentCredit:
    """The payment's customer, credited the excess at the payment's own rate."""
    if not request.payment_request_id:
        raise IllegalAdjustRefund("paymentRequestId: is required for EXCEED_REFUND")
    payment = read_payment(engine, request.payment_request_id)
    paid = payment is not None and payment.payment_time is not None  # debited once, even if cancelled since
    if payment is None or not paid or not payment.customer_id or not payment.payment_amount_value:
        raise IllegalAdjustRefund("paymentRequestId: names no successful payment of this wallet")
    if request.customer_id and request.customer_id != payment.customer_id:
        raise IllegalAdjustRefund("customerId: is not the customer of the payment")
    user = _user(engine, payment.customer_id)
    if user is None:
        raise IllegalAdjustRefund("paymentRequestId: the payment's customer is no longer a user of this wallet")
    amount = request.refund_amount
    if amount.currency == user.currency:
        value = amount.value
    elif amount.currency == payment.payment_amount_currency and payment.pay_to_amount_currency == user.currency:
        value = at_payment_rate(amount.value, payment.payment_amount_value, payment.pay_to_amount_value or 0)
    else:
        convertible = " or ".join(dict.fromkeys([payment.payment_amount_currency or "", user.currency]))
        raise IllegalAdjustRefund(f"refundAmount.currency: must be the payment's {convertible}")
    return AdjustmentCredit(
        customer_id=user.customer_id, account_id=user.account_id, amount=Amount(currency=user.currency, value=value)
    )


def _unlinked_credit(engine: Engine, request: AdjustRefundRequest) -> AdjustmentCredit:
    """The named customer, credited the whole refund in their own currency."""
    if not request.customer_id:
        raise IllegalAdjustRefund("customerId: is required for UNLINKED_REFUND")
    user = _user(engine, request.customer_id)
    if user is None:
        raise IllegalAdjustRefund("customerId: names no user of this wallet")
    if request.refund_amount.currency != user.currency:
        raise IllegalAdjustRefund(f"refundAmount.currency: must be the user's account currency {user.currency}")
    return AdjustmentCredit(customer_id=user.customer_id, account_id=user.account_id, amount=request.refund_amount)


def _user(engine: Engine, customer_id: str) -> WalletUser | None:
    with Session(engine) as session:
        return session.get(WalletUser, customer_id)


class AdjustRefundApplication(BaseModel):
    request: AdjustRefundRequest
    refund_id: str
    now: datetime  # the workflow's clock


class AdjustRefundOutcome(BaseModel):
    result_code: ResultCode
    result_message: str | None = None
    refund_id: str | None = None
    refund_time: datetime | None = None
    customer_id: str | None = None
    credited: Amount | None = None

    @classmethod
    def of_record(cls, record: AdjustRefundRecord) -> AdjustRefundOutcome:
        """The answer kept for a refundRequestId, for its repeats."""
        succeeded = record.result_code == ResultCode.SUCCESS
        return cls(
            result_code=ResultCode(record.result_code),
            result_message=record.result_message,
            refund_id=record.refund_id if succeeded else None,
            refund_time=record.refund_time,
            customer_id=record.customer_id,
            credited=(
                Amount(currency=record.credited_currency, value=record.credited_value)
                if succeeded and record.credited_currency
                else None
            ),
        )

    def to_response(self) -> AdjustRefundResponse:
        result = Result.of(self.result_code, self.result_message)
        return AdjustRefundResponse(result=result, refund_id=self.refund_id, refund_time=self.refund_time)


def adjust_refund_key(refund_request_id: str) -> str:
    """The ledger's idempotency key of an adjustRefund's credit."""
    return f"adjust-refund/{refund_request_id}/credit"


@dataclass
class AdjustRefunds:
    engine: Engine
    ledger: Ledger

    def apply_adjust_refund(self, application: AdjustRefundApplication) -> AdjustRefundOutcome:
        """Credit the user once and keep the answer; a retry returns the kept answer."""
        request = application.request
        earlier = self._stored(request.refund_request_id)
        if earlier is not None:  # a retry after the answer was stored
            return AdjustRefundOutcome.of_record(earlier)
        try:
            credit = adjustment_credit(self.engine, request)
        except IllegalAdjustRefund as problem:
            return self._refuse(application, str(problem))
        answer = _answer_record(application, ResultCode.SUCCESS, None, credit)
        self.ledger.credit_adjustment(
            adjust_refund_key(request.refund_request_id),
            request.refund_request_id,
            credit.account_id,
            credit.amount,
            # the answer commits with the money: a retry after a crash finds it and posts nothing
            conditions=[(insert(AdjustRefundRecord).values(**answer), "answered already")],
        )
        stored = self._stored(request.refund_request_id)
        assert stored is not None  # written with the posting, by this call or a twin's
        return AdjustRefundOutcome.of_record(stored)

    def _refuse(self, application: AdjustRefundApplication, message: str) -> AdjustRefundOutcome:
        """Keep a technical failure's answer; if a twin stored one first, that one is the answer."""
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(AdjustRefundRecord).values(
                        **_answer_record(application, ResultCode.PARAM_ILLEGAL, message, None)
                    )
                )
        except IntegrityError:
            pass
        stored = self._stored(application.request.refund_request_id)
        assert stored is not None
        return AdjustRefundOutcome.of_record(stored)

    def _stored(self, refund_request_id: str) -> AdjustRefundRecord | None:
        with Session(self.engine) as session:
            return session.get(AdjustRefundRecord, refund_request_id)


def _answer_record(
    application: AdjustRefundApplication, code: ResultCode, message: str | None, credit: AdjustmentCredit | None
) -> dict[str, object]:
    request = application.request
    return {
        "refund_request_id": request.refund_request_id,
        "refund_id": application.refund_id,
        "sub_scenario_type": request.sub_scenario_type.value,
        "payment_request_id": request.payment_request_id,
        "customer_id": credit.customer_id if credit else request.customer_id,
        "key_fields_digest": request.key_fields_digest(),
        "result_code": code.value,
        "result_message": message,
        "refund_amount_currency": request.refund_amount.currency,
        "refund_amount_value": request.refund_amount.value,
        "credited_currency": credit.amount.currency if credit else None,
        "credited_value": credit.amount.value if credit else 0,
        "refund_time": application.now if credit else None,
        "created_at": application.now,
    }
