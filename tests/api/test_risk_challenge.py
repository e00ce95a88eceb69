"""Auto Debit risk challenge over HTTP: Alipay+'s signed sendOtp and verifyOtp for an agreement token.

Each test binds a fresh user with a live agreement token (an ``Agreement`` and its ``OAuthToken``,
as applyToken leaves them), and swaps the app's ``RiskChallenges`` for one that texts into an
in-memory inbox and reads a clock the test moves (from 01:00 UTC tomorrow, so a run near midnight
does not cross a day). The guessing limits run on the real clock, behind it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from alipayplus import SendOtpRequest, VerifyOtpRequest, VerifyType
from api.services import Services
from sandbox.alipayplus.driver import ACQUIRER_ID
from tests.conftest import new_user
from wallet.agreements import Agreements, CancelledBy, Origin
from wallet.credentials import Credentials, GuessPolicy
from wallet.ledger import Ledger
from wallet.payments import otp_code
from wallet.records import Agreement, AgreementStatus, OAuthToken, OtpChallenge
from wallet.risk_challenges import RiskChallenges
from wallet.secrets import keyed_digest, token_digest
from wallet.settings import Settings
from wallet.users import UserStore

from .conftest import AlipayPlusCaller, new_id, result_of

pytestmark = pytest.mark.timeout(60)

SEND, VERIFY = SendOtpRequest.PATH, VerifyOtpRequest.PATH
WRONG = ("F", "USER_PAYMENT_VERIFICATION_FAILED")
EXPIRED = ("F", "OTP_EXPIRED")
TOO_FREQUENT = ("F", "OTP_SEND_TOO_FREQUENTLY")


class Inbox:
    """The SMS gateway: keeps what was sent, or fails like a gateway that is down."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.down = False

    def send(self, to: str, text: str, reference: str) -> None:
        if self.down:
            raise httpx.ConnectError("SMS gateway unreachable")
        self.sent.append((to, text, reference))

    def code(self, phone: str, reference: str) -> str:
        """The 6-digit code the user read in the SMS ``reference`` names."""
        texts = [text for to, text, ref in self.sent if to == phone and ref == reference]
        assert len(texts) == 1, self.sent
        found = re.match(r"(\d{6})\b", texts[0])
        assert found, texts[0]
        return found.group(1)


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass(frozen=True)
class Binding:
    token: str
    customer_id: str
    agreement_id: str
    phone: str


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def bind(engine: Engine, ledger: Ledger, *, expires_at: datetime | None = None) -> Binding:
    """A new user with an ACTIVE Auto Debit agreement and a live AGREEMENT_PAY access token."""
    customer_id = new_user(engine, ledger, 0)
    agreement_id, token = uuid.uuid4().hex, f"risk-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.add(
            Agreement(
                id=agreement_id,
                auth_client_id="risk-test-merchant",
                reference_agreement_id=new_id("agreement"),
                origin=Origin.AUTO_DEBIT,
                status=AgreementStatus.ACTIVE,
                scopes="AGREEMENT_PAY",
                customer_id=customer_id,
                authorized_at=now,
            )
        )
        session.add(
            OAuthToken(
                id=uuid.uuid4().hex,
                access_token_digest=token_digest(token),
                refresh_token_digest=token_digest(f"{token}/refresh"),
                customer_id=customer_id,
                scopes="AGREEMENT_PAY",
                access_token_expires_at=expires_at or now + timedelta(days=30),
                refresh_token_expires_at=now + timedelta(days=730),
                agreement_id=agreement_id,
            )
        )
        session.commit()
    user = UserStore(engine).get(customer_id)
    assert user is not None
    return Binding(token, customer_id, agreement_id, user.phone)


def send_body(settings: Settings, token: str, verify_type: VerifyType = VerifyType.MOBILE) -> bytes:
    return SendOtpRequest(
        acquirer_id=ACQUIRER_ID, psp_id=settings.psp_id, access_token=token, verify_type=verify_type
    ).to_wire()


def verify_body(settings: Settings, token: str, verify_request_id: str, otp_code: str) -> bytes:
    return VerifyOtpRequest(
        acquirer_id=ACQUIRER_ID,
        psp_id=settings.psp_id,
        access_token=token,
        verify_request_id=verify_request_id,
        otp_code=otp_code,
    ).to_wire()


