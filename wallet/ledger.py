"""The double-entry ledger: money moves only in balanced, idempotent postings.

A posting is a set of legs ``(account_id, signed amount)`` in one currency that sum to
zero; negative means money leaves the account. Each posting carries an idempotency key:
posting again under the same key (an activity retry, two racing workers) returns the
first posting's receipt instead of moving money twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Engine, Executable, func, insert, not_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import Insert
from sqlmodel import col

from alipayplus import Amount
from wallet.db import reader

from .records import Account, Entry, Posting, utc_now
from .states import AccountKind
from .telemetry.metrics import POSTED_MINOR_UNITS, POSTINGS
from .telemetry.tracing import tracer

MAX_IDEMPOTENCY_KEY_LENGTH = 200  # the posting.idempotency_key column

Leg = tuple[str, int]
"""``(account_id, signed amount in minor units)``; negative means money leaves the account."""


class PostingKind(StrEnum):
    PAYMENT_DEBIT = "PAYMENT_DEBIT"
    REFUND = "REFUND"
    CANCEL_REVERSAL = "CANCEL_REVERSAL"
    TOP_UP = "TOP_UP"
    ADJUST_REFUND = "ADJUST_REFUND"  # an excess or unlinked refund (adjustRefund): beyond any payment's debit


RETURNS = (PostingKind.REFUND, PostingKind.CANCEL_REVERSAL)
"""Postings that give a payment's money back to the user; together never more than its debit."""

Condition = tuple[Executable, str]
"""A conditional statement that must change exactly one row, and the reason if it does not."""


