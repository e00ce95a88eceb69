"""evaluate_account: every result code, on demo users read back from a migrated database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alipayplus import Amount, ResultCode
from wallet.evaluation import evaluate_account
from wallet.ledger import Ledger
from wallet.records import WalletUser
from wallet.users import UserStore

ACTIVE_PIN_USER = "2160220037535021"
FROZEN_USER = "2160220037535022"
POOR_USER = "2160220037535023"
KYC_PENDING_USER = "2160220037535024"


def idr(value: int) -> Amount:
    return Amount(currency="IDR", value=value)


@pytest.fixture
def demo(ledger: Ledger, users: UserStore, secret_key: bytes) -> dict[str, WalletUser]:
    return {user.customer_id: user for user in users.seed_demo_users(ledger, secret_key)}


def evaluate(ledger: Ledger, user: WalletUser | None, amount: Amount) -> ResultCode:
    """As the payment activity does: today's debits and the balance from the ledger."""
    if user is None:
        return evaluate_account(None, amount, debited_today=0, balance=0)
    # the last 24 hours: a test running across midnight must not lose its own debits
    since = datetime.now(UTC) - timedelta(days=1)
    debited_today, payments_today = ledger.debits_since(user.account_id, since)
    return evaluate_account(
        user,
        amount,
        debited_today=debited_today,
        balance=ledger.balance(user.account_id),
        payments_today=payments_today,
    )


def test_an_unknown_user_does_not_exist(ledger: Ledger, users: UserStore, demo: dict[str, WalletUser]) -> None:
    assert evaluate(ledger, users.find("0000", None, None), idr(1)) is ResultCode.USER_NOT_EXIST


def test_a_frozen_user_is_abnormal(ledger: Ledger, demo: dict[str, WalletUser]) -> None:
    assert evaluate(ledger, demo[FROZEN_USER], idr(1)) is ResultCode.USER_STATUS_ABNORMAL


def test_another_currency_is_not_supported(ledger: Ledger, demo: dict[str, WalletUser]) -> None:
    usd = Amount(currency="USD", value=1)
    assert evaluate(ledger, demo[ACTIVE_PIN_USER], usd) is ResultCode.CURRENCY_NOT_SUPPORT


def test_the_single_payment_limit(ledger: Ledger, demo: dict[str, WalletUser]) -> None:
    user = demo[ACTIVE_PIN_USER]
    assert evaluate(ledger, user, idr(5_000_000)) is ResultCode.SUCCESS
    assert evaluate(ledger, user, idr(5_000_001)) is ResultCode.PAYMENT_AMOUNT_EXCEED_LIMIT


def test_the_daily_limit_counts_todays_debits(ledger: Ledger, demo: dict[str, WalletUser]) -> None:
    user = demo[ACTIVE_PIN_USER]
    ledger.fund_user("top-up/1", user.account_id, idr(20_000_000))
    for n in range(3):
        ledger.debit_user_to_settlement(f"pay/{n}", f"req-{n}", user.account_id, idr(5_000_000))
    assert evaluate(ledger, user, idr(5_000_000)) is ResultCode.SUCCESS  # exactly at 20 000 000
    assert evaluate(ledger, user, idr(5_000_001)) is ResultCode.PAYMENT_AMOUNT_EXCEED_LIMIT
    ledger.debit_user_to_settlement("pay/3", "req-3", user.account_id, idr(1))
    assert evaluate(ledger, user, idr(5_000_000)) is ResultCode.USER_AMOUNT_EXCEED_LIMIT
    # yesterday's payments no longer count
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert (
        evaluate_account(user, idr(5_000_000), ledger.debited_since(user.account_id, tomorrow), 10**9)
        is ResultCode.SUCCESS
    )


def test_the_balance_must_cover_the_amount(ledger: Ledger, demo: dict[str, WalletUser]) -> None:
    poor = demo[POOR_USER]
    assert evaluate(ledger, poor, idr(40)) is ResultCode.SUCCESS
    assert evaluate(ledger, poor, idr(41)) is ResultCode.USER_BALANCE_NOT_ENOUGH


def test_checks_come_in_order(demo: dict[str, WalletUser]) -> None:
    frozen, active = demo[FROZEN_USER], demo[ACTIVE_PIN_USER]
    usd_over_everything = Amount(currency="USD", value=10**12)
    assert evaluate_account(frozen, usd_over_everything, 10**12, 0) is ResultCode.USER_STATUS_ABNORMAL
    assert evaluate_account(active, usd_over_everything, 10**12, 0) is ResultCode.CURRENCY_NOT_SUPPORT
    assert evaluate_account(active, idr(10**12), 10**12, 0) is ResultCode.PAYMENT_AMOUNT_EXCEED_LIMIT
    assert evaluate_account(active, idr(1), 20_000_000, 0) is ResultCode.USER_AMOUNT_EXCEED_LIMIT
    assert evaluate_account(active, idr(1), 0, 0) is ResultCode.USER_BALANCE_NOT_ENOUGH
    assert evaluate_account(active, idr(1), 0, 1) is ResultCode.SUCCESS


def test_a_user_without_kyc_may_not_pay(ledger: Ledger, demo: dict[str, WalletUser]) -> None:
    pending = demo[KYC_PENDING_USER]
    assert ledger.balance(pending.account_id) >= 1  # money is not the reason
    assert evaluate(ledger, pending, idr(1)) is ResultCode.USER_KYC_NOT_QUALIFIED


def test_the_payments_a_day_limit_counts_todays_payments(ledger: Ledger, demo: dict[str, WalletUser]) -> None:
    user = demo[ACTIVE_PIN_USER].model_copy(update={"daily_payment_count_limit": 3})
    for n in range(2):
        ledger.debit_user_to_settlement(f"pay/count-{n}", f"count-{n}", user.account_id, idr(1))
    assert evaluate(ledger, user, idr(1)) is ResultCode.SUCCESS  # the third of three
    ledger.debit_user_to_settlement("pay/count-2", "count-2", user.account_id, idr(1))
    assert evaluate(ledger, user, idr(1)) is ResultCode.PAYMENT_COUNT_EXCEED_LIMIT
    assert ledger.debits_since(user.account_id, datetime.now(UTC) - timedelta(days=1)) == (3, 3)
