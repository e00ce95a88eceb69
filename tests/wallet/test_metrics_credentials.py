"""Issue 17: guessing PINs and OTPs shows in ``mpp_credential_events`` (wrong answers, answers refused
while a subject waits, backoffs, lockouts and unlocks), by secret and event, never by user."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from wallet.credentials import CredentialEvent, Credentials, GuessPolicy, Secret, Verdict

pytestmark = pytest.mark.timeout(60)

# 1 free wrong answer, then a wait, and the 3rd in a row locks
POLICY = GuessPolicy(
    free_failures=1,
    backoff=timedelta(seconds=10),
    backoff_max=timedelta(minutes=1),
    lockout_after=3,
    lockout_for=timedelta(hours=1),
    forget_after=timedelta(hours=1),
)
ADDRESS = "198.51.100.7"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def credentials(engine: Engine, clock: Clock) -> Credentials:
    return Credentials(engine, b"k" * 32, account_policy=POLICY, address_policy=POLICY, pin_cost=2, clock=clock)


class Events:
    """``mpp_credential_events_total`` since this object was made, by (secret, event)."""

    def __init__(self) -> None:
        self._start = self._now()

    @staticmethod
    def _now() -> dict[tuple[str, str], float]:
        return {
            (secret.value, event.value): REGISTRY.get_sample_value(
                "mpp_credential_events_total", {"secret": secret.value, "event": event.value}
            )
            or 0.0
            for secret in Secret
            for event in CredentialEvent
        }

    def since(self) -> dict[tuple[str, str], float]:
        now = self._now()
        return {key: now[key] - self._start[key] for key in now if now[key] != self._start[key]}


@pytest.fixture
def events() -> Iterator[Events]:
    yield Events()


def test_wrong_otps_count_then_back_off_then_lock_and_a_retry_counts_nothing(
    credentials: Credentials, clock: Clock, events: Events
) -> None:
    def wrong(key: str) -> Verdict:
        return credentials.check_otp("metrics-otp-user", None, "not-the-code", key, "test").verdict

    assert wrong("a1") is Verdict.WRONG  # free
    assert wrong("a1") is Verdict.WRONG  # the same attempt retried: answered again, counted once
    assert wrong("a2") is Verdict.WRONG  # now the account waits
    assert wrong("a3") is Verdict.WAIT  # asked too soon: refused, not checked
    clock.now += POLICY.backoff
    assert wrong("a4") is Verdict.LOCKED

    assert events.since() == {
        ("otp", "wrong"): 3,
        ("otp", "backoff"): 1,
        ("otp", "refused"): 1,
        ("otp", "lockout"): 1,
    }


def test_an_unlock_counts_and_a_pin_counts_as_a_pin(credentials: Credentials, clock: Clock, events: Events) -> None:
    for key in ("p1", "p2", "p3"):
        digest = credentials.pin_digest("metrics-pin-user", "000000")
        credentials.check_pin("metrics-pin-user", digest, key, "test")
        clock.now += timedelta(minutes=1)  # past each backoff

    assert credentials.unlock("metrics-pin-user", by="test")
    assert not credentials.unlock("metrics-pin-user", by="test")  # nothing left to lift: not counted

    assert events.since() == {
        ("pin", "wrong"): 3,
        ("pin", "backoff"): 1,
        ("pin", "lockout"): 1,
        ("any", "unlock"): 1,
    }


def test_an_address_counts_its_own_backoff_but_not_the_wrong_answer_again(
    credentials: Credentials, clock: Clock, events: Events
) -> None:
    credentials.count_address_failure(ADDRESS, "c1", "easypay")
    credentials.count_address_failure(ADDRESS, "c2", "easypay")  # the address now waits
    credentials.count_address_failure(ADDRESS, "c3", "easypay")  # while it waits: not counted at all
    clock.now += timedelta(minutes=1)
    credentials.count_address_failure(ADDRESS, "c4", "easypay")  # the third locks the address

    assert events.since() == {("code", "address_backoff"): 1, ("code", "address_lockout"): 1}
    assert credentials.unlock_address(ADDRESS, by="test")
    assert events.since()[("any", "address_unlock")] == 1