class PostingRefused(Exception):
    """A condition of the posting did not hold (e.g. the payment was cancelled); nothing was posted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InsufficientFunds(Exception):
    """The posting would take an account below zero that may not go there; nothing was posted."""

    def __init__(self, account_id: str) -> None:
        super().__init__(account_id)
        self.account_id = account_id

    def __str__(self) -> str:
        return f"insufficient funds in account {self.account_id}"


class UnknownAccount(LookupError):
    def __init__(self, account_id: str) -> None:
        super().__init__(account_id)
        self.account_id = account_id

    def __str__(self) -> str:
        return f"no account {self.account_id}"


class IdempotencyConflict(ValueError):
    """The idempotency key was already used for a different posting (a bug in the caller)."""


@dataclass(frozen=True)
class PostingReceipt:
    posting_id: int
    idempotency_key: str
    created_at: datetime  # aware UTC: when the posting was first made
    replayed: bool  # True when the key had been posted before and nothing moved this time


@dataclass(frozen=True)
class LedgerCheck:
    balanced: bool  # every posting, hence every currency, sums to zero
    balances_match_entries: bool  # each account's balance is the sum of its entries
    no_negative_user_balance: bool  # no account barred from going negative (users, settlement) is below zero
    returns_within_debits: bool  # no payment gave back (refunds, reversal) more than it debited
    postings: int

    @property
    def ok(self) -> bool:
        return (
            self.balanced
            and self.balances_match_entries
            and self.no_negative_user_balance
            and self.returns_within_debits
        )


class Ledger:
    """Accounts and postings in the database behind ``engine``. Safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = reader(engine)  # balances and receipts: a snapshot, never the write lock
        # accounts known to exist as asked, so hot paths skip re-opening them
        self._opened: set[tuple[str, AccountKind, str, bool]] = set()

    # accounts

    @staticmethod
    def user_account_id(customer_id: str) -> str:
        return f"user:{customer_id}"

    def open_user(self, customer_id: str, currency: str) -> str:
        """The customer's wallet account, created (balance 0) on first call."""
        return self._open(self.user_account_id(customer_id), AccountKind.USER, currency, allow_negative=False)

    def settlement_account(self, currency: str) -> str:
        """What the wallet owes Alipay+ for payments it has debited; created on first use."""
        return self._open(f"settlement:alipayplus:{currency}", AccountKind.SETTLEMENT, currency, allow_negative=False)

    def adjustments_account(self, currency: str) -> str:
        """What Alipay+ owes the wallet for the excess and unlinked refunds it had us credit
        (adjustRefund): settled by Alipay+ later, so it goes negative and never refuses a credit."""
        return self._open(f"adjustments:alipayplus:{currency}", AccountKind.SETTLEMENT, currency, allow_negative=True)

    def funding_account(self, currency: str) -> str:
        """The outside world's cash coming in (top-ups): the only account that goes negative."""
        return self._open(f"funding:{currency}", AccountKind.FUNDING, currency, allow_negative=True)

    def balance(self, account_id: str) -> int:
        with self._reader.begin() as connection:
            balance = connection.execute(select(col(Account.balance)).where(col(Account.id) == account_id)).scalar()
        if balance is None:
            raise UnknownAccount(account_id)
        return int(balance)

    def debited_since(self, account_id: str, since: datetime) -> int:
        """Minor units paid out of the account by PAYMENT_DEBIT postings made at or after ``since``."""
        return self.debits_since(account_id, since)[0]

    def debits_since(self, account_id: str, since: datetime) -> tuple[int, int]:
        """What PAYMENT_DEBIT postings made at or after ``since`` took from the account: minor units, and
        how many payments (one query: every payment's checks read both)."""
        paid = (
            select(func.coalesce(func.sum(-col(Entry.amount)), 0), func.count())
            .select_from(Entry)
            .join(Posting, col(Posting.id) == col(Entry.posting_id))
            .where(
                col(Entry.account_id) == account_id,
                col(Entry.amount) < 0,
                col(Posting.kind) == PostingKind.PAYMENT_DEBIT.value,
                col(Posting.created_at) >= since,
            )
        )
        with self._reader.begin() as connection:
            total, count = connection.execute(paid).one()
        return int(total), int(count)

    # postings

    def post(
        self,
        idempotency_key: str,
        kind: str,
        reference: str,
        legs: Sequence[Leg],
        *,
        conditions: Sequence[Condition] = (),
    ) -> PostingReceipt:
        """Apply a balanced posting once per ``idempotency_key``, all or nothing.

        ``conditions`` run in the same transaction, first: each must change exactly one row
        (a record's state moving on, a refunded sum growing within its cap), else nothing
        is posted and ``PostingRefused`` carries its reason. A replayed key skips them: they
        held when the posting was first made.

        Raises ``ValueError`` if the legs do not sum to zero, ``UnknownAccount``,
        ``ValueError`` if the accounts' currencies differ, ``InsufficientFunds`` (nothing
        posted), or ``IdempotencyConflict`` if the key was used for a different posting.
        A key already posted returns that posting's receipt with ``replayed=True``.
        """
        # a span of the trace that led here (the debit's activity, a refund's): the write, timed
        with tracer().start_as_current_span("ledger.post", attributes={"ledger.kind": str(kind)}) as span:
            receipt = self._post(idempotency_key, kind, reference, legs, conditions)
            span.set_attribute("ledger.replayed", receipt.replayed)
            return receipt

    def _post(
        self,
        idempotency_key: str,
        kind: str,
        reference: str,
        legs: Sequence[Leg],
        conditions: Sequence[Condition],
    ) -> PostingReceipt:
        if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ValueError(f"an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
        net_changes = _net_changes(legs)
        try:
            with self._engine.begin() as connection:
                earlier = _find_posting(connection, idempotency_key)
                if earlier is not None:
                    return _replay(connection, earlier, kind, reference, legs)
                for statement, reason in conditions:
                    changed = connection.execute(statement).rowcount
                    # An INSERT adds its row or raises IntegrityError; psycopg 3.3 reports -1 for it.
                    if changed != 1 and not (isinstance(statement, Insert) and changed == -1):
                        raise PostingRefused(reason)
                currency = _common_currency(connection, net_changes)
                created_at = utc_now()
                # The posting goes in first: a racing twin with the same key waits here on
                # the unique key and fails, rather than first competing for the balance.
                inserted = connection.execute(
                    insert(Posting)
                    .values(idempotency_key=idempotency_key, kind=kind, reference=reference, created_at=created_at)
                    .returning(col(Posting.id))
                )
                posting_id = cast(int, inserted.scalar_one())  # the model says "int | None": unsaved rows
                connection.execute(
                    insert(Entry),
                    [
                        {"posting_id": posting_id, "account_id": account_id, "currency": currency, "amount": amount}
                        for account_id, amount in legs
                    ],
                )
                for account_id, delta in net_changes.items():
                    _apply(connection, account_id, delta)  # raising rolls the whole posting back
            # committed: only now is it a posting (a rolled-back one, or a replayed key, is not counted)
            _count_posting(kind, currency, legs)
            return PostingReceipt(posting_id, idempotency_key, created_at, replayed=False)
        except IntegrityError:
            # A concurrent posting with the same key committed first (PostgreSQL; SQLite
            # serialises writers, so its SELECT above sees it). Answer with the winner's.
            with self._engine.begin() as connection:
                earlier = _find_posting(connection, idempotency_key)
                if earlier is None:
                    raise
                return _replay(connection, earlier, kind, reference, legs)

    def debit_user_to_settlement(
        self,
        idempotency_key: str,
        reference: str,
        customer_account_id: str,
        amount: Amount,
        conditions: Sequence[Condition] = (),
    ) -> PostingReceipt:
        """Pay ``amount`` out of the user's account into what the wallet owes Alipay+."""
        settlement = self.settlement_account(amount.currency)
        legs = [(customer_account_id, -amount.value), (settlement, amount.value)]
        return self.post(idempotency_key, PostingKind.PAYMENT_DEBIT, reference, legs, conditions=conditions)

    def return_to_user(
        self,
        idempotency_key: str,
        kind: PostingKind,
        reference: str,
        customer_account_id: str,
        amount: Amount,
        conditions: Sequence[Condition] = (),
    ) -> PostingReceipt:
        """Give ``amount`` of a payment back (a refund or a cancel's reversal): the mirror of its debit."""
        settlement = self.settlement_account(amount.currency)
        legs = [(settlement, -amount.value), (customer_account_id, amount.value)]
        return self.post(idempotency_key, kind, reference, legs, conditions=conditions)

    def credit_adjustment(
        self,
        idempotency_key: str,
        reference: str,
        customer_account_id: str,
        amount: Amount,
        conditions: Sequence[Condition] = (),
    ) -> PostingReceipt:
        """Credit an adjustRefund's ``amount`` to the user, owed to us by Alipay+: no payment's
        debit caps it, whatever the user's status (spec §13.3)."""
        adjustments = self.adjustments_account(amount.currency)
        legs = [(adjustments, -amount.value), (customer_account_id, amount.value)]
        return self.post(idempotency_key, PostingKind.ADJUST_REFUND, reference, legs, conditions=conditions)

    def fund_user(
        self, idempotency_key: str, account_id: str, amount: Amount, reference: str | None = None
    ) -> PostingReceipt:
        """Top the user's account up with ``amount`` from outside (reference defaults to the account)."""
        funding = self.funding_account(amount.currency)
        legs = [(funding, -amount.value), (account_id, amount.value)]
        return self.post(idempotency_key, PostingKind.TOP_UP, reference or account_id, legs)

    def receipt(self, idempotency_key: str) -> PostingReceipt | None:
        """The posting already made under this key, if any (so a retry skips its checks)."""
        with self._reader.connect() as connection:
            posting = _find_posting(connection, idempotency_key)
        if posting is None or posting.id is None:
            return None
        return PostingReceipt(
            posting_id=posting.id, idempotency_key=idempotency_key, created_at=posting.created_at, replayed=True
        )

    # audit

    def check(self) -> LedgerCheck:
        """Audit the whole ledger in one consistent snapshot."""
        entry_totals = (
            select(col(Entry.account_id).label("account_id"), func.sum(col(Entry.amount)).label("total"))
            .group_by(col(Entry.account_id))
            .subquery()
        )
        with self._snapshot() as connection:
            unbalanced_postings = connection.execute(
                select(func.count()).select_from(
                    select(col(Entry.posting_id))
                    .group_by(col(Entry.posting_id))
                    .having(func.sum(col(Entry.amount)) != 0)
                    .subquery()
                )
            ).scalar_one()
            currency_totals = (
                connection.execute(select(func.sum(col(Entry.amount))).group_by(col(Entry.currency))).scalars().all()
            )
            mismatched_accounts = connection.execute(
                select(func.count())
                .select_from(Account)
                .outerjoin(entry_totals, entry_totals.c.account_id == col(Account.id))
                .where(col(Account.balance) != func.coalesce(entry_totals.c.total, 0))
            ).scalar_one()
            negative_accounts = connection.execute(
                select(func.count())
                .select_from(Account)
                .where(
                    col(Account.balance) < 0,
                    or_(col(Account.kind) == AccountKind.USER, not_(col(Account.allow_negative))),
                )
            ).scalar_one()
            postings = connection.execute(select(func.count()).select_from(Posting)).scalar_one()
            user_flows = connection.execute(
                select(col(Posting.reference), col(Posting.kind), func.sum(col(Entry.amount)))
                .join(Entry, col(Entry.posting_id) == col(Posting.id))
                .join(Account, col(Account.id) == col(Entry.account_id))
                .where(
                    col(Account.kind) == AccountKind.USER, col(Posting.kind).in_([PostingKind.PAYMENT_DEBIT, *RETURNS])
                )
                .group_by(col(Posting.reference), col(Posting.kind))
            ).all()
            return LedgerCheck(
                balanced=unbalanced_postings == 0 and all(total == 0 for total in currency_totals),
                balances_match_entries=mismatched_accounts == 0,
                no_negative_user_balance=negative_accounts == 0,
                returns_within_debits=_returns_within_debits(user_flows),
                postings=int(postings),
            )

    # internals

    def _open(self, account_id: str, kind: AccountKind, currency: str, *, allow_negative: bool) -> str:
        wanted = (account_id, kind, currency, allow_negative)
        if wanted in self._opened:
            return account_id
        try:
            found = self._find_or_insert_account(*wanted)
        except IntegrityError:
            # inserted concurrently between our SELECT and INSERT (PostgreSQL): it exists now
            found = self._find_or_insert_account(*wanted)
        if found != wanted[1:]:
            raise ValueError(f"account {account_id} exists as {found}, not {wanted[1:]}")
        self._opened.add(wanted)
        return account_id

    def _find_or_insert_account(
        self, account_id: str, kind: AccountKind, currency: str, allow_negative: bool
    ) -> tuple[AccountKind, str, bool]:
        """The account's (kind, currency, allow_negative), inserting it with balance 0 if missing."""
        with self._engine.begin() as connection:
            existing = connection.execute(
                select(col(Account.kind), col(Account.currency), col(Account.allow_negative)).where(
                    col(Account.id) == account_id
                )
            ).first()
            if existing is not None:
                return (existing.kind, existing.currency, existing.allow_negative)
            connection.execute(
                insert(Account).values(
                    id=account_id, kind=kind, currency=currency, balance=0, allow_negative=allow_negative
                )
            )
            return (kind, currency, allow_negative)

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        with self._engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # every statement sees the same moment (SQLite's BEGIN IMMEDIATE already does)
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection


def _count_posting(kind: str, currency: str, legs: Sequence[Leg]) -> None:
    kind = str(kind)  # a PostingKind's value, not its repr
    POSTINGS.labels(kind=kind, currency=currency).inc()
    POSTED_MINOR_UNITS.labels(kind=kind, currency=currency).inc(sum(amount for _, amount in legs if amount > 0))


def _returns_within_debits(user_flows: Iterable[Any]) -> bool:
    """From (reference, kind, net user amount) rows: per payment, money returned <= money debited."""
    debited: dict[str, int] = {}
    returned: dict[str, int] = {}
    for reference, kind, total in user_flows:
        if kind == PostingKind.PAYMENT_DEBIT:
            debited[reference] = debited.get(reference, 0) - int(total)
        else:
            returned[reference] = returned.get(reference, 0) + int(total)
    return all(amount <= debited.get(reference, 0) for reference, amount in returned.items())


def _net_changes(legs: Sequence[Leg]) -> dict[str, int]:
    """Each account's net change, in account-id order (PostgreSQL locks rows in that order)."""
    if len(legs) < 2:
        raise ValueError("a posting needs at least two legs")
    for account_id, amount in legs:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise ValueError(f"leg {account_id}: amount must be integer minor units, not {amount!r}")
    total = sum(amount for _, amount in legs)
    if total != 0:
        raise ValueError(f"unbalanced posting: legs sum to {total}, not 0")
    net: dict[str, int] = {}
    for account_id, amount in legs:
        net[account_id] = net.get(account_id, 0) + amount
    return dict(sorted(net.items()))


def _common_currency(connection: Connection, account_ids: Iterable[str]) -> str:
    wanted = list(account_ids)
    rows = connection.execute(select(col(Account.id), col(Account.currency)).where(col(Account.id).in_(wanted))).all()
    currencies = {account_id: currency for account_id, currency in rows}
    for account_id in wanted:
        if account_id not in currencies:
            raise UnknownAccount(account_id)
    distinct = set(currencies.values())
    if len(distinct) != 1:
        raise ValueError(f"a posting moves one currency; these accounts hold {sorted(distinct)}")
    return distinct.pop()


def _apply(connection: Connection, account_id: str, delta: int) -> None:
    # One conditional statement: the balance check and the change cannot be split by a
    # concurrent writer, on SQLite or PostgreSQL.
    updated = connection.execute(
        update(Account)
        .where(
            col(Account.id) == account_id,
            or_(col(Account.allow_negative), col(Account.balance) + delta >= 0),
        )
        .values(balance=col(Account.balance) + delta)
    )
    if updated.rowcount != 1:
        raise InsufficientFunds(account_id)


def _find_posting(connection: Connection, idempotency_key: str) -> Posting | None:
    row = connection.execute(
        select(col(Posting.id), col(Posting.kind), col(Posting.reference), col(Posting.created_at)).where(
            col(Posting.idempotency_key) == idempotency_key
        )
    ).first()
    if row is None:
        return None
    return Posting(
        id=row.id, idempotency_key=idempotency_key, kind=row.kind, reference=row.reference, created_at=row.created_at
    )


def _replay(connection: Connection, earlier: Posting, kind: str, reference: str, legs: Sequence[Leg]) -> PostingReceipt:
    """The receipt of the posting already made under this key, if it is the same posting."""
    assert earlier.id is not None
    earlier_legs = connection.execute(
        select(col(Entry.account_id), col(Entry.amount)).where(col(Entry.posting_id) == earlier.id)
    ).all()
    if (earlier.kind, earlier.reference, sorted(tuple(leg) for leg in earlier_legs)) != (kind, reference, sorted(legs)):
        raise IdempotencyConflict(
            f"idempotency key {earlier.idempotency_key!r} already posted {earlier.kind} for {earlier.reference}"
        )
    return PostingReceipt(earlier.id, earlier.idempotency_key, earlier.created_at, replayed=True)
