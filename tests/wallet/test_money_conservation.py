"""Money is conserved: payments, refunds and cancellations never give back more than was debited.

Two angles on the same activities, called directly (no Temporal) on a real database:
  * races: 16 threads released together refund (or refund and cancel) one payment;
  * a Hypothesis state machine: orders, debits, refunds (over-sized, with refundFromAmount,
    duplicated), cancels (also of unknown ids), late orders and activity retries, Auto Debit
    bindings, payments with their tokens and revocations (cancelToken, or the user unbinding:
    a revoked token's payment is refused and moves nothing), with the ledger audited and
    compared with a model after every step.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as hypothesis_engine
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import Engine, create_engine, func
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from activities.cancellation import CancelActivities
from activities.payments import PaymentActivities
from activities.refunds import RefundActivities
from alipayplus import (
    Amount,
    CancelTokenRequest,
    PaymentFactor,
    PaymentMethod,
    PayRequest,
    PrepareRequest,
    RefundRequest,
    ResultCode,
    Scope,
)
from sandbox.alipayplus.driver import ACQUIRER_ID, PAYMENT_METHOD_TYPE, PSP_ID, apply_token_request, easy_pay_order
from wallet.agreements import Agreements, CancelledBy, Consented
from wallet.cancellation import CancelApplication, Cancellation, CancelOutcome
from wallet.credentials import Credentials
from wallet.db import create_engine_for, migrate
from wallet.ledger import Ledger, PostingKind
from wallet.nfc_tokens import NfcTokens
from wallet.oauth import Authorizations, TokenLifetimes
from wallet.payments import CodeCheck, DebitRequest, DebitResult, PaymentRecordUpdate
from wallet.records import Account, Entry, PaymentRecord, Posting
from wallet.refunds import RefundApplication, RefundOutcome, credit_for
from wallet.secrets import keyed_digest
from wallet.states import PaymentStatus, VerificationMethod
from wallet.users import DEMO_PIN, DEMO_USERS, UserStore

from .racing import race

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")

SECRET_KEY = (Path(__file__).resolve().parents[1] / "fixtures" / "test_secret.key").read_bytes()
PIN_USER = next(user for user in DEMO_USERS if user.login_id == "852-11112222")
CUSTOMER_ID = PIN_USER.customer_id  # 2160220037535021: IDR, 10,000,000, limits 5,000,000 / 20,000,000
USER_ACCOUNT = Ledger.user_account_id(CUSTOMER_ID)
REFUND_WINDOW = timedelta(days=366)
AUTH_CLIENT_ID = "2188120040699147"  # the merchant's client, as in seed 004
AUTO_DEBIT = "AUTO_DEBIT"
TOKEN_LIFETIMES = TokenLifetimes(
    auth_code=timedelta(minutes=5), access_token=timedelta(days=30), refresh_token=timedelta(days=730)
)


def idr(value: int) -> Amount:
    return Amount(currency="IDR", value=value)


class SilentSms:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def send(self, to: str, text: str, reference: str) -> None:
        self.sent.append((to, text, reference))


@dataclass
class Wallet:
    """The wallet's activities on one database, driven the way the workflows drive them."""

    engine: Engine
    ledger: Ledger
    payments: PaymentActivities
    refunds: RefundActivities
    cancels: CancelActivities

    @classmethod
    def on(cls, engine: Engine, *, seed: bool = True) -> Wallet:
        ledger = Ledger(engine)
        users = UserStore(engine)
        if seed:
            users.seed_demo_users(ledger, SECRET_KEY)
        return cls(
            engine=engine,
            ledger=ledger,
            payments=PaymentActivities(
                engine=engine,
                ledger=ledger,
                users=users,
                secret_key=SECRET_KEY,
                sms=SilentSms(),
                otp_ttl=timedelta(minutes=5),
                credentials=Credentials(engine, SECRET_KEY),
                nfc_tokens=NfcTokens(engine),
            ),
            refunds=RefundActivities(engine=engine, ledger=ledger),
            cancels=CancelActivities(engine=engine, ledger=ledger),
        )

    # payments

    @staticmethod
    def order(payment_request_id: str, value: int) -> PayRequest:
        return easy_pay_order(payment_request_id, PIN_USER.login_id, idr(value), PSP_ID)

    def record(
        self,
        request: PayRequest,
        status: PaymentStatus,
        result_code: ResultCode | None = None,
        product: str = "EASY_PAY",
    ) -> PaymentStatus:
        return self.payments.record_payment(
            PaymentRecordUpdate(
                request=request,
                now=datetime.now(UTC),
                payment_id=payment_id_of(request.payment_request_id),
                product=product,
                status=status,
                customer_id=CUSTOMER_ID,
                result_code=result_code,
                payment_expiry_time=request.payment_expiry_time,
            )
        )

    @staticmethod
    def debit_request(request: PayRequest) -> DebitRequest:
        return DebitRequest(
            payment_request_id=request.payment_request_id,
            customer_id=CUSTOMER_ID,
            amount=request.pay_to_amount,
            paid_at=datetime.now(UTC),
        )

    def debit(self, request: PayRequest | DebitRequest) -> DebitResult:
        return self.payments.debit(request if isinstance(request, DebitRequest) else self.debit_request(request))

    def paid(self, payment_request_id: str, value: int) -> PayRequest:
        """A payment as the Easy Pay workflow makes it: recorded, verified, debited, recorded again."""
        request = self.order(payment_request_id, value)
        assert self.payments.check_account(request).result_code is ResultCode.SUCCESS
        assert self.record(request, PaymentStatus.PROCESSING) is PaymentStatus.PROCESSING
        assert self.verify_pin()
        debit = self.debit(request)
        assert debit.result_code is ResultCode.SUCCESS
        assert self.record(request, PaymentStatus.SUCCESS, ResultCode.SUCCESS) is PaymentStatus.SUCCESS
        return request

    def verify_pin(self) -> bool:
        return self.payments.check_code(
            CodeCheck(
                customer_id=CUSTOMER_ID,
                method=VerificationMethod.PIN,
                challenge_id=None,
                code_digest=keyed_digest(SECRET_KEY, "pin", CUSTOMER_ID, DEMO_PIN),
            )
        )

    # Auto Debit

    @property
    def agreements(self) -> Agreements:
        return Agreements(self.engine, SECRET_KEY, consent_page_url="http://testserver/agreements/consent")

    def bind_agreement(self, reference_agreement_id: str) -> tuple[str, str]:
        """An ACTIVE agreement of the PIN user's, as production binds it: prepare, the user's
        consent, applyToken with the authCode. Its id and access token."""
        prepared = self.agreements.prepare(
            PrepareRequest(
                psp_id=PSP_ID,
                acquirer_id=ACQUIRER_ID,
                auth_client_id=AUTH_CLIENT_ID,
                auth_client_name="Sandbox Subscriptions",
                reference_merchant_id=AUTH_CLIENT_ID,
                reference_agreement_id=reference_agreement_id,
                auth_redirect_url="https://merchant.example/bound",
                scopes=[Scope.AGREEMENT_PAY],
                auth_state="st",
            )
        )
        assert prepared.result.result_code == ResultCode.SUCCESS and prepared.auth_url, prepared
        agreement_id = prepared.auth_url.rsplit("/", 1)[-1]
        consented = self.agreements.consent(agreement_id, CUSTOMER_ID)
        assert isinstance(consented, Consented), consented
        applied = Authorizations(self.engine, SECRET_KEY, TOKEN_LIFETIMES).apply_token(
            apply_token_request(auth_code=consented.auth_code, psp_id=PSP_ID)
        )
        assert applied.result.result_code == ResultCode.SUCCESS and applied.access_token, applied
        assert applied.customer_id == CUSTOMER_ID
        return agreement_id, applied.access_token

    @staticmethod
    def auto_debit_order(payment_request_id: str, value: int, access_token: str) -> PayRequest:
        """Auto Debit's pay: the agreement's access token in ``paymentMethodId``, the payer named."""
        base = easy_pay_order(payment_request_id, PIN_USER.login_id, idr(value), PSP_ID)
        return base.model_copy(
            update={
                "payment_method": PaymentMethod(
                    payment_method_type=PAYMENT_METHOD_TYPE, payment_method_id=access_token, customer_id=CUSTOMER_ID
                ),
                "payment_factor": PaymentFactor(is_agreement_payment=True),
                "payment_redirect_url": None,
            }
        )

    def easy_pay_with_token(self, payment_request_id: str, value: int, access_token: str) -> PayRequest:
        """Easy Pay's pay #2 of a returning one-click user: an agreement token in ``paymentMethodId``."""
        request = self.order(payment_request_id, value)
        method = request.payment_method.model_copy(update={"payment_method_id": access_token})
        return request.model_copy(update={"payment_method": method})

    # refunds and cancels

    @staticmethod
    def refund_application(
        payment_request_id: str, refund_request_id: str, value: int, from_value: int | None = None
    ) -> RefundApplication:
        return RefundApplication(
            request=RefundRequest(
                acquirer_id=ACQUIRER_ID,
                psp_id=PSP_ID,
                payment_request_id=payment_request_id,
                payment_id=payment_id_of(payment_request_id),
                refund_request_id=refund_request_id,
                refund_amount=idr(value),
                refund_from_amount=None if from_value is None else idr(from_value),
            ),
            refund_id=f"mpp-{refund_request_id}",
            now=datetime.now(UTC),
            window=REFUND_WINDOW,
        )

    def refund(self, application: RefundApplication) -> RefundOutcome:
        return self.refunds.apply_refund(application)

    def cancel(self, payment_request_id: str) -> CancelOutcome:
        return self.cancels.cancel_payment(
            CancelApplication(payment_request_id=payment_request_id, now=datetime.now(UTC))
        )

    # what the database holds

    def balance(self) -> int:
        return self.ledger.balance(USER_ACCOUNT)

    def payment_record(self, payment_request_id: str) -> PaymentRecord | None:
        with Session(self.engine) as session:
            return session.get(PaymentRecord, payment_request_id)

    def payment_records(self) -> dict[str, PaymentRecord]:
        with Session(self.engine) as session:
            return {record.payment_request_id: record for record in session.exec(select(PaymentRecord)).all()}

    def postings(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(Posting)).scalar_one())

    def user_flows(self) -> dict[tuple[str, str], int]:
        """(reference, posting kind) -> net minor units into the PIN user's account."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(col(Posting.reference), col(Posting.kind), func.sum(col(Entry.amount)))
                .join(Entry, col(Entry.posting_id) == col(Posting.id))
                .where(col(Entry.account_id) == USER_ACCOUNT)
                .group_by(col(Posting.reference), col(Posting.kind))
            ).all()
        return {(reference, kind): int(total) for reference, kind, total in rows}

    def settlement_balance(self) -> int:
        with self.engine.connect() as connection:
            balance = connection.execute(
                select(col(Account.balance)).where(col(Account.id) == "settlement:alipayplus:IDR")
            ).scalar()
        return int(balance or 0)


def payment_id_of(payment_request_id: str) -> str:
    return f"mpp-{payment_request_id}"[:64]


# --- races on the real database ----------------------------------------------------------


def test_sixteen_concurrent_refunds_of_30_percent_return_exactly_90_percent(engine: Engine) -> None:
    wallet = Wallet.on(engine)
    start_balance = wallet.balance()
    for round_ in range(25):
        payment_request_id = f"race-refund-{round_}"
        wallet.paid(payment_request_id, 1000)
        assert wallet.balance() == start_balance - 1000

        def attempt(i: int, prid: str = payment_request_id) -> RefundOutcome:
            return wallet.refund(wallet.refund_application(prid, f"{prid}-r{i}", 300))

        outcomes = race(16, attempt)

        errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        assert errors == [], f"round {round_}: {errors!r}"
        codes = [outcome.result_code for outcome in outcomes if isinstance(outcome, RefundOutcome)]
        assert codes.count(ResultCode.SUCCESS) == 3, f"round {round_}: {codes}"
        assert codes.count(ResultCode.REFUND_AMOUNT_EXCEED) == 13, f"round {round_}: {codes}"
        credited = [
            o.credited for o in outcomes if isinstance(o, RefundOutcome) and o.result_code is ResultCode.SUCCESS
        ]
        assert credited == [idr(300)] * 3
        assert wallet.balance() == start_balance - 1000 + 900
        assert wallet.user_flows()[(payment_request_id, PostingKind.REFUND)] == 900
        record = wallet.payment_record(payment_request_id)
        assert record is not None
        assert (record.status, record.refunded_payment_value, record.refunded_pay_to_value) == (
            PaymentStatus.SUCCESS,
            900,
            900,
        )
        check = wallet.ledger.check()
        assert check.ok, check
        start_balance = wallet.balance()


def test_concurrent_refunds_and_cancels_return_the_debit_exactly_once(engine: Engine) -> None:
    wallet = Wallet.on(engine)
    for round_ in range(25):
        payment_request_id = f"race-mixed-{round_}"
        before = wallet.balance()
        wallet.paid(payment_request_id, 1000)

        def attempt(i: int, prid: str = payment_request_id) -> RefundOutcome | CancelOutcome:
            if i % 2 == 0:
                return wallet.refund(wallet.refund_application(prid, f"{prid}-r{i}", 300))
            return wallet.cancel(prid)

        outcomes = race(16, attempt)

        # Nothing raises: a twin cancel that read the refunded sum before a refund and lost
        # meets the winner's reversal under the same key, rereads, and answers SUCCESS.
        assert [o for o in outcomes if isinstance(o, Exception)] == [], f"round {round_}"
        refunds = [o for i, o in enumerate(outcomes) if i % 2 == 0]
        cancels = [o for i, o in enumerate(outcomes) if i % 2 == 1]
        assert all(isinstance(o, CancelOutcome) for o in cancels)
        answers = [(o.result_code, o.cancellation) for o in cancels if isinstance(o, CancelOutcome)]
        assert (ResultCode.SUCCESS, Cancellation.REVERSED) in answers
        # A twin that read the record before the winner closed it can label itself ALREADY_FINAL
        # (cancellation.py rereads, sees CLOSED, not SUCCESS); Alipay+ still hears SUCCESS.
        assert set(answers) <= {
            (ResultCode.SUCCESS, Cancellation.REVERSED),
            (ResultCode.SUCCESS, Cancellation.ALREADY_FINAL),
        }, answers
        refund_codes = [o.result_code for o in refunds if isinstance(o, RefundOutcome)]
        assert len(refund_codes) == 8
        assert set(refund_codes) <= {
            ResultCode.SUCCESS,
            ResultCode.REFUND_AMOUNT_EXCEED,
            ResultCode.ORDER_STATUS_INVALID,
        }, refund_codes
        successes = refund_codes.count(ResultCode.SUCCESS)
        assert successes <= 3

        flows = wallet.user_flows()
        assert flows[(payment_request_id, PostingKind.PAYMENT_DEBIT)] == -1000
        assert flows.get((payment_request_id, PostingKind.REFUND), 0) == 300 * successes
        assert flows[(payment_request_id, PostingKind.CANCEL_REVERSAL)] == 1000 - 300 * successes
        assert wallet.balance() == before, "the user's net over a cancelled payment is exactly zero"
        record = wallet.payment_record(payment_request_id)
        assert record is not None
        assert record.status is PaymentStatus.CLOSED and record.cancelled_at is not None
        assert (record.refunded_payment_value, record.refunded_pay_to_value) == (1000, 1000)
        check = wallet.ledger.check()
        assert check.ok, check


# --- a worker that dies between the refund's ledger commit and storing its answer ----------


def crash_after_posting(wallet: Wallet, application: RefundApplication) -> None:
    """The first attempt commits the refund's posting, then the worker dies before ``_store``."""
    refunds = wallet.refunds

    def die(*_: object) -> RefundOutcome:
        raise RuntimeError("worker died after the posting committed")

    refunds._store = die  # type: ignore[method-assign, assignment]
    try:
        with pytest.raises(RuntimeError, match="worker died"):
            refunds.apply_refund(application)
    finally:
        del refunds._store  # back to the class's method


