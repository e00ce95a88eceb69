"""Issue 13, item 1: guessing PINs and OTPs.

The reproductions replayed, and what they must get now:

* ``/app/v1/login``: 60 wrong PINs in a row, all 401, never 429 or lockout; the right PIN then logged
  in. Now the account waits after the free failures (429 with ``Retry-After``), the right PIN is not
  even checked while it waits, and enough failures lock it (audited) until it ends or is lifted;
* Easy Pay allowed 3 tries per payment but nothing per user, so repeated orders allowed unlimited
  guesses. Now the tries count on the account across payments (and logins): once it is locked, the
  payment fails with USER_PAYMENT_VERIFICATION_FAILED and no money moves, whatever is typed;
* PINs were a fast HMAC. Now they are scrypt over the keyed digest, and older digests are rewritten
  on the next right PIN.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, update
from sqlmodel import Session, col
from sqlmodel import select as select_models
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from alipayplus import Amount, KeyRegistry, SignedClient, Verifier
from api.main import create_app
from sandbox.alipayplus.app import create_app as create_sandbox_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.alipayplus.transport import TimeoutASGITransport
from sandbox.code_service import CodeService
from tests.api.conftest import AlipayPlusCaller, code_service_transport
from tests.conftest import SandboxSms, new_user, save_history
from tests.security.test_pages import form_of, ordered_easy_pay, state_of
from wallet.credentials import (
    ACCOUNT_POLICY,
    ADDRESS_POLICY,
    Attempt,
    Credentials,
    GuessPolicy,
    Verdict,
    address_subject,
    customer_subject,
)
from wallet.ledger import Ledger
from wallet.records import CredentialCounter, CredentialLockout, WalletUser
from wallet.secrets import keyed_digest, pin_verifier_matches
from wallet.settings import Settings
from wallet.states import PaymentStatus
from workers.worker import activities_for, build_worker

pytestmark = pytest.mark.timeout(90)

PIN, WRONG = "246810", "135791"
PRICE = Amount(currency="IDR", value=5000)
# Small numbers, so that a lockout is reached in a test: 2 free, then a wait too short to matter, the 5th locks.
QUICK = GuessPolicy(
    free_failures=2,
    backoff=timedelta(milliseconds=1),
    backoff_max=timedelta(milliseconds=1),
    lockout_after=5,
    lockout_for=timedelta(hours=1),
    forget_after=timedelta(hours=1),
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


def pin_user(engine: Engine, database: Ledger, credentials: Credentials, balance: int = 1_000_000) -> WalletUser:
    """A new user of this test alone, with the PIN ``PIN``."""
    customer_id = new_user(engine, database, balance)
    with Session(engine) as session:
        user = session.get(WalletUser, customer_id)
        assert user is not None
        user.pin_digest = credentials.new_pin_verifier(customer_id, PIN)
        session.add(user)
        session.commit()
        session.refresh(user)
        return user


def typed(credentials: Credentials, user: WalletUser, pin: str, key: str, address: str | None = None) -> Attempt:
    """``pin`` typed by ``user``'s side, as pages carry it (its keyed digest)."""
    return credentials.check_pin(user.customer_id, credentials.pin_digest(user.customer_id, pin), key, "test", address)


def counter(engine: Engine, subject: str) -> CredentialCounter | None:
    with Session(engine) as session:
        return session.get(CredentialCounter, subject)


def lockouts(engine: Engine, subject: str) -> list[CredentialLockout]:
    with Session(engine) as session:
        return list(session.exec(select_models(CredentialLockout).where(col(CredentialLockout.subject) == subject)))


def an_address() -> str:
    """A client address of this test alone: address counters are shared by every test of the session."""
    number = uuid.uuid4().int
    return f"10.{number % 250}.{number // 250 % 250}.{number // 62500 % 250 + 1}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def credentials(engine: Engine, settings: Settings, clock: Clock) -> Credentials:
    """The default limits (``ACCOUNT_POLICY``, ``ADDRESS_POLICY``) on a clock the test moves."""
    return Credentials(engine, settings.secret_key, pin_cost=10, clock=clock)


