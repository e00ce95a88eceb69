"""What our payment pages say, from a payment's state: outcomes, reasons, expiry, plain words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alipayplus import Amount, Quote, Result, ResultCode
from api import pages
from sandbox.alipayplus.driver import easy_pay_order
from wallet.orders import USER_CANCELLED, PaymentState, masked_login, rate_text
from wallet.states import PaymentStatus, VerificationMethod
from workflows.easy_pay import LOCKED_MESSAGE

pytestmark = pytest.mark.timeout(10)
NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
PRICE = Amount(currency="IDR", value=5000)


def state(
    status: PaymentStatus,
    code: ResultCode,
    message: str | None = None,
    *,
    expires_at: datetime | None = None,
    paid_at: datetime | None = None,
    method: VerificationMethod = VerificationMethod.PIN,
) -> PaymentState:
    return PaymentState(
        payment_request_id="pr-1",
        payment_id="p-1",
        status=status,
        payment_result=Result.of(code, message),
        customer_id="c-1",
        payment_time=paid_at,
        payment_amount=PRICE,
        pay_to_amount=PRICE,
        merchant_name="Sandbox Gift Shop",
        order_description="Gift card",
        expires_at=expires_at or datetime.now(UTC) + timedelta(minutes=5),
        verification_method=method,
        redirect_url=None,
    )


PAST = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("shown", "outcome", "reason"),
    [
        (state(PaymentStatus.SUCCESS, ResultCode.SUCCESS, paid_at=NOW), pages.Outcome.SUCCESS, ""),
        (
            state(PaymentStatus.FAIL, ResultCode.USER_PAYMENT_VERIFICATION_FAILED),
            pages.Outcome.FAIL,
            "Wrong PIN entered too many times.",
        ),
        (
            state(PaymentStatus.FAIL, ResultCode.USER_PAYMENT_VERIFICATION_FAILED, method=VerificationMethod.OTP),
            pages.Outcome.FAIL,
            "Wrong code entered too many times.",
        ),
        (
            state(PaymentStatus.FAIL, ResultCode.USER_PAYMENT_VERIFICATION_FAILED, LOCKED_MESSAGE),
            pages.Outcome.FAIL,
            pages.LOCKED,
        ),
        (
            state(PaymentStatus.FAIL, ResultCode.USER_BALANCE_NOT_ENOUGH),
            pages.Outcome.FAIL,
            "Your balance is not enough for this payment.",
        ),
        (
            state(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED, USER_CANCELLED),
            pages.Outcome.CANCELLED,
            "You cancelled this payment.",
        ),
        (
            state(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED, expires_at=PAST),
            pages.Outcome.EXPIRED,
            pages.NOT_IN_TIME,
        ),
        (state(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED), pages.Outcome.CANCELLED, pages.CLOSED_BY_MERCHANT),
        (  # paid, then cancelled by the merchant: never "expired", whatever the clock says now
            state(PaymentStatus.CLOSED, ResultCode.ORDER_IS_CLOSED, expires_at=PAST, paid_at=PAST),
            pages.Outcome.CANCELLED,
            pages.CLOSED_BY_MERCHANT,
        ),
    ],
    ids=["paid", "wrong pin", "wrong code", "locked", "balance", "user cancel", "expired", "merchant", "paid+cancel"],
)
def test_each_final_state_is_told_in_a_payers_words(shown: PaymentState, outcome: pages.Outcome, reason: str) -> None:
    assert pages.outcome_of(shown) is outcome
    assert pages.failure_reason(shown) == reason


@pytest.mark.parametrize(
    ("left", "said"),
    [
        (timedelta(minutes=9, seconds=59), "Expires in 9 min"),
        (timedelta(seconds=59), "Expires in less than a minute"),
        (timedelta(hours=2, minutes=5), "Expires in 2 h 5 min"),
        (timedelta(0), "This payment has expired"),
        (timedelta(seconds=-5), "This payment has expired"),
    ],
)
def test_expiry_is_said_relative_to_now(left: timedelta, said: str) -> None:
    assert pages.expires_in(NOW + left, NOW) == said


@pytest.mark.parametrize(
    ("raw", "read"),
    [("AMSDM_GIFT", "Amsdm gift"), ("Gift card", "Gift card"), ("UGG", "UGG"), ("", ""), (None, "")],
)
def test_codes_become_words_and_words_stay(raw: str | None, read: str) -> None:
    assert pages.readable(raw) == read


def test_counts_are_said_in_singular_and_plural() -> None:
    assert [pages.plural(count, "attempt") for count in (0, 1, 2)] == ["0 attempts", "1 attempt", "2 attempts"]


def test_the_paying_account_shows_only_its_last_four_characters() -> None:
    request = easy_pay_order("pr-1", "852-11112222", PRICE, "psp")
    assert masked_login(request) == "•••-••••2222"
    assert (
        masked_login(
            request.model_copy(
                update={"payment_method": request.payment_method.model_copy(update={"payment_method_meta_data": None})}
            )
        )
        is None
    )


def test_the_quote_is_said_as_one_unit_of_the_merchants_currency() -> None:
    assert rate_text(Quote(quote_currency_pair="JPY/KRW", quote_price="10")) == "1 JPY = 10 KRW"
    assert rate_text(Quote(quote_currency_pair="JPYKRW", quote_price="10")) is None
    assert rate_text(None) is None