def test_refund_retried_after_a_crash_after_its_posting_moves_no_more_money(engine: Engine) -> None:
    wallet = Wallet.on(engine)
    wallet.paid("crash-partial", 1000)
    before = wallet.balance()
    application = wallet.refund_application("crash-partial", "crash-partial-r1", 300)
    crash_after_posting(wallet, application)
    assert wallet.balance() == before + 300

    retried = wallet.refund(application)

    assert (retried.result_code, retried.refund_id) == (ResultCode.SUCCESS, application.refund_id)
    assert wallet.balance() == before + 300
    record = wallet.payment_record("crash-partial")
    assert record is not None and record.refunded_pay_to_value == 300
    assert wallet.ledger.check().ok


def test_full_refund_retried_after_a_crash_after_its_posting_answers_success(engine: Engine) -> None:
    wallet = Wallet.on(engine)
    wallet.paid("crash-full", 1000)
    before = wallet.balance()
    application = wallet.refund_application("crash-full", "crash-full-r1", 1000)
    crash_after_posting(wallet, application)
    assert wallet.balance() == before + 1000

    retried = wallet.refund(application)  # its answer committed with its posting

    assert (retried.result_code, retried.refund_id) == (ResultCode.SUCCESS, application.refund_id)
    assert wallet.balance() == before + 1000
    assert wallet.ledger.check().ok