# --- the counter itself ------------------------------------------------------------------------


def test_wrong_pins_cost_nothing_then_double_the_wait_then_lock(
    credentials: Credentials, engine: Engine, database: Ledger, clock: Clock
) -> None:
    user = pin_user(engine, database, credentials)
    wrong = credentials.pin_digest(user.customer_id, WRONG)
    waits = []
    for attempt in range(ACCOUNT_POLICY.lockout_after):
        checked = credentials.check_pin(user.customer_id, wrong, f"k{attempt}", "test")
        waits.append(checked.wait)
        if attempt == ACCOUNT_POLICY.lockout_after - 1:
            assert checked.verdict is Verdict.LOCKED
            break
        assert checked.verdict is Verdict.WRONG, attempt
        if checked.wait:  # asked again too soon: not checked, not counted
            early = credentials.check_pin(user.customer_id, wrong, f"early{attempt}", "test")
            assert (early.verdict, early.wait) == (Verdict.WAIT, checked.wait)
            clock.advance(checked.wait)
    free = ACCOUNT_POLICY.free_failures
    assert waits[:free] == [timedelta(0)] * free
    assert waits[free : free + 4] == [timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2)] + [
        timedelta(minutes=4)
    ]
    assert waits[-1] == ACCOUNT_POLICY.lockout_for

    right = credentials.pin_digest(user.customer_id, PIN)
    assert credentials.check_pin(user.customer_id, right, "right-while-locked", "test").verdict is Verdict.LOCKED
    [lockout] = lockouts(engine, customer_subject(user.customer_id))
    assert (lockout.failures, lockout.channel, lockout.lifted_at) == (ACCOUNT_POLICY.lockout_after, "test", None)

    clock.advance(ACCOUNT_POLICY.lockout_for)  # the lockout ends by itself
    assert credentials.check_pin(user.customer_id, right, "right-after", "test").verdict is Verdict.RIGHT
    found = counter(engine, customer_subject(user.customer_id))
    assert found is not None and found.failures == 0


def test_a_right_pin_resets_the_account_but_not_the_address(
    credentials: Credentials, engine: Engine, database: Ledger
) -> None:
    user = pin_user(engine, database, credentials)
    address = an_address()
    for attempt in range(3):
        assert typed(credentials, user, WRONG, f"w{attempt}", address).verdict is Verdict.WRONG
    right = typed(credentials, user, PIN, "r", address)
    assert (right.verdict, right.customer_id) == (Verdict.RIGHT, user.customer_id)
    account, by_address = (
        counter(engine, customer_subject(user.customer_id)),
        counter(engine, address_subject(address) or ""),
    )
    assert account is not None and account.failures == 0
    assert by_address is not None and by_address.failures == 3  # an attacker's own account must not reset it


def test_a_retried_check_counts_once_and_answers_the_same(
    credentials: Credentials, engine: Engine, database: Ledger
) -> None:
    user = pin_user(engine, database, credentials)
    wrong = credentials.pin_digest(user.customer_id, WRONG)
    answers = [credentials.check_pin(user.customer_id, wrong, "same-attempt", "test").verdict for _ in range(4)]
    assert answers == [Verdict.WRONG] * 4
    found = counter(engine, customer_subject(user.customer_id))
    assert found is not None and found.failures == 1