@dataclass
class Challenger:
    """Alipay+ challenging one bound user, and what the test controls around it."""

    alipay: AlipayPlusCaller
    settings: Settings
    engine: Engine
    ledger: Ledger
    inbox: Inbox
    clock: ManualClock

    def bind(self, **kwargs: Any) -> Binding:
        return bind(self.engine, self.ledger, **kwargs)

    async def send(self, binding: Binding, verify_type: VerifyType = VerifyType.MOBILE) -> dict[str, Any]:
        return await self.alipay.call(SEND, send_body(self.settings, binding.token, verify_type))

    async def sent(self, binding: Binding) -> tuple[str, str]:
        """Send, expect S; the verifyRequestId and the code the user received."""
        answer = await self.send(binding)
        assert result_of(answer) == ("S", "SUCCESS"), answer
        verify_request_id = answer["verifyRequestId"]
        return verify_request_id, self.inbox.code(binding.phone, verify_request_id)

    async def verify(self, binding: Binding, verify_request_id: str, code: str) -> dict[str, Any]:
        return await self.alipay.call(VERIFY, verify_body(self.settings, binding.token, verify_request_id, code))


def swapped(app: FastAPI, challenges: RiskChallenges) -> Services:
    """Put ``challenges`` in the app's services; answers the services to put back."""
    services = services_of(app)
    app.state.services = dataclasses.replace(services, risk_challenges=challenges)
    return services


def risk_challenges(
    engine: Engine, settings: Settings, inbox: Inbox, clock: ManualClock, credentials: Credentials
) -> RiskChallenges:
    return RiskChallenges(
        engine,
        settings.secret_key,
        inbox,
        UserStore(engine),
        credentials,
        settings.otp_ttl,
        settings.risk_otp_daily_limit,
        settings.risk_otp_resend_gap,
        clock=clock,
        attempts_per_code=settings.verification_attempts,
    )


@pytest.fixture
def challenger(
    app: FastAPI, alipay: AlipayPlusCaller, settings: Settings, engine: Engine, database: Ledger
) -> Iterator[Challenger]:
    inbox = Inbox()
    clock = ManualClock(datetime.combine(datetime.now(UTC).date() + timedelta(days=1), time(1), tzinfo=UTC))
    services = swapped(app, risk_challenges(engine, settings, inbox, clock, services_of(app).credentials))
    yield Challenger(alipay, settings, engine, database, inbox, clock)
    app.state.services = services


# --- the wiring ------------------------------------------------------------------------------


def test_the_app_serves_both_apis_with_its_own_risk_challenges(app: FastAPI) -> None:
    assert isinstance(services_of(app).risk_challenges, RiskChallenges)
    paths = app.openapi()["paths"]
    for path in (SEND, VERIFY):
        assert "post" in paths[path]
        assert paths[path]["post"]["tags"] == ["Alipay+ inbound"]


# --- send, then verify -------------------------------------------------------------------------


async def test_a_texted_code_verifies_once_and_a_repeat_of_that_verify_is_answered_alike(
    challenger: Challenger,
) -> None:
    user = challenger.bind()

    verify_request_id, code = await challenger.sent(user)

    assert re.fullmatch(r"\d{6}", code)
    ((to, text, reference),) = challenger.inbox.sent
    assert (to, reference) == (user.phone, verify_request_id)
    assert user.token not in text
    with Session(challenger.engine) as session:
        row = session.get(OtpChallenge, verify_request_id)
    assert row is not None
    assert (row.payment_request_id, row.customer_id) == (f"risk/{user.agreement_id}", user.customer_id)
    assert code not in row.code_digest and user.token not in row.code_digest

    assert result_of(await challenger.verify(user, verify_request_id, code)) == ("S", "SUCCESS")
    # Alipay+ asking again after a lost answer gets the same answer; any other code does not verify
    assert result_of(await challenger.verify(user, verify_request_id, code)) == ("S", "SUCCESS")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    again = await challenger.verify(user, verify_request_id, wrong)
    assert result_of(again) == EXPIRED  # single use
    assert set(again) == {"result"}
    with Session(challenger.engine) as session:
        used = session.get(OtpChallenge, verify_request_id)
    assert used is not None and used.verified_at is not None


async def test_a_wrong_code_fails_and_the_right_one_still_verifies(challenger: Challenger) -> None:
    user = challenger.bind()
    verify_request_id, code = await challenger.sent(user)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    answer = await challenger.verify(user, verify_request_id, wrong)

    assert result_of(answer) == WRONG
    assert result_of(await challenger.verify(user, verify_request_id, code)) == ("S", "SUCCESS")