# --- a stateful model -------------------------------------------------------------------


@dataclass
class ModelPayment:
    payment_request_id: str
    value: int  # paymentAmount == payToAmount (IDR); 0 for a tombstone
    state: str  # "open" | "paid" | "failed" | "tombstone"
    cancelled: bool = False
    debited: int = 0
    refunded_payment: int = 0  # sum of successful refundAmount
    refunded_pay_to: int = 0  # sum of what refunds credited
    reversed: int = 0  # what the cancel returned
    debit: DebitRequest | None = None  # the debit that succeeded, for late retries of it
    request: PayRequest | None = None  # as paid, if not the Easy Pay order ``Wallet.order`` makes (Auto Debit)


@dataclass
class ModelAgreement:
    agreement_id: str
    access_token: str
    live: bool = True


@dataclass
class ModelRefund:
    application: RefundApplication
    outcome: RefundOutcome
    credited: int


class ExampleDatabase:
    """A fresh migrated database, with the funded demo users, for each Hypothesis example.

    Migrated and seeded once, in a directory from ``tempfile``; each example starts from a
    copy of that file. The engine is kept across examples (disposed, so no connection
    survives the copy) because SQLAlchemy caches compiled statements per engine: a new
    engine per example made shrinking a failure several times slower.
    """

    _lock = threading.Lock()
    _shared: ExampleDatabase | None = None

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="mpp-money-"))
        self.template = self.directory / "template.sqlite"
        self.path = self.directory / "example.sqlite"
        template_url = f"sqlite:///{self.template}"
        migrate(template_url)
        engine = create_engine_for(template_url)
        try:
            UserStore(engine).seed_demo_users(Ledger(engine), SECRET_KEY)
        finally:
            engine.dispose()  # the last connection checkpoints the WAL into the file
        self.engine = create_engine_for(f"sqlite:///{self.path}")

    @classmethod
    def shared(cls) -> ExampleDatabase:
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def fresh(self) -> Engine:
        """The engine, on a new copy of the migrated, seeded database."""
        self.engine.dispose()
        for leftover in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(self.template, self.path)
        return self.engine

    def release(self) -> None:
        self.engine.dispose()


