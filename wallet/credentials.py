"""Guessing what a person types (PINs, OTPs): counted per account and per client address, in the database.

One counter row per subject, ``customer:{id}`` or ``address:{ip}`` (IPv6 by its /64), shared by every
API process and worker: the app's login, Easy Pay's page and the NFC step-up all count on it.

- The first ``free_failures`` wrong answers in a row cost nothing; each further one makes the subject
  wait ``backoff``, doubled per failure up to ``backoff_max``, before any answer is checked again.
- ``lockout_after`` failures lock the subject for ``lockout_for``; each lockout leaves an audit row
  (``credential_lockout``), and ``mpp unlock`` lifts an account's lock early.
- A right answer resets an account's counter. An address's counter is only forgotten ``forget_after``
  its last failure: otherwise an attacker would reset it by signing in to an account of their own.
- While a subject waits or is locked, nothing is compared: the caller learns only when to try again,
  so a right PIN guessed meanwhile is not revealed.
- A wrong answer is counted once per attempt key (a row under a unique key), so an activity retried
  after a crash never counts it twice and answers what the first run answered.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col
from sqlmodel import select as select_models

from .records import CredentialCounter, CredentialFailure, CredentialLockout, OtpChallenge, WalletUser
from .secrets import PIN_SCRYPT_COST, keyed_digest, pin_verifier, pin_verifier_matches, pin_verifier_outdated
from .telemetry.metrics import CREDENTIAL_EVENTS

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class GuessPolicy(BaseModel):
    """How many wrong answers a subject gets, and what the next ones cost (settings take it as JSON)."""

    free_failures: int = Field(ge=0)
    backoff: timedelta = Field(gt=timedelta(0))
    backoff_max: timedelta = Field(gt=timedelta(0))
    lockout_after: int = Field(ge=1)
    lockout_for: timedelta = Field(gt=timedelta(0))
    forget_after: timedelta = Field(gt=timedelta(0))  # a counter with no failure for this long starts again

    def wait_after(self, failures: int) -> timedelta:
        """How long the subject waits after its ``failures``-th wrong answer in a row (before a lockout)."""
        extra = failures - self.free_failures
        if extra <= 0:
            return timedelta(0)
        return min(self.backoff * 2 ** min(extra - 1, 30), self.backoff_max)


# Accounts: 5 free (Easy Pay's 3 a payment, plus a slip), then 30 s, 1, 2, 4 min; the 10th locks for a day.
ACCOUNT_POLICY = GuessPolicy(
    free_failures=5,
    backoff=timedelta(seconds=30),
    backoff_max=timedelta(minutes=15),
    lockout_after=10,
    lockout_for=timedelta(hours=24),
    forget_after=timedelta(hours=24),
)
# Addresses: many users may share one (a carrier's NAT), so a wider margin and a shorter lock.
ADDRESS_POLICY = GuessPolicy(
    free_failures=20,
    backoff=timedelta(seconds=5),
    backoff_max=timedelta(minutes=5),
    lockout_after=100,
    lockout_for=timedelta(hours=1),
    forget_after=timedelta(hours=1),
)


class Secret(StrEnum):
    """What was typed, as the metrics name it (``CREDENTIAL_EVENTS``' ``secret`` label)."""

    LOGIN = "login"  # the app's sign-in PIN
    PIN = "pin"  # a payment's PIN
    OTP = "otp"  # an SMS code
    CODE = "code"  # a PIN or OTP typed on a page, counted against its client address too
    ANY = "any"  # an operator's unlock forgets the counter, whatever was typed


class CredentialEvent(StrEnum):
    """What happened to a counter (``CREDENTIAL_EVENTS``' ``event`` label). An account's and an
    address's backoffs and lockouts are told apart: a carrier's NAT is not an attack on one user."""

    WRONG = "wrong"  # a wrong answer counted (once per attempt, however many subjects count it)
    REFUSED = "refused"  # an answer not checked: its subject waits or is locked
    BACKOFF = "backoff"  # a wrong answer made the account wait before its next one
    LOCKOUT = "lockout"  # a wrong answer locked the account
    ADDRESS_BACKOFF = "address_backoff"
    ADDRESS_LOCKOUT = "address_lockout"
    UNLOCK = "unlock"  # an operator lifted an account's lock or backoff early
    ADDRESS_UNLOCK = "address_unlock"


def _count(secret: Secret, event: CredentialEvent) -> None:
    CREDENTIAL_EVENTS.labels(secret=secret.value, event=event.value).inc()


class Verdict(StrEnum):
    RIGHT = "RIGHT"
    WRONG = "WRONG"
    WAIT = "WAIT"  # not checked: too many wrong answers lately; try again after ``wait``
    LOCKED = "LOCKED"  # not checked, or this wrong answer locked the account


class Attempt(BaseModel):
    """The answer to one typed PIN or OTP."""

    verdict: Verdict
    wait: timedelta = timedelta(0)  # before the next answer is checked (WRONG past the free ones, WAIT, LOCKED)
    customer_id: str | None = None  # whose secret was right (a login names only its loginId)

    @property
    def retry_after_seconds(self) -> int:
        """``wait`` rounded up to whole seconds, for a ``Retry-After`` header or a page."""
        return max(int(-(-self.wait.total_seconds() // 1)), 1)


def customer_subject(customer_id: str) -> str:
    return f"customer:{customer_id}"


def address_subject(host: str | None) -> str | None:
    """The counter a client address shares: the IP itself, or an IPv6 address's /64 (one subscriber)."""
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"address:{host[:64]}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"address:{ip.ipv4_mapped}"
        return f"address:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"address:{ip}"


@dataclass(frozen=True)
class _Subject:
    name: str
    policy: GuessPolicy
    is_account: bool


class Credentials:
    """Checks typed PINs and OTPs under the guessing limits; the only place that compares them."""

    def __init__(
        self,
        engine: Engine,
        secret_key: bytes,
        account_policy: GuessPolicy = ACCOUNT_POLICY,
        address_policy: GuessPolicy = ADDRESS_POLICY,
        pin_cost: int = PIN_SCRYPT_COST,
        clock: Clock = _utc_now,
    ) -> None:
        self._engine, self._secret_key, self._clock = engine, secret_key, clock
        self._account_policy, self._address_policy, self._pin_cost = account_policy, address_policy, pin_cost

    # --- what callers check ---------------------------------------------------------------

    def login(self, login_id: str, pin: str, address: str | None) -> Attempt:
        """The app's sign-in: RIGHT names the customer. An unknown login is WRONG after the same work,
        counted against the address only."""
        with Session(self._engine) as session:
            user = session.exec(select_models(WalletUser).where(col(WalletUser.login_id) == login_id)).first()
        if user is None:
            return self._attempt(
                self._subjects(None, address),
                lambda: pin_verifier_matches(_no_user_pin(self._pin_cost), self.pin_digest("", pin)) and False,
                secrets.token_hex(16),
                "login",
                Secret.LOGIN,
            )
        digest = self.pin_digest(user.customer_id, pin)
        return self._check_pin(user.customer_id, digest, secrets.token_hex(16), "login", address, Secret.LOGIN)

    def check_pin(
        self, customer_id: str, pin_digest: str, attempt_key: str, channel: str, address: str | None = None
    ) -> Attempt:
        """A PIN typed for ``customer_id``, as its ``pin_digest`` (what pages and workflows carry)."""
        return self._check_pin(customer_id, pin_digest, attempt_key, channel, address, Secret.PIN)

    def check_otp(
        self, customer_id: str, challenge_id: str | None, code_digest: str, attempt_key: str, channel: str
    ) -> Attempt:
        """An SMS code typed for the live challenge ``challenge_id`` (an expired or unknown one is wrong)."""

        def right() -> bool:
            with Session(self._engine) as session:
                challenge = session.get(OtpChallenge, challenge_id) if challenge_id else None
            return (
                challenge is not None
                and challenge.customer_id == customer_id
                and challenge.expires_at > self._clock()
                and hmac.compare_digest(challenge.code_digest, code_digest)
            )

        return self._attempt(self._subjects(customer_id, None), right, attempt_key, channel, Secret.OTP)

    def address_wait(self, address: str | None) -> Attempt | None:
        """WAIT while the address may not try (pages check it before asking a workflow), else None."""
        subjects = self._subjects(None, address)
        with self._engine.connect() as connection:
            return _blocked(connection, subjects, self._clock())

    def count_address_failure(self, address: str | None, attempt_key: str, channel: str) -> None:
        """A wrong answer a workflow counted against the account, counted against the address too
        (in the metrics, only the address's backoff or lockout: the wrong answer is counted already)."""
        self._attempt(self._subjects(None, address), lambda: False, attempt_key, channel, Secret.CODE)

    # --- PINs -----------------------------------------------------------------------------

    def pin_digest(self, customer_id: str, pin: str) -> str:
        """The keyed digest of a typed PIN: what leaves the API, never the PIN itself."""
        return keyed_digest(self._secret_key, "pin", customer_id, pin)

    def new_pin_verifier(self, customer_id: str, pin: str) -> str:
        """What ``wallet_user.pin_digest`` stores for ``pin``."""
        return pin_verifier(self.pin_digest(customer_id, pin), self._pin_cost)

    # --- operators --------------------------------------------------------------------------

    def unlock(self, customer_id: str, by: str) -> bool:
        """Lift an account's lockout and backoff early (audited); False if it had no failures to forget."""
        lifted = self._lift(customer_subject(customer_id), by)
        if lifted:
            _count(Secret.ANY, CredentialEvent.UNLOCK)
        return lifted

    def unlock_address(self, address: str, by: str) -> bool:
        """The same for a client address (e.g. an office's NAT after a user's forgotten PIN)."""
        subject = address_subject(address)
        lifted = subject is not None and self._lift(subject, by)
        if lifted:
            _count(Secret.ANY, CredentialEvent.ADDRESS_UNLOCK)
        return lifted

    def _lift(self, subject: str, by: str) -> bool:
        now = self._clock()
        with self._engine.begin() as connection:
            lifted = connection.execute(
                update(CredentialCounter)
                .where(col(CredentialCounter.subject) == subject, col(CredentialCounter.failures) > 0)
                .values(failures=0, blocked_until=None, locked_until=None)
            ).rowcount
            connection.execute(
                update(CredentialLockout)
                .where(
                    col(CredentialLockout.subject) == subject,
                    col(CredentialLockout.lifted_at).is_(None),
                    col(CredentialLockout.locked_until) > now,
                )
                .values(lifted_at=now, lifted_by=by[:64])
            )
        return lifted == 1

    # --- the one way every answer is checked ----------------------------------------------

    def _check_pin(
        self, customer_id: str, digest: str, attempt_key: str, channel: str, address: str | None, secret: Secret
    ) -> Attempt:
        stored: list[str | None] = []

        def right() -> bool:
            with Session(self._engine) as session:
                user = session.get(WalletUser, customer_id)
            stored.append(user.pin_digest if user else None)
            return pin_verifier_matches(stored[0], digest)

        attempt = self._attempt(self._subjects(customer_id, address), right, attempt_key, channel, secret)
        if attempt.verdict is not Verdict.RIGHT:
            return attempt
        if stored and stored[0] and pin_verifier_outdated(stored[0], self._pin_cost):
            self._upgrade_pin(customer_id, stored[0], digest)
        return attempt.model_copy(update={"customer_id": customer_id})

    def _upgrade_pin(self, customer_id: str, old: str, digest: str) -> None:
        """Rewrite an older stored form as a scrypt verifier, unless the PIN changed meanwhile."""
        with self._engine.begin() as connection:
            connection.execute(
                update(WalletUser)
                .where(col(WalletUser.customer_id) == customer_id, col(WalletUser.pin_digest) == old)
                .values(pin_digest=pin_verifier(digest, self._pin_cost))
            )

    def _subjects(self, customer_id: str | None, address: str | None) -> list[_Subject]:
        subjects = []
        if customer_id is not None:
            subjects.append(_Subject(customer_subject(customer_id), self._account_policy, is_account=True))
        address_name = address_subject(address)
        if address_name is not None:
            subjects.append(_Subject(address_name, self._address_policy, is_account=False))
        return subjects

    def _attempt(
        self, subjects: Sequence[_Subject], right: Callable[[], bool], attempt_key: str, channel: str, secret: Secret
    ) -> Attempt:
        """The answer to one attempt; its events reach the metrics once it is committed (a retry of
        the same ``attempt_key`` answers what its first run answered and counts nothing again)."""
        now = self._clock()
        answered = secret is not Secret.CODE  # CODE: the address's count of an answer already counted
        with self._engine.connect() as connection:  # a retry answers what its first run answered
            earlier = _recorded(connection, attempt_key)
            blocked = None if earlier else _blocked(connection, subjects, now)
        if earlier is not None:
            return earlier
        if blocked is not None:
            if answered:
                _count(secret, CredentialEvent.REFUSED)
            return blocked
        is_right = right()  # the slow comparison (scrypt), outside any transaction
        events: list[CredentialEvent] = []
        with self._engine.begin() as connection:
            _lock_counters(connection, subjects)
            earlier = _recorded(connection, attempt_key)
            if earlier is not None:
                return earlier
            blocked = _blocked(connection, subjects, now)  # a concurrent guess got in first
            if blocked is not None:
                answer = blocked
                events += [CredentialEvent.REFUSED] if answered else []
            elif is_right:
                _reset_accounts(connection, subjects)
                answer = Attempt(verdict=Verdict.RIGHT)
            else:
                events += [CredentialEvent.WRONG] if answered else []
                answer = _count_failure(connection, subjects, attempt_key, channel, now, events)
        for event in events:
            _count(secret, event)
        return answer


@cache
def _no_user_pin(cost: int) -> str:
    """Compared for an unknown login, so that it takes as long as a known one."""
    return pin_verifier("no such user", cost)


def _recorded(connection: Connection, attempt_key: str) -> Attempt | None:
    verdicts = connection.execute(
        select(col(CredentialFailure.verdict)).where(col(CredentialFailure.attempt_key) == attempt_key)
    ).scalars()
    found = [Verdict(verdict) for verdict in verdicts]
    if not found:
        return None
    return Attempt(verdict=Verdict.LOCKED if Verdict.LOCKED in found else Verdict.WRONG)


def _blocked(connection: Connection, subjects: Sequence[_Subject], now: datetime) -> Attempt | None:
    """LOCKED if the account is locked, WAIT if any subject is waiting or locked, else None."""
    if not subjects:
        return None
    counters = {
        row.subject: row
        for row in connection.execute(
            select(CredentialCounter).where(col(CredentialCounter.subject).in_([s.name for s in subjects]))
        )
    }
    answer: Attempt | None = None
    for subject in subjects:
        counter = counters.get(subject.name)
        if counter is None:
            continue
        if counter.locked_until is not None and counter.locked_until > now:
            verdict = Verdict.LOCKED if subject.is_account else Verdict.WAIT
            found = Attempt(verdict=verdict, wait=counter.locked_until - now)
        elif counter.blocked_until is not None and counter.blocked_until > now:
            found = Attempt(verdict=Verdict.WAIT, wait=counter.blocked_until - now)
        else:
            continue
        if (
            answer is None
            or found.verdict is Verdict.LOCKED
            or (answer.verdict is not Verdict.LOCKED and found.wait > answer.wait)
        ):
            answer = found
    return answer


def _lock_counters(connection: Connection, subjects: Sequence[_Subject]) -> None:
    """Make sure each counter row exists, then hold it until the transaction ends (SQLite's
    BEGIN IMMEDIATE already serialises writers; PostgreSQL needs the row lock)."""
    names = sorted(subject.name for subject in subjects)
    if not names:
        return
    rows = [{"subject": name, "failures": 0} for name in names]
    if connection.dialect.name == "postgresql":
        connection.execute(postgresql.insert(CredentialCounter).values(rows).on_conflict_do_nothing())
        connection.execute(
            select(col(CredentialCounter.subject)).where(col(CredentialCounter.subject).in_(names)).with_for_update()
        )
    else:
        connection.execute(sqlite.insert(CredentialCounter).values(rows).on_conflict_do_nothing())


def _reset_accounts(connection: Connection, subjects: Sequence[_Subject]) -> None:
    accounts = [subject.name for subject in subjects if subject.is_account]
    if accounts:
        connection.execute(
            update(CredentialCounter)
            .where(col(CredentialCounter.subject).in_(accounts), col(CredentialCounter.failures) > 0)
            .values(failures=0, blocked_until=None)
        )


def _count_failure(
    connection: Connection,
    subjects: Sequence[_Subject],
    attempt_key: str,
    channel: str,
    now: datetime,
    events: list[CredentialEvent],
) -> Attempt:
    """Count a wrong answer against every subject; ``events`` gains each backoff and lockout it caused."""
    answer = Attempt(verdict=Verdict.WRONG)
    for subject in subjects:
        counter = connection.execute(
            select(CredentialCounter).where(col(CredentialCounter.subject) == subject.name)
        ).one()
        policy = subject.policy
        forgotten = counter.last_failure_at is None or now - counter.last_failure_at > policy.forget_after
        failures = 1 if forgotten else counter.failures + 1
        changes: dict[str, object] = {"failures": failures, "last_failure_at": now}
        verdict = Verdict.WRONG
        if failures >= policy.lockout_after:
            locked_until = now + policy.lockout_for
            changes.update(locked_until=locked_until, blocked_until=None)
            connection.execute(
                insert(CredentialLockout).values(
                    subject=subject.name, channel=channel, failures=failures, locked_at=now, locked_until=locked_until
                )
            )
            verdict = Verdict.LOCKED if subject.is_account else Verdict.WRONG
            wait = policy.lockout_for
            events.append(CredentialEvent.LOCKOUT if subject.is_account else CredentialEvent.ADDRESS_LOCKOUT)
        else:
            wait = policy.wait_after(failures)
            changes["blocked_until"] = now + wait if wait else None
            if wait:
                events.append(CredentialEvent.BACKOFF if subject.is_account else CredentialEvent.ADDRESS_BACKOFF)
        connection.execute(
            update(CredentialCounter).where(col(CredentialCounter.subject) == subject.name).values(**changes)
        )
        connection.execute(
            insert(CredentialFailure).values(
                attempt_key=attempt_key, subject=subject.name, channel=channel, verdict=verdict.value, at=now
            )
        )
        if verdict is Verdict.LOCKED:
            answer = Attempt(verdict=Verdict.LOCKED, wait=wait)
        elif answer.verdict is not Verdict.LOCKED and wait > answer.wait:
            answer = Attempt(verdict=Verdict.WRONG, wait=wait)
    return answer