async def test_past_the_attempts_per_code_even_the_right_code_fails(challenger: Challenger) -> None:
    user = challenger.bind()
    verify_request_id, code = await challenger.sent(user)
    attempts = challenger.settings.verification_attempts
    for n in range(attempts):
        wrong = f"{(int(code) + 1 + n) % 1_000_000:06d}"
        assert result_of(await challenger.verify(user, verify_request_id, wrong)) == WRONG

    answer = await challenger.verify(user, verify_request_id, code)

    assert result_of(answer) == WRONG
    assert "send a new OTP" in answer["result"]["resultMessage"]
    challenger.clock.advance(challenger.settings.risk_otp_resend_gap)
    fresh_id, fresh_code = await challenger.sent(user)  # a new code is checked afresh
    assert result_of(await challenger.verify(user, fresh_id, fresh_code)) == ("S", "SUCCESS")


async def test_a_locked_account_is_not_checked(
    app: FastAPI, challenger: Challenger, engine: Engine, settings: Settings
) -> None:
    strict = GuessPolicy(
        free_failures=0,
        backoff=timedelta(minutes=5),
        backoff_max=timedelta(minutes=5),
        lockout_after=50,
        lockout_for=timedelta(hours=1),
        forget_after=timedelta(hours=1),
    )
    credentials = Credentials(engine, settings.secret_key, account_policy=strict, pin_cost=settings.pin_scrypt_cost)
    swapped(app, risk_challenges(engine, settings, challenger.inbox, challenger.clock, credentials))
    user = challenger.bind()
    verify_request_id, code = await challenger.sent(user)
    assert result_of(await challenger.verify(user, verify_request_id, "000000" if code != "000000" else "111111")) == (
        WRONG
    )

    answer = await challenger.verify(user, verify_request_id, code)  # the account waits: not compared

    assert result_of(answer) == WRONG
    assert "try again in" in answer["result"]["resultMessage"]


async def test_an_unknown_verify_request_id_fails(challenger: Challenger) -> None:
    user = challenger.bind()
    await challenger.sent(user)

    answer = await challenger.verify(user, uuid.uuid4().hex, "123456")

    assert result_of(answer) == EXPIRED


async def test_another_tokens_verify_request_id_fails_and_stays_live(challenger: Challenger) -> None:
    owner, other = challenger.bind(), challenger.bind()
    verify_request_id, code = await challenger.sent(owner)

    answer = await challenger.verify(other, verify_request_id, code)

    assert result_of(answer) == EXPIRED  # as if unknown: nothing said of another user's challenge
    assert result_of(await challenger.verify(owner, verify_request_id, code)) == ("S", "SUCCESS")


async def test_a_payments_otp_of_the_same_user_is_not_a_risk_challenge(challenger: Challenger) -> None:
    user = challenger.bind()
    challenge_id, secret = uuid.uuid4().hex, challenger.settings.secret_key
    code = otp_code(secret, challenge_id)
    with Session(challenger.engine) as session:  # as Easy Pay's OTP step leaves it, for the same customer
        session.add(
            OtpChallenge(
                id=challenge_id,
                payment_request_id=new_id("pay"),
                customer_id=user.customer_id,
                code_digest=keyed_digest(secret, "otp", challenge_id, code),
                expires_at=datetime.now(UTC) + timedelta(days=2),
            )
        )
        session.commit()

    answer = await challenger.verify(user, challenge_id, code)

    assert result_of(answer) == EXPIRED


async def test_an_expired_code_fails(challenger: Challenger) -> None:
    user = challenger.bind()
    verify_request_id, code = await challenger.sent(user)
    challenger.clock.advance(challenger.settings.otp_ttl)

    answer = await challenger.verify(user, verify_request_id, code)

    assert result_of(answer) == EXPIRED


# --- sending limits ----------------------------------------------------------------------------


async def test_a_resend_within_the_gap_is_refused_and_the_newest_code_is_the_live_one(
    challenger: Challenger,
) -> None:
    user = challenger.bind()
    first_id, first_code = await challenger.sent(user)
    gap = challenger.settings.risk_otp_resend_gap
    assert timedelta(seconds=30) <= gap <= timedelta(seconds=60)
    challenger.clock.advance(gap - timedelta(seconds=1))

    too_soon = await challenger.send(user)

    assert result_of(too_soon) == TOO_FREQUENT
    assert "verifyRequestId" not in too_soon
    assert len(challenger.inbox.sent) == 1
    challenger.clock.advance(timedelta(seconds=1))
    second_id, second_code = await challenger.sent(user)
    assert second_id != first_id
    assert result_of(await challenger.verify(user, first_id, first_code)) == EXPIRED
    assert result_of(await challenger.verify(user, second_id, second_code)) == ("S", "SUCCESS")