class PostgresExampleDatabase:
    """The same on PostgreSQL: a template database migrated and seeded once, and for each example a
    new database cloned from it (``CREATE DATABASE … TEMPLATE``), in the session's server."""

    server_url: ClassVar[str | None] = None  # set by the fixture below, from the session's server
    _shared: PostgresExampleDatabase | None = None

    def __init__(self, server_url: str) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.template_name, self.example_name = f"money_template_{suffix}", f"money_example_{suffix}"
        self.admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{self.template_name}"')
        template_url = make_url(server_url).set(database=self.template_name).render_as_string(hide_password=False)
        migrate(template_url)
        engine = create_engine_for(template_url)
        try:
            UserStore(engine).seed_demo_users(Ledger(engine), SECRET_KEY)
        finally:
            engine.dispose()  # a template must have no connections when it is cloned
        url = make_url(server_url).set(database=self.example_name).render_as_string(hide_password=False)
        self.engine = create_engine_for(url)

    @classmethod
    def shared(cls) -> PostgresExampleDatabase:
        if cls._shared is None:
            assert cls.server_url is not None, "the _postgres_examples fixture sets the server"
            cls._shared = cls(cls.server_url)
        return cls._shared

    def fresh(self) -> Engine:
        self.engine.dispose()
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.example_name}" WITH (FORCE)')
            connection.exec_driver_sql(f'CREATE DATABASE "{self.example_name}" TEMPLATE "{self.template_name}"')
        return self.engine

    def release(self) -> None:
        self.engine.dispose()

    @classmethod
    def remove(cls) -> None:
        if cls._shared is not None:
            shared, cls._shared = cls._shared, None
            shared.engine.dispose()
            with shared.admin.connect() as connection:
                for name in (shared.example_name, shared.template_name):
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            shared.admin.dispose()


@pytest.fixture(autouse=True)
def _postgres_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    """The PostgreSQL state machine's server: the session's (tests/postgres.py); removed afterwards."""
    if request.node.cls is not TestMoneyMachineOnPostgreSQL:
        yield
        return
    PostgresExampleDatabase.server_url = request.getfixturevalue("postgres")
    yield
    PostgresExampleDatabase.remove()


@pytest.fixture(autouse=True)
def _shrink_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis shrinks a failure for up to 300 s (its ``MAX_SHRINKING_SECONDS``, monkeypatchable
    by design); a shrinking state machine here runs ~2 examples a second, so cap it at 150 s to get
    its report (the shrunk steps) before this module's 300 s timeout kills the test instead."""
    monkeypatch.setattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", 150)


@pytest.fixture(scope="module", autouse=True)
def _remove_example_database() -> Iterator[None]:
    yield
    if ExampleDatabase._shared is not None:
        ExampleDatabase._shared.release()
        shutil.rmtree(ExampleDatabase._shared.directory, ignore_errors=True)
        ExampleDatabase._shared = None