def test_parallel_guesses_get_no_more_answers_than_the_policy(
    credentials: Credentials, engine: Engine, database: Ledger
) -> None:
    """50 guesses at once: each checks the counter before comparing, but only the ones counted in
    order get an answer; the rest are told to wait, even the right PIN among them."""
    user = pin_user(engine, database, credentials)
    verdicts: list[Verdict] = []
    guard = threading.Lock()

    def guess(number: int) -> None:
        pin = PIN if number == 49 else f"{number:06d}"
        attempt = credentials.check_pin(
            user.customer_id, credentials.pin_digest(user.customer_id, pin), f"p{number}", "t"
        )
        with guard:
            verdicts.append(attempt.verdict)

    threads = [threading.Thread(target=guess, args=(number,)) for number in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = counter(engine, customer_subject(user.customer_id))
    assert found is not None
    answered = [verdict for verdict in verdicts if verdict in (Verdict.WRONG, Verdict.RIGHT)]
    assert len(answered) <= ACCOUNT_POLICY.free_failures + 1, verdicts
    assert verdicts.count(Verdict.WRONG) == found.failures or Verdict.RIGHT in verdicts


def test_an_older_hmac_pin_is_upgraded_to_scrypt_on_the_next_right_pin(
    credentials: Credentials, engine: Engine, database: Ledger, settings: Settings
) -> None:
    user = pin_user(engine, database, credentials)
    legacy = keyed_digest(settings.secret_key, "pin", user.customer_id, PIN)
    with Session(engine) as session:
        session.execute(
            update(WalletUser).where(col(WalletUser.customer_id) == user.customer_id).values(pin_digest=legacy)
        )
        session.commit()
    assert credentials.check_pin(
        user.customer_id, credentials.pin_digest(user.customer_id, WRONG), "w", "t"
    ).verdict is (Verdict.WRONG)
    assert credentials.check_pin(user.customer_id, legacy, "r", "t").verdict is Verdict.RIGHT
    with Session(engine) as session:
        stored = session.get(WalletUser, user.customer_id)
    assert stored is not None and stored.pin_digest and stored.pin_digest.startswith("scrypt$10$")
    assert pin_verifier_matches(stored.pin_digest, legacy)
    assert credentials.check_pin(user.customer_id, legacy, "r2", "t").verdict is Verdict.RIGHT


def test_unlock_lifts_a_lockout_and_says_who(credentials: Credentials, engine: Engine, database: Ledger) -> None:
    quick = Credentials(engine, b"k" * 32, QUICK, QUICK, pin_cost=10)
    user = pin_user(engine, database, quick)
    for attempt in range(QUICK.lockout_after):
        last = quick.check_pin(user.customer_id, quick.pin_digest(user.customer_id, WRONG), f"u{attempt}", "t")
        threading.Event().wait(0.005)  # past the millisecond backoff
    assert last.verdict is Verdict.LOCKED
    assert quick.unlock(user.customer_id, "ops@example")
    assert quick.check_pin(user.customer_id, quick.pin_digest(user.customer_id, PIN), "after", "t").verdict is (
        Verdict.RIGHT
    )
    [lockout] = lockouts(engine, customer_subject(user.customer_id))
    assert lockout.lifted_by == "ops@example" and lockout.lifted_at is not None
    assert not quick.unlock(user.customer_id, "ops@example")  # nothing left to lift


def test_addresses_group_ipv6_by_subscriber() -> None:
    assert (
        address_subject("2001:db8:1:2:aaaa::1")
        == address_subject("2001:db8:1:2:bbbb::9")
        == ("address:2001:db8:1:2::/64")
    )
    assert address_subject("::ffff:10.1.2.3") == address_subject("10.1.2.3") == "address:10.1.2.3"
    assert address_subject(None) is None


# --- login --------------------------------------------------------------------------------------


def _strict(settings: Settings, task_queue: str | None = None, policy: GuessPolicy = ACCOUNT_POLICY) -> Settings:
    return settings.model_copy(
        update={
            "account_guessing": policy,
            "address_guessing": ADDRESS_POLICY,
            "temporal_task_queue": task_queue or settings.temporal_task_queue,
        }
    )


async def _app(settings: Settings, client: Client) -> AsyncIterator[FastAPI]:
    application = create_app(settings, client, code_service_transport=code_service_transport(CodeService()))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def strict_app(settings: Settings, client: Client, database: Ledger) -> AsyncIterator[FastAPI]:
    """The API with the production limits."""
    async for application in _app(_strict(settings), client):
        yield application


def _from(app: FastAPI, settings: Settings, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=settings.public_base_url)


def _credentials_of(app: FastAPI) -> Credentials:
    credentials: Credentials = app.state.services.credentials
    return credentials


async def test_sixty_wrong_pins_in_a_row_are_refused_and_the_right_pin_then_waits(
    strict_app: FastAPI, settings: Settings, engine: Engine, database: Ledger
) -> None:
    user = pin_user(engine, database, _credentials_of(strict_app))
    statuses = []
    async with _from(strict_app, settings, an_address()) as phone:
        for _ in range(60):
            answer = await phone.post("/app/v1/login", json={"loginId": user.login_id, "pin": WRONG})
            statuses.append(answer.status_code)
        assert statuses[: ACCOUNT_POLICY.free_failures + 1] == [401] * (ACCOUNT_POLICY.free_failures + 1)
        assert set(statuses[ACCOUNT_POLICY.free_failures + 1 :]) == {429}
        assert 25 <= int(answer.headers["retry-after"]) <= 30
        assert "Try again in" in answer.json()["detail"]

        right = await phone.post("/app/v1/login", json={"loginId": user.login_id, "pin": PIN})
        assert right.status_code == 429, right.text  # not checked while the account waits
        assert "sessionToken" not in right.text
    found = counter(engine, customer_subject(user.customer_id))
    assert found is not None and found.failures == ACCOUNT_POLICY.free_failures + 1  # the refused ones not counted


async def test_a_locked_account_is_refused_even_the_right_pin_until_unlocked(
    settings: Settings, client: Client, engine: Engine, database: Ledger
) -> None:
    async for app in _app(_strict(settings, policy=QUICK), client):
        credentials = _credentials_of(app)
        user = pin_user(engine, database, credentials)
        async with _from(app, settings, an_address()) as phone:
            for _ in range(QUICK.lockout_after):
                answer = await phone.post("/app/v1/login", json={"loginId": user.login_id, "pin": WRONG})
                threading.Event().wait(0.005)
            assert answer.status_code == 429 and "locked" in answer.json()["detail"], answer.text
            assert int(answer.headers["retry-after"]) == int(QUICK.lockout_for.total_seconds())
            refused = await phone.post("/app/v1/login", json={"loginId": user.login_id, "pin": PIN})
            assert refused.status_code == 429 and "locked" in refused.json()["detail"]
            assert len(lockouts(engine, customer_subject(user.customer_id))) == 1

            assert credentials.unlock(user.customer_id, "test")
            signed_in = await phone.post("/app/v1/login", json={"loginId": user.login_id, "pin": PIN})
            assert signed_in.status_code == 200 and signed_in.json()["customerId"] == user.customer_id


async def test_one_address_guessing_many_accounts_is_slowed_down(
    strict_app: FastAPI, settings: Settings, engine: Engine, database: Ledger
) -> None:
    """One wrong PIN on each of many accounts never trips an account's limit; the address's does."""
    credentials = _credentials_of(strict_app)
    attacker, bystander = an_address(), an_address()
    victims = [pin_user(engine, database, credentials) for _ in range(ADDRESS_POLICY.free_failures + 2)]
    async with _from(strict_app, settings, attacker) as phone:
        statuses = [
            (await phone.post("/app/v1/login", json={"loginId": victim.login_id, "pin": WRONG})).status_code
            for victim in victims
        ]
        assert statuses[: ADDRESS_POLICY.free_failures + 1] == [401] * (ADDRESS_POLICY.free_failures + 1)
        assert statuses[-1] == 429
        unknown = await phone.post("/app/v1/login", json={"loginId": "852-00000000", "pin": WRONG})
        assert unknown.status_code == 429  # unknown logins count on the address, and wait with it
    async with _from(strict_app, settings, bystander) as other:
        fine = await other.post("/app/v1/login", json={"loginId": victims[-1].login_id, "pin": PIN})
        assert fine.status_code == 200, fine.text


# --- Easy Pay: tries count on the account, across payments ------------------------------------------


@pytest.fixture(scope="module")
async def quick_stack(
    settings: Settings, client: Client, database: Ledger, alipayplus: SandboxAlipayPlus
) -> AsyncIterator[tuple[FastAPI, Settings]]:
    """A worker and API of their own whose accounts lock after 5 wrong codes (QUICK)."""
    quick = _strict(settings, f"guess-{uuid.uuid4().hex[:8]}", QUICK)
    to_alipayplus = SignedClient(
        "http://alipayplus.test",
        quick.signer,
        quick.verifier,
        timeout=1.0,
        transport=TimeoutASGITransport(app=create_sandbox_app(alipayplus)),
    )
    activities = activities_for(client, quick, alipayplus=to_alipayplus, sms=SandboxSms(alipayplus))
    async with build_worker(client, quick, activities):
        async for app in _app(quick, client):
            yield app, quick
    await to_alipayplus.aclose()


@pytest.fixture
async def quick_alipay(
    quick_stack: tuple[FastAPI, Settings], alipayplus: SandboxAlipayPlus
) -> AsyncIterator[AlipayPlusCaller]:
    app, quick = quick_stack
    keys = KeyRegistry()
    keys.add_file(quick.client_id, quick.key_version, quick.mpp_public_key_file)
    async with _from(app, quick, "127.0.0.1") as http:
        yield AlipayPlusCaller(http, alipayplus, Verifier(quick.client_id, keys))


async def _pay(alipay: AlipayPlusCaller, env: WorkflowEnvironment, quick: Settings, login_id: str) -> tuple[str, str]:
    payment = await ordered_easy_pay(alipay, env, quick, login_id=login_id)
    return payment.request.payment_request_id, payment.page


async def _type(browser: httpx.AsyncClient, page: str, code: str) -> httpx.Response:
    fields = form_of(await browser.get(page))
    fields["code"] = code
    return await browser.post(page, data=fields)


async def _recorded(client: Client, workflow_id: str, name: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    await handle.result()
    await save_history(handle, name)


async def test_repeated_orders_no_longer_allow_unlimited_guesses(
    quick_stack: tuple[FastAPI, Settings],
    quick_alipay: AlipayPlusCaller,
    env: WorkflowEnvironment,
    client: Client,
    engine: Engine,
    database: Ledger,
) -> None:
    app, quick = quick_stack
    user = pin_user(engine, database, _credentials_of(app))
    balance = database.balance(Ledger.user_account_id(user.customer_id))
    async with _from(app, quick, an_address()) as browser:
        first, first_page = await _pay(quick_alipay, env, quick, user.login_id)
        for _ in range(3):  # the payment's own 3 tries: failures 1–3 on the account
            await _type(browser, first_page, WRONG)
            threading.Event().wait(0.005)
        assert (await state_of(client, f"pay/{first}")).status is PaymentStatus.FAIL
        await _recorded(client, f"pay/{first}", "easy_pay_guesses_counted")

        second, second_page = await _pay(quick_alipay, env, quick, user.login_id)
        await _type(browser, second_page, WRONG)  # failure 4
        threading.Event().wait(0.005)
        locked = await _type(browser, second_page, WRONG)  # failure 5: the account locks, 1 try left unused
        state = await state_of(client, f"pay/{second}")
        assert state.status is PaymentStatus.FAIL
        assert state.payment_result.result_code == "USER_PAYMENT_VERIFICATION_FAILED"
        assert "locked" in (state.payment_result.result_message or "")
        assert locked.status_code in (200, 303)
        await _recorded(client, f"pay/{second}", "easy_pay_account_locked")

        third, third_page = await _pay(quick_alipay, env, quick, user.login_id)
        await _type(browser, third_page, PIN)  # the right PIN, too late
        state = await state_of(client, f"pay/{third}")
        assert (state.status, state.payment_result.result_code) == (
            PaymentStatus.FAIL,
            "USER_PAYMENT_VERIFICATION_FAILED",
        )
    assert database.balance(Ledger.user_account_id(user.customer_id)) == balance  # no money moved
    assert len(lockouts(engine, customer_subject(user.customer_id))) == 1
