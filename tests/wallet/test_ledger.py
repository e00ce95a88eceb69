"""The ledger, the schema it lives in, and the demo users funded through it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, inspect, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, SQLModel, col, select

from alipayplus import Amount
from wallet.db import migrate
from wallet.ledger import (
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    PostingKind,
    PostingReceipt,
    UnknownAccount,
)
from wallet.records import Entry, PaymentRecord, Posting
from wallet.secrets import keyed_digest, pin_verifier_matches, token_digest
from wallet.states import PaymentStatus, UserStatus, VerificationMethod
from wallet.users import DEMO_PIN, UserStore

from .racing import race


def idr(value: int) -> Amount:
    return Amount(currency="IDR", value=value)


def funded_user(ledger: Ledger, customer_id: str, balance: int) -> str:
    account = ledger.open_user(customer_id, "IDR")
    if balance:
        ledger.fund_user(f"fund/{customer_id}", account, idr(balance))
    return account


def count(engine: Engine, model: type[SQLModel]) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


# schema


def test_migrations_create_exactly_the_models_and_can_rerun(database_url: str, engine: Engine) -> None:
    migrate(database_url)  # a second run is a no-op
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
        tables = set(inspect(connection).get_table_names())
    assert differences == []
    assert tables == {
        "alembic_version",
        "account",
        "agreement",
        "wallet_user",
        "credential_counter",
        "credential_failure",
        "credential_lockout",
        "delivery_attempt",
        "nfc_token",
        "nfc_device",
        "nfc_tap",
        "posting",
        "entry",
        "payment_record",
        "refund_record",
        "adjust_refund_record",
        "otp_challenge",
        "access_token",
        "app_session",
        "auth_code",
        "oauth_token",
        "token_activation",
    }


def test_database_refuses_a_negative_user_balance(ledger: Ledger, engine: Engine) -> None:
    account = funded_user(ledger, "c1", 10)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("UPDATE account SET balance = -1 WHERE id = :id"), {"id": account})
    assert ledger.balance(account) == 10


def test_datetimes_come_back_aware_utc_and_naive_ones_are_refused(engine: Engine) -> None:
    jakarta = timezone(timedelta(hours=7))
    paid_at = datetime(2026, 1, 2, 10, 0, tzinfo=jakarta)
    record = PaymentRecord(
        payment_request_id="req-1",
        payment_id="pay-1",
        product="EASY_PAY",
        status=PaymentStatus.SUCCESS,
        key_fields_digest="0" * 64,
        payment_amount_currency="IDR",
        payment_amount_value=100,
        pay_to_amount_currency="IDR",
        pay_to_amount_value=100,
        payment_time=paid_at,
    )
    with Session(engine) as session:
        session.add(record)
        session.commit()
    with Session(engine) as session:
        stored = session.get(PaymentRecord, "req-1")
        assert stored is not None
        assert stored.payment_time == paid_at
        assert stored.payment_time is not None and stored.payment_time.tzinfo == UTC
        assert stored.created_at.tzinfo == UTC
        assert stored.status is PaymentStatus.SUCCESS
        stored.payment_expiry_time = datetime(2026, 1, 2, 10, 0)  # naive
        with pytest.raises(StatementError, match="naive datetime"):
            session.commit()


# postings


def test_a_posting_sums_to_zero_and_moves_the_balances(ledger: Ledger, engine: Engine) -> None:
    account = funded_user(ledger, "c1", 1_000)
    receipt = ledger.debit_user_to_settlement("pay/1", "req-1", account, idr(300))
    assert receipt.replayed is False
    assert receipt.created_at.tzinfo == UTC
    with Session(engine) as session:
        amounts = session.exec(select(Entry.amount).where(Entry.posting_id == receipt.posting_id)).all()
        posting = session.get(Posting, receipt.posting_id)
    assert sorted(amounts) == [-300, 300]
    assert posting is not None and (posting.kind, posting.reference) == ("PAYMENT_DEBIT", "req-1")
    assert ledger.balance(account) == 700
    assert ledger.balance(ledger.settlement_account("IDR")) == 300
    assert ledger.balance(ledger.funding_account("IDR")) == -1_000
    assert ledger.check().ok
    assert ledger.check().postings == 2


def test_unbalanced_or_malformed_legs_are_refused(ledger: Ledger, engine: Engine) -> None:
    account = funded_user(ledger, "c1", 1_000)
    settlement = ledger.settlement_account("IDR")
    with pytest.raises(ValueError, match="unbalanced"):
        ledger.post("bad/1", PostingKind.PAYMENT_DEBIT, "r", [(account, -100), (settlement, 99)])
    with pytest.raises(ValueError, match="two legs"):
        ledger.post("bad/2", PostingKind.PAYMENT_DEBIT, "r", [(account, 0)])
    with pytest.raises(ValueError, match="integer minor units"):
        ledger.post("bad/3", PostingKind.PAYMENT_DEBIT, "r", [(account, -1.5), (settlement, 1.5)])  # type: ignore[list-item]
    assert count(engine, Posting) == 1  # only the funding
    assert ledger.balance(account) == 1_000


def test_accounts_of_different_currencies_or_unknown_accounts_are_refused(ledger: Ledger, engine: Engine) -> None:
    account = funded_user(ledger, "c1", 1_000)
    with pytest.raises(ValueError, match="one currency"):
        ledger.debit_user_to_settlement("pay/usd", "req", account, Amount(currency="USD", value=100))
    with pytest.raises(UnknownAccount):
        ledger.post("pay/ghost", PostingKind.PAYMENT_DEBIT, "req", [("user:nobody", -1), (account, 1)])
    assert ledger.balance(account) == 1_000
    assert count(engine, Posting) == 1
    with pytest.raises(ValueError, match="exists as"):
        ledger.open_user("c1", "USD")


def test_a_repeated_key_replays_the_first_posting(ledger: Ledger, engine: Engine) -> None:
    account = funded_user(ledger, "c1", 1_000)
    first = ledger.debit_user_to_settlement("pay/1", "req-1", account, idr(300))
    again = ledger.debit_user_to_settlement("pay/1", "req-1", account, idr(300))
    assert again == PostingReceipt(first.posting_id, "pay/1", first.created_at, replayed=True)
    assert ledger.balance(account) == 700
    assert count(engine, Posting) == 2
    assert count(engine, Entry) == 4
    assert ledger.receipt("pay/1") == again
    assert ledger.receipt("pay/never") is None
    replayed_funding = ledger.fund_user("fund/c1", account, idr(1_000))
    assert replayed_funding.replayed is True
    assert ledger.balance(account) == 700


def test_a_key_reused_for_a_different_posting_is_a_conflict(ledger: Ledger) -> None:
    account = funded_user(ledger, "c1", 1_000)
    ledger.debit_user_to_settlement("pay/1", "req-1", account, idr(300))
    with pytest.raises(IdempotencyConflict):
        ledger.debit_user_to_settlement("pay/1", "req-1", account, idr(301))
    assert ledger.balance(account) == 700


def test_insufficient_funds_posts_nothing(ledger: Ledger, engine: Engine) -> None:
    account = funded_user(ledger, "c1", 100)
    with pytest.raises(InsufficientFunds) as refused:
        ledger.debit_user_to_settlement("pay/1", "req-1", account, idr(101))
    assert refused.value.account_id == account
    assert ledger.balance(account) == 100
    assert count(engine, Posting) == 1
    assert count(engine, Entry) == 2
    # the refused key was not used up: once there is money, the same request goes through
    ledger.fund_user("fund/c1/more", account, idr(1))
    assert ledger.debit_user_to_settlement("pay/1", "req-1", account, idr(101)).replayed is False
    assert ledger.balance(account) == 0
    assert ledger.check().ok


def test_debited_since_counts_payment_debits_only(ledger: Ledger) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    account = funded_user(ledger, "c1", 1_000)
    other = funded_user(ledger, "c2", 1_000)
    ledger.debit_user_to_settlement("pay/1", "req-1", account, idr(100))
    ledger.debit_user_to_settlement("pay/2", "req-2", account, idr(250))
    ledger.debit_user_to_settlement("pay/3", "req-3", other, idr(999))
    assert ledger.debited_since(account, before) == 350
    assert ledger.debited_since(account, datetime.now(UTC) + timedelta(seconds=1)) == 0
    assert ledger.debited_since(ledger.settlement_account("IDR"), before) == 0


# concurrency


def test_concurrent_debits_never_overdraw(ledger: Ledger, engine: Engine) -> None:
    account = funded_user(ledger, "c1", 100)
    outcomes = race(16, lambda i: ledger.debit_user_to_settlement(f"pay/{i}", f"req-{i}", account, idr(30)))
    succeeded = [o for o in outcomes if isinstance(o, PostingReceipt)]
    refused = [o for o in outcomes if isinstance(o, InsufficientFunds)]
    assert len(succeeded) == 3
    assert len(refused) == 13
    assert ledger.balance(account) == 10
    assert count(engine, Posting) == 1 + 3
    assert ledger.check().ok


def test_concurrent_retries_of_one_key_post_once(ledger: Ledger, engine: Engine) -> None:
    account = funded_user(ledger, "c1", 100)
    outcomes = race(16, lambda _: ledger.debit_user_to_settlement("pay/same", "req-same", account, idr(30)))
    receipts = [o for o in outcomes if isinstance(o, PostingReceipt)]
    assert len(receipts) == 16, [o for o in outcomes if not isinstance(o, PostingReceipt)]
    assert len({r.posting_id for r in receipts}) == 1
    assert sum(not r.replayed for r in receipts) == 1
    assert ledger.balance(account) == 70
    with Session(engine) as session:
        assert session.exec(select(func.count()).where(col(Posting.idempotency_key) == "pay/same")).one() == 1
    assert ledger.check().ok


_keys = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    opening=st.lists(st.integers(min_value=0, max_value=500), min_size=3, max_size=3),
    transfers=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(min_value=0, max_value=400)), max_size=12
    ),
)
def test_any_sequence_of_transfers_keeps_the_books_straight(
    ledger: Ledger, opening: list[int], transfers: list[tuple[int, int, int]]
) -> None:
    run = next(_keys)
    accounts = [funded_user(ledger, f"h{run}-{i}", balance) for i, balance in enumerate(opening)]
    expected = list(opening)
    for n, (source, target, amount) in enumerate(transfers):
        legs = [(accounts[source], -amount), (accounts[target], amount)]
        if expected[source] - amount < 0 and source != target:
            with pytest.raises(InsufficientFunds):
                ledger.post(f"h{run}/{n}", "TRANSFER", "prop", legs)
        else:
            ledger.post(f"h{run}/{n}", "TRANSFER", "prop", legs)
            expected[source] -= amount
            expected[target] += amount
    assert [ledger.balance(a) for a in accounts] == expected
    assert ledger.check().ok


# users and secrets


def test_seeding_demo_users_twice_changes_nothing(ledger: Ledger, users: UserStore, secret_key: bytes) -> None:
    first = users.seed_demo_users(ledger, secret_key)
    balances = {u.customer_id: ledger.balance(u.account_id) for u in first}
    postings = ledger.check().postings
    second = users.seed_demo_users(ledger, secret_key)
    assert [u.customer_id for u in second] == [u.customer_id for u in first]
    assert {u.customer_id: ledger.balance(u.account_id) for u in second} == balances
    assert balances == {
        "2160220037535020": 10_000_000,
        "2160220037535021": 10_000_000,
        "2160220037535022": 10_000_000,
        "2160220037535023": 40,
        "2160220037535024": 10_000_000,
        "2160220037535031": 1_000_000,  # KRW, exponent 0
    }
    check = ledger.check()
    assert check.ok
    assert check.postings == postings == 6
    assert ledger.balance(ledger.funding_account("IDR")) == -40_000_040
    assert ledger.balance(ledger.funding_account("KRW")) == -1_000_000


def test_demo_users_are_as_documented(ledger: Ledger, users: UserStore, secret_key: bytes) -> None:
    users.seed_demo_users(ledger, secret_key)
    sample = users.find("2160220037535020", None, None)
    assert sample is not None
    assert (sample.login_id, sample.verification_method, sample.pin_digest) == (
        "852-95303585",
        VerificationMethod.OTP,
        None,
    )
    assert (sample.single_payment_limit, sample.daily_limit, sample.currency) == (5_000_000, 20_000_000, "IDR")
    pin_user = users.get("2160220037535021")
    assert pin_user is not None and pin_user.verification_method is VerificationMethod.PIN
    assert pin_user.pin_digest and pin_user.pin_digest.startswith("scrypt$")
    assert pin_verifier_matches(pin_user.pin_digest, keyed_digest(secret_key, "pin", "2160220037535021", DEMO_PIN))
    assert not pin_verifier_matches(pin_user.pin_digest, keyed_digest(secret_key, "pin", "2160220037535021", "000000"))
    assert not pin_verifier_matches(pin_user.pin_digest, keyed_digest(secret_key, "pin", "2160220037535022", DEMO_PIN))
    frozen = users.get("2160220037535022")
    assert frozen is not None and frozen.status is UserStatus.FROZEN


def test_users_are_found_by_payment_method_id_or_login(ledger: Ledger, users: UserStore, secret_key: bytes) -> None:
    users.seed_demo_users(ledger, secret_key)
    by_login = users.find(None, "852-11112222", "mobile")
    assert by_login is not None and by_login.customer_id == "2160220037535021"
    by_id = users.find("2160220037535023", "852-11112222", "MOBILE")  # the id wins
    assert by_id is not None and by_id.customer_id == "2160220037535023"
    stale_id = users.find("0000", "852-11112222", "MOBILE")
    assert stale_id is not None and stale_id.customer_id == "2160220037535021"
    assert users.find(None, "852-11112222", "EMAIL") is None
    assert users.find(None, "852-00000000", "MOBILE") is None
    assert users.find(None, None, None) is None
    assert users.get("0000") is None


def test_token_digest_is_sha256_hex() -> None:
    assert token_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert keyed_digest(b"k", "otp", "c1", "123456") != keyed_digest(b"k", "pin", "c1", "123456")