# 1..2,000,000 minor units, often large enough that a few payments exhaust the balance
AMOUNTS = st.one_of(st.integers(1, 2_000_000), st.integers(1_500_000, 2_000_000))


def pick(items: list[T], choice: int) -> T:
    return items[choice % len(items)]


class MoneyMachine(RuleBasedStateMachine):
    examples: ClassVar[Callable[[], ExampleDatabase | PostgresExampleDatabase]] = ExampleDatabase.shared

    def __init__(self) -> None:
        super().__init__()
        self.database = type(self).examples()
        self.engine = self.database.fresh()
        self.wallet = Wallet.on(self.engine, seed=False)  # the copy holds the funded demo users
        self.balance = PIN_USER.balance
        self.debited_today = 0
        self.payments: dict[str, ModelPayment] = {}
        self.refunds: list[ModelRefund] = []
        self.agreements: list[ModelAgreement] = []
        self.ids = itertools.count()
        assert self.wallet.balance() == self.balance

    def teardown(self) -> None:
        self.database.release()

    # helpers

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def in_state(self, *states: str, cancelled: bool | None = None) -> list[ModelPayment]:
        return [
            payment
            for payment in self.payments.values()
            if payment.state in states and (cancelled is None or payment.cancelled == cancelled)
        ]

    def expected_debit(self, value: int) -> ResultCode:
        if value > PIN_USER.single_payment_limit:
            return ResultCode.PAYMENT_AMOUNT_EXCEED_LIMIT
        if self.debited_today + value > PIN_USER.daily_limit:
            return ResultCode.USER_AMOUNT_EXCEED_LIMIT
        if self.balance < value:
            return ResultCode.USER_BALANCE_NOT_ENOUGH
        return ResultCode.SUCCESS

    def expected_refund(
        self, payment: ModelPayment | None, value: int, from_value: int | None
    ) -> tuple[ResultCode, int]:
        if payment is None or payment.state == "tombstone":
            return ResultCode.ORDER_NOT_EXIST, 0
        if payment.state != "paid" or payment.cancelled:
            return ResultCode.ORDER_STATUS_INVALID, 0
        credit = (
            from_value
            if from_value is not None
            else credit_for(
                idr(value), payment.value, idr(payment.value), payment.refunded_payment, payment.refunded_pay_to
            )
        )
        if payment.refunded_payment + value > payment.value or payment.refunded_pay_to + credit > payment.value:
            return ResultCode.REFUND_AMOUNT_EXCEED, 0
        return ResultCode.SUCCESS, credit

    def expected_cancel(self, payment: ModelPayment | None) -> tuple[Cancellation, int]:
        if payment is None:
            return Cancellation.TOMBSTONE, 0
        if payment.cancelled:
            return (Cancellation.REVERSED if payment.state == "paid" else Cancellation.ALREADY_FINAL), 0
        if payment.state == "open":
            return Cancellation.CLOSED_UNPAID, 0
        if payment.state == "paid":
            return Cancellation.REVERSED, payment.value - payment.refunded_pay_to
        return Cancellation.ALREADY_FINAL, 0

    def request_of(self, payment: ModelPayment) -> PayRequest:
        return payment.request or self.wallet.order(payment.payment_request_id, payment.value or 1)

    def do_create(self, value: int) -> ModelPayment:
        payment = ModelPayment(self.new_id("pay"), value, "open")
        request = self.wallet.order(payment.payment_request_id, value)
        assert self.wallet.record(request, PaymentStatus.PROCESSING) is PaymentStatus.PROCESSING
        self.payments[payment.payment_request_id] = payment
        return payment

    def do_debit(self, payment: ModelPayment) -> None:
        request = self.wallet.order(payment.payment_request_id, payment.value)
        expected = self.expected_debit(payment.value)
        assert self.wallet.payments.check_account(request).result_code is expected
        assert self.wallet.verify_pin()
        debit = self.wallet.debit_request(request)
        result = self.wallet.debit(debit)
        assert result.result_code is expected, (result, expected)
        if expected is ResultCode.SUCCESS:
            assert result.payment_time == debit.paid_at
            payment.state, payment.debited, payment.debit = "paid", payment.value, debit
            self.balance -= payment.value
            self.debited_today += payment.value
            assert self.wallet.record(request, PaymentStatus.SUCCESS, ResultCode.SUCCESS) is PaymentStatus.SUCCESS
        else:
            payment.state = "failed"
            assert self.wallet.record(request, PaymentStatus.FAIL, expected) is PaymentStatus.FAIL

    def do_refund(self, payment_request_id: str, value: int, from_value: int | None) -> ModelRefund:
        payment = self.payments.get(payment_request_id)
        application = self.wallet.refund_application(payment_request_id, self.new_id("refund"), value, from_value)
        code, credit = self.expected_refund(payment, value, from_value)
        outcome = self.wallet.refund(application)
        assert outcome.result_code is code, (outcome, code, payment)
        if code is ResultCode.SUCCESS:
            assert payment is not None
            assert outcome.refund_id == application.refund_id
            assert outcome.credited == idr(credit)
            payment.refunded_payment += value
            payment.refunded_pay_to += credit
            self.balance += credit
        else:
            assert outcome.refund_id is None and outcome.credited is None
        refund = ModelRefund(application, outcome, credit)
        self.refunds.append(refund)
        return refund

    def do_cancel(self, payment_request_id: str) -> None:
        payment = self.payments.get(payment_request_id)
        cancellation, returned = self.expected_cancel(payment)
        outcome = self.wallet.cancel(payment_request_id)
        assert (outcome.result_code, outcome.cancellation) == (ResultCode.SUCCESS, cancellation), (outcome, payment)
        if payment is None:
            self.payments[payment_request_id] = ModelPayment(payment_request_id, 0, "tombstone", cancelled=True)
            return
        if not payment.cancelled:
            payment.cancelled = True
            payment.reversed = returned
            self.balance += returned

    def unmoved(self) -> Callable[[], None]:
        """Snapshot the money; the returned function asserts nothing moved since."""
        balance, postings, settlement = self.wallet.balance(), self.wallet.postings(), self.wallet.settlement_balance()

        def assert_unmoved() -> None:
            assert self.wallet.balance() == balance
            assert self.wallet.postings() == postings
            assert self.wallet.settlement_balance() == settlement

        return assert_unmoved

    # rules: payments

    @initialize(values=st.lists(AMOUNTS, min_size=2, max_size=8))
    def start_with_paid_payments(self, values: list[int]) -> None:
        for value in values:
            self.do_debit(self.do_create(value))

    @rule(value=AMOUNTS)
    def create_order(self, value: int) -> None:
        self.do_create(value)

    @precondition(lambda self: self.in_state("open", cancelled=False))
    @rule(choice=st.integers(0, 1_000))
    def verify_and_debit(self, choice: int) -> None:
        self.do_debit(pick(self.in_state("open", cancelled=False), choice))

    @precondition(lambda self: self.in_state("open", cancelled=True))
    @rule(choice=st.integers(0, 1_000))
    def debit_after_cancel_is_refused(self, choice: int) -> None:
        """The pay workflow's verification finishing after Alipay+ cancelled the order."""
        payment = pick(self.in_state("open", cancelled=True), choice)
        unmoved = self.unmoved()
        request = self.wallet.order(payment.payment_request_id, payment.value)
        expected = self.expected_debit(payment.value)
        result = self.wallet.debit(request)
        assert result.result_code is (ResultCode.ORDER_IS_CLOSED if expected is ResultCode.SUCCESS else expected)
        unmoved()

    # rules: refunds

    @precondition(lambda self: self.in_state("paid", cancelled=False))
    @rule(choice=st.integers(0, 1_000), permille=st.integers(1, 1_300))
    def refund(self, choice: int, permille: int) -> None:
        payment = pick(self.in_state("paid", cancelled=False), choice)
        self.do_refund(payment.payment_request_id, max(1, payment.value * permille // 1_000), None)

    @precondition(lambda self: self.in_state("paid", cancelled=False))
    @rule(choice=st.integers(0, 1_000), permille=st.integers(1, 1_300), from_permille=st.integers(0, 1_300))
    def refund_with_refund_from_amount(self, choice: int, permille: int, from_permille: int) -> None:
        payment = pick(self.in_state("paid", cancelled=False), choice)
        value = max(1, payment.value * permille // 1_000)
        self.do_refund(payment.payment_request_id, value, payment.value * from_permille // 1_000)

    @rule(choice=st.integers(0, 1_000), value=st.integers(1, 2_000_000))
    def refund_unpaid_cancelled_or_unknown_payment(self, choice: int, value: int) -> None:
        """Open, failed, cancelled, tombstoned or never seen: refused, and nothing moves."""
        candidates = [p.payment_request_id for p in self.payments.values() if p.state != "paid" or p.cancelled]
        payment_request_id = pick([*candidates, self.new_id("ghost")], choice)
        unmoved = self.unmoved()
        refund = self.do_refund(payment_request_id, value, None)
        assert refund.outcome.result_code in (ResultCode.ORDER_NOT_EXIST, ResultCode.ORDER_STATUS_INVALID)
        unmoved()

    @precondition(lambda self: self.refunds)
    @rule(choice=st.integers(0, 1_000))
    def repeat_refund_request(self, choice: int) -> None:
        earlier = pick(self.refunds, choice)
        unmoved = self.unmoved()
        application = earlier.application.model_copy(update={"now": datetime.now(UTC)})
        again = self.wallet.refund(application)
        assert again.result_code is earlier.outcome.result_code
        assert again.refund_id == earlier.outcome.refund_id
        assert again.refund_time == earlier.outcome.refund_time
        unmoved()

    # rules: cancels

    @precondition(lambda self: self.in_state("open", "paid", "failed", cancelled=False))
    @rule(choice=st.integers(0, 1_000))
    def cancel(self, choice: int) -> None:
        self.do_cancel(pick(self.in_state("open", "paid", "failed", cancelled=False), choice).payment_request_id)

    @precondition(lambda self: len(self.in_state("tombstone")) < 3)
    @rule()
    def cancel_unknown_payment(self) -> None:
        unmoved = self.unmoved()
        self.do_cancel(self.new_id("ghost"))
        unmoved()

    @precondition(lambda self: self.in_state("open", "failed", "tombstone", cancelled=True))
    @rule(choice=st.integers(0, 1_000), value=st.integers(1, 2_000_000))
    def late_order_for_cancelled_payment(self, choice: int, value: int) -> None:
        """Alipay+ cancelled first (or the order was closed unpaid); the pay arrives afterwards."""
        payment = pick(self.in_state("open", "failed", "tombstone", cancelled=True), choice)
        value = max(1, min(value, self.balance, PIN_USER.daily_limit - self.debited_today))
        unmoved = self.unmoved()
        request = self.wallet.order(payment.payment_request_id, value)
        assert self.wallet.record(request, PaymentStatus.PROCESSING) is PaymentStatus.CLOSED
        expected = self.expected_debit(value)
        result = self.wallet.debit(request)
        assert result.result_code is (ResultCode.ORDER_IS_CLOSED if expected is ResultCode.SUCCESS else expected)
        assert self.wallet.record(request, PaymentStatus.SUCCESS, ResultCode.SUCCESS) is PaymentStatus.CLOSED
        record = self.wallet.payment_record(payment.payment_request_id)
        assert record is not None and record.status is PaymentStatus.CLOSED and record.cancelled_at is not None
        unmoved()

    # rules: Auto Debit

    @precondition(lambda self: len(self.agreements) < 3)
    @rule()
    def bind_agreement(self) -> None:
        """prepare, consent, applyToken: no money moves."""
        unmoved = self.unmoved()
        agreement_id, access_token = self.wallet.bind_agreement(self.new_id("agr"))
        self.agreements.append(ModelAgreement(agreement_id, access_token))
        unmoved()

    @precondition(lambda self: self.agreements)
    @rule(choice=st.integers(0, 1_000), value=AMOUNTS)
    def pay_with_agreement_token(self, choice: int, value: int) -> None:
        """An Auto Debit as its workflow runs it: the token checked, recorded, debited at once, final.
        A revoked token's payment is refused INVALID_TOKEN and moves nothing."""
        agreement = pick(self.agreements, choice)
        payment = ModelPayment(self.new_id("ad"), value, "open")
        request = self.wallet.auto_debit_order(payment.payment_request_id, value, agreement.access_token)
        payment.request = request
        expected = self.expected_debit(value) if agreement.live else ResultCode.INVALID_TOKEN
        unmoved = self.unmoved()
        assert self.wallet.payments.check_agreement_account(request).result_code is expected, (expected, agreement)
        self.payments[payment.payment_request_id] = payment
        if expected is not ResultCode.SUCCESS:  # refused at the check: no debit is attempted
            payment.state = "failed"
            assert self.wallet.record(request, PaymentStatus.FAIL, expected, AUTO_DEBIT) is PaymentStatus.FAIL
            unmoved()
            return
        assert self.wallet.record(request, PaymentStatus.PROCESSING, product=AUTO_DEBIT) is PaymentStatus.PROCESSING
        debit = self.wallet.debit_request(request)
        result = self.wallet.debit(debit)
        assert result.result_code is ResultCode.SUCCESS, result
        payment.state, payment.debited, payment.debit = "paid", value, debit
        self.balance -= value
        self.debited_today += value
        assert (
            self.wallet.record(request, PaymentStatus.SUCCESS, ResultCode.SUCCESS, AUTO_DEBIT) is PaymentStatus.SUCCESS
        )

    @precondition(lambda self: any(agreement.live for agreement in self.agreements))
    @rule(choice=st.integers(0, 1_000), by_merchant=st.booleans())
    def revoke_agreement(self, choice: int, by_merchant: bool) -> None:
        """cancelToken from Alipay+, or the user unbinding in the app: after it, neither an Auto Debit
        nor an Easy Pay order with the token gets past the check, and no money moves."""
        agreement = pick([agreement for agreement in self.agreements if agreement.live], choice)
        unmoved = self.unmoved()
        cancel = CancelTokenRequest(psp_id=PSP_ID, acquirer_id=ACQUIRER_ID, access_token=agreement.access_token)
        for attempt in range(2):  # a repeat changes nothing
            if by_merchant:
                assert self.wallet.agreements.cancel_token(cancel).result.result_code == ResultCode.SUCCESS
            else:
                revoked = self.wallet.agreements.revoke(agreement.agreement_id, CancelledBy.USER)
                assert revoked.changed is (attempt == 0)
        agreement.live = False
        probe = self.wallet.auto_debit_order(self.new_id("probe"), 1, agreement.access_token)
        assert self.wallet.payments.check_agreement_account(probe).result_code is ResultCode.INVALID_TOKEN
        easy_pay = self.wallet.easy_pay_with_token(self.new_id("probe"), 1, agreement.access_token)
        assert self.wallet.payments.check_account(easy_pay).result_code is ResultCode.INVALID_TOKEN
        unmoved()

    # rules: an activity retried after a crash that followed its commit

    @precondition(lambda self: self.payments)
    @rule(choice=st.integers(0, 1_000))
    def retry_record_payment(self, choice: int) -> None:
        payment = pick(sorted(self.payments.values(), key=lambda p: p.payment_request_id), choice)
        status = {"open": PaymentStatus.PROCESSING, "paid": PaymentStatus.SUCCESS, "failed": PaymentStatus.FAIL}.get(
            payment.state, PaymentStatus.PROCESSING
        )
        request = self.request_of(payment)
        unmoved = self.unmoved()
        expected = PaymentStatus.CLOSED if payment.cancelled else status
        assert self.wallet.record(request, status) is expected
        assert self.wallet.record(request, status) is expected
        unmoved()

    @precondition(lambda self: self.in_state("open", cancelled=False))
    @rule(choice=st.integers(0, 1_000))
    def retry_debit(self, choice: int) -> None:
        payment = pick(self.in_state("open", cancelled=False), choice)
        request = self.wallet.order(payment.payment_request_id, payment.value)
        expected = self.expected_debit(payment.value)
        debit = self.wallet.debit_request(request)
        first = self.wallet.debit(debit)
        assert first.result_code is expected
        unmoved = self.unmoved()
        second = self.wallet.debit(debit)
        unmoved()
        assert second.result_code is expected
        assert second.payment_time == first.payment_time
        if expected is ResultCode.SUCCESS:
            payment.state, payment.debited, payment.debit = "paid", payment.value, debit
            self.balance -= payment.value
            self.debited_today += payment.value
            assert self.wallet.record(request, PaymentStatus.SUCCESS, ResultCode.SUCCESS) is PaymentStatus.SUCCESS
        else:
            payment.state = "failed"
            assert self.wallet.record(request, PaymentStatus.FAIL, expected) is PaymentStatus.FAIL

    @precondition(lambda self: self.in_state("paid"))
    @rule(choice=st.integers(0, 1_000))
    def retry_debit_late(self, choice: int) -> None:
        """The debit's activity retried after a crash, once refunds or a cancel followed it."""
        payment = pick(self.in_state("paid"), choice)
        assert payment.debit is not None
        unmoved = self.unmoved()
        again = self.wallet.debit(payment.debit)
        unmoved()
        # the posting is replayed by its key: the answer of the first attempt, nothing moves
        assert (again.result_code, again.payment_time) == (ResultCode.SUCCESS, payment.debit.paid_at)

    @precondition(lambda self: self.in_state("paid"))
    @rule(choice=st.integers(0, 1_000), permille=st.integers(1, 1_300), with_from=st.booleans())
    def retry_refund(self, choice: int, permille: int, with_from: bool) -> None:
        payment = pick(self.in_state("paid"), choice)
        value = max(1, payment.value * permille // 1_000)
        first = self.do_refund(payment.payment_request_id, value, value if with_from else None)
        unmoved = self.unmoved()
        second = self.wallet.refund(first.application)
        unmoved()
        assert (second.result_code, second.refund_id, second.refund_time) == (
            first.outcome.result_code,
            first.outcome.refund_id,
            first.outcome.refund_time,
        )

    @precondition(lambda self: self.in_state("paid", cancelled=False))
    @rule(choice=st.integers(0, 1_000), permille=st.integers(1, 1_300), with_from=st.booleans())
    def retry_refund_after_crash_after_commit(self, choice: int, permille: int, with_from: bool) -> None:
        """The worker dies once the refund's transaction committed, before the activity returns."""
        payment = pick(self.in_state("paid", cancelled=False), choice)
        value = max(1, payment.value * permille // 1_000)
        from_value = value if with_from else None
        refund_request_id = self.new_id("refund")
        application = self.wallet.refund_application(payment.payment_request_id, refund_request_id, value, from_value)
        code, credit = self.expected_refund(payment, value, from_value)
        crash_after_posting(self.wallet, application)
        if code is ResultCode.SUCCESS:
            payment.refunded_payment += value
            payment.refunded_pay_to += credit
            self.balance += credit
        assert self.wallet.balance() == self.balance
        unmoved = self.unmoved()
        retried = self.wallet.refund(application)
        unmoved()
        assert retried.result_code is code, (retried, code, payment)
        if code is ResultCode.SUCCESS:
            assert (retried.refund_id, retried.refund_time) == (application.refund_id, application.now)
        self.refunds.append(ModelRefund(application, retried, credit))

    @precondition(lambda self: self.payments)
    @rule(choice=st.integers(0, 1_000))
    def retry_cancel(self, choice: int) -> None:
        payment_request_id = pick(sorted(self.payments), choice)
        self.do_cancel(payment_request_id)
        unmoved = self.unmoved()
        second = self.wallet.cancel(payment_request_id)
        unmoved()
        assert second.result_code is ResultCode.SUCCESS
        assert second.cancellation in (Cancellation.REVERSED, Cancellation.ALREADY_FINAL)

    # after every step

    @invariant()
    def ledger_is_sound(self) -> None:
        check = self.wallet.ledger.check()
        assert check.ok, check

    @invariant()
    def money_matches_the_model(self) -> None:
        assert self.wallet.balance() == self.balance
        flows = self.wallet.user_flows()
        total_debited = sum(p.debited for p in self.payments.values())
        total_returned = sum(p.refunded_pay_to + p.reversed for p in self.payments.values())
        assert self.wallet.settlement_balance() == total_debited - total_returned
        for payment in self.payments.values():
            reference = payment.payment_request_id
            assert payment.refunded_pay_to + payment.reversed <= payment.debited, payment
            assert -flows.get((reference, PostingKind.PAYMENT_DEBIT), 0) == payment.debited, payment
            assert flows.get((reference, PostingKind.REFUND), 0) == payment.refunded_pay_to, payment
            assert flows.get((reference, PostingKind.CANCEL_REVERSAL), 0) == payment.reversed, payment

    @invariant()
    def records_match_the_model(self) -> None:
        records = self.wallet.payment_records()
        for payment in self.payments.values():
            record = records.get(payment.payment_request_id)
            assert record is not None
            assert (record.cancelled_at is not None) == payment.cancelled
            if payment.state == "tombstone":
                assert record.pay_to_amount_value is None and record.status is PaymentStatus.CLOSED
                continue
            assert record.pay_to_amount_value == payment.value
            assert record.refunded_pay_to_value <= record.pay_to_amount_value
            assert record.refunded_payment_value <= (record.payment_amount_value or 0)
            if payment.cancelled and payment.state == "paid":
                assert (record.refunded_payment_value, record.refunded_pay_to_value) == (payment.value, payment.value)
            else:
                assert (record.refunded_payment_value, record.refunded_pay_to_value) == (
                    payment.refunded_payment,
                    payment.refunded_pay_to,
                )
            expected_status = {
                "open": PaymentStatus.PROCESSING,
                "paid": PaymentStatus.SUCCESS,
                "failed": PaymentStatus.FAIL,
            }[payment.state]
            assert record.status is (PaymentStatus.CLOSED if payment.cancelled else expected_status)


class MoneyMachineOnPostgreSQL(MoneyMachine):
    """The same rules and invariants, on PostgreSQL."""

    examples = PostgresExampleDatabase.shared


MoneyMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
MoneyMachineOnPostgreSQL.TestCase.settings = MoneyMachine.TestCase.settings
TestMoneyMachine = MoneyMachine.TestCase
TestMoneyMachineOnPostgreSQL = MoneyMachineOnPostgreSQL.TestCase