async def test_the_daily_limit_allows_at_least_three_and_resets_the_next_day(challenger: Challenger) -> None:
    user = challenger.bind()
    limit, gap = challenger.settings.risk_otp_daily_limit, challenger.settings.risk_otp_resend_gap
    assert limit >= 3
    for _ in range(limit):
        await challenger.sent(user)
        challenger.clock.advance(gap)

    refused = await challenger.send(user)

    assert result_of(refused) == TOO_FREQUENT
    assert len(challenger.inbox.sent) == limit
    other = challenger.bind()  # counted per token: another agreement is not affected
    await challenger.sent(other)
    challenger.clock.advance(timedelta(days=1))
    verify_request_id, code = await challenger.sent(user)
    assert result_of(await challenger.verify(user, verify_request_id, code)) == ("S", "SUCCESS")


async def test_an_sms_gateway_failure_is_unknown_and_does_not_count(challenger: Challenger) -> None:
    user = challenger.bind()
    challenger.inbox.down = True

    answer = await challenger.send(user)

    assert result_of(answer) == ("U", "UNKNOWN_EXCEPTION")
    with Session(challenger.engine) as session:
        rows = session.exec(
            select(OtpChallenge).where(col(OtpChallenge.payment_request_id) == f"risk/{user.agreement_id}")
        ).all()
    assert rows == []
    challenger.inbox.down = False
    verify_request_id, code = await challenger.sent(user)  # Alipay+'s retry, at once: no gap to wait
    assert result_of(await challenger.verify(user, verify_request_id, code)) == ("S", "SUCCESS")


# --- refusals ----------------------------------------------------------------------------------


async def test_a_revoked_token_can_neither_send_nor_verify(challenger: Challenger) -> None:
    user = challenger.bind()
    verify_request_id, code = await challenger.sent(user)
    Agreements(challenger.engine, challenger.settings.secret_key).revoke(user.agreement_id, CancelledBy.MERCHANT)
    challenger.clock.advance(challenger.settings.risk_otp_resend_gap)

    assert result_of(await challenger.send(user)) == ("F", "INVALID_TOKEN")
    assert result_of(await challenger.verify(user, verify_request_id, code)) == ("F", "INVALID_TOKEN")
    assert len(challenger.inbox.sent) == 1


async def test_an_unknown_token_is_invalid(challenger: Challenger) -> None:
    stranger = Binding(f"risk-{uuid.uuid4().hex}", "nobody", "none", "+85200000000")

    assert result_of(await challenger.send(stranger)) == ("F", "INVALID_TOKEN")
    assert result_of(await challenger.verify(stranger, uuid.uuid4().hex, "123456")) == ("F", "INVALID_TOKEN")
    assert challenger.inbox.sent == []


async def test_an_expired_token_is_refused(challenger: Challenger) -> None:
    user = challenger.bind(expires_at=challenger.clock.now - timedelta(seconds=1))

    answer = await challenger.send(user)

    assert result_of(answer) == ("F", "EXPIRED_ACCESS_TOKEN")
    assert challenger.inbox.sent == []


async def test_email_is_not_supported_and_does_not_count(challenger: Challenger) -> None:
    user = challenger.bind()

    answer = await challenger.send(user, VerifyType.EMAIL)

    assert result_of(answer) == ("F", "BUSINESS_NOT_SUPPORT")
    assert "EMAIL" in answer["result"]["resultMessage"]
    assert challenger.inbox.sent == []
    await challenger.sent(user)  # at once: the refusal held no gap


@pytest.mark.parametrize(
    ("path", "field", "edit"),
    [
        (SEND, "accessToken", lambda body: body.pop("accessToken")),
        (SEND, "verifyType", lambda body: body.update(verifyType="FAX")),
        (VERIFY, "accessToken", lambda body: body.pop("accessToken")),
        (VERIFY, "otpCode", lambda body: body.update(otpCode="1" * 17)),
        (VERIFY, "verifyRequestId", lambda body: body.pop("verifyRequestId")),
    ],
)
async def test_bad_input_is_a_final_param_illegal_naming_the_field(
    challenger: Challenger, path: str, field: str, edit: Any
) -> None:
    user = challenger.bind()
    wire = (
        send_body(challenger.settings, user.token)
        if path == SEND
        else verify_body(challenger.settings, user.token, uuid.uuid4().hex, "123456")
    )
    body = json.loads(wire)
    edit(body)

    answer = await challenger.alipay.call(path, json.dumps(body).encode())  # HTTP 200, signed

    assert result_of(answer) == ("F", "PARAM_ILLEGAL"), answer
    assert answer["result"]["resultMessage"].startswith(f"{field}: "), answer
    assert challenger.inbox.sent == []
