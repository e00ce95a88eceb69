"""What the payment processes are started with and answer: the inputs of the order, refund,
cancel and adjustRefund workflows, and the state a payment order shows inquiryPayment, our pages
and operators.

Pure models, defined outside the workflow modules so the workflow sandbox passes them through
instead of rebuilding their pydantic classes for every new workflow.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, Field

from alipayplus import Amount, CancelPaymentRequest, PayRequest, Quote, RefundRequest, Result
from alipayplus.nfc import AdjustRefundRequest

from .credentials import Verdict
from .states import PaymentStatus, VerificationMethod

USER_CANCELLED = "The user cancelled the payment."  # the result message of an order its user cancelled on our page


class PaymentState(BaseModel):
    """What inquiryPayment, our pages and operators see."""

    payment_request_id: str
    payment_id: str | None
    status: PaymentStatus
    payment_result: Result
    customer_id: str | None
    payment_time: datetime | None
    payment_amount: Amount
    pay_to_amount: Amount
    merchant_name: str | None
    order_description: str
    expires_at: datetime
    verification_method: VerificationMethod | None = None
    otp_sent_to: str | None = None
    otp_challenge_id: str | None = None
    attempts_left: int = 0
    redirect_url: str | None  # where the user goes once the payment is final
    product: str = ""
    in_store_payment: bool = False  # scan-to-pay: never back to a merchant app (seed 003, step 7)
    nfc_token_reference_id: str | None = None  # NFC: the token tapped
    nfc_custom_data: str | None = None  # NFC: the phone's reference on the tap (hex)
    paying_account: str | None = None  # the payer's login, masked: what our page shows them
    otp_resends_left: int | None = None  # Easy Pay OTP: new codes the user may still ask for
    exchange_rate: str | None = None  # the quote Alipay+ sent, as "1 USD = 7.8 HKD" (MPM across currencies)


class Refusal(StrEnum):
    """Why a page action was not carried out (the page words it; the workflow only names it)."""

    NOT_WAITING = "not-waiting"  # the payment no longer waits for its user
    RESEND_LIMIT = "resend-limit"  # no more new codes for this payment
    NOT_SENT = "not-sent"  # the SMS could not be sent in time: the user may ask again
    BUSY = "busy"  # a code is being checked: the action waits for a second press


class PageOutcome(BaseModel):
    """The answer to what the user did on our payment page."""

    accepted: bool
    message: str
    state: PaymentState
    verdict: Verdict | None = None  # a typed code's, so the page can count it against the client address
    retry_after_seconds: int | None = None  # a typed code's wait before the next one may be checked
    refusal: Refusal | None = None  # why the page action was not carried out, for the page's own wording


def masked_login(request: PayRequest) -> str | None:
    """The login the payer gave at checkout, all but its last 4 characters hidden (``•••-••••2222``)."""
    metadata = request.payment_method.payment_method_meta_data
    login = metadata.user_login_id if metadata else None
    if not login:
        return None
    shown = login[-4:]
    return "".join("•" if char.isalnum() else char for char in login[:-4]) + shown


def rate_text(quote: Quote | None) -> str | None:
    """Alipay+'s quote as a person reads it: ``1 USD = 7.8 HKD`` (``None`` without a usable quote)."""
    if quote is None or not quote.quote_price or not quote.quote_currency_pair:
        return None
    base, _, counter = quote.quote_currency_pair.partition("/")
    return f"1 {base} = {quote.quote_price} {counter}" if base and counter else None


def with_status(url: str | None, status: str) -> str | None:
    """``paymentRedirectUrl`` plus ``status=success|fail`` (seed 004, step 3)."""
    if not url:
        return None
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("status", status)])
    return urlunsplit(parts._replace(query=query))


# --- what each process is started with ------------------------------------------------


class EasyPayOrder(BaseModel):
    request: PayRequest
    verification_page_url: str  # e.g. http://127.0.0.1:8000/easypay/verify
    default_expiry: timedelta = timedelta(minutes=10)
    verification_attempts: int = 3


class MpmOrder(BaseModel):
    request: PayRequest
    confirmation_page_url: str  # e.g. http://127.0.0.1:8000/mpm/pay
    default_expiry: timedelta = Field(default=timedelta(minutes=3), le=timedelta(minutes=3))


class Decision(StrEnum):
    CONFIRM = "CONFIRM"
    CANCEL = "CANCEL"


class NfcOrder(BaseModel):
    request: PayRequest
    default_expiry: timedelta = timedelta(minutes=1)  # nothing waits; only an order past it on arrival closes


class AutoDebitOrder(BaseModel):
    request: PayRequest
    default_expiry: timedelta = Field(default=timedelta(minutes=1), le=timedelta(minutes=1))  # spec §2.2


class RefundOrder(BaseModel):
    request: RefundRequest
    window: timedelta = timedelta(days=366)


class CancelOrder(BaseModel):
    request: CancelPaymentRequest
    cutoff: time = time(0, 30)  # on T+1, UTC+8


class AdjustRefundOrder(BaseModel):
    request: AdjustRefundRequest
