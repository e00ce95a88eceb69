"""The Auto Debit risk challenge: Alipay+'s ``sendOtp`` and ``verifyOtp`` for an agreement token.

When a merchant suspects an Auto Debit payment, Alipay+ asks us to challenge the user the agreement
token names: ``sendOtp`` texts them a one-time code and answers a ``verifyRequestId``; ``verifyOtp``
checks what the user typed. The payment OTP's machinery is reused: an ``OtpChallenge`` row per code
(its id is the verifyRequestId, the code is derived from it and only its keyed digest is stored) and
``Credentials.check_otp`` for the per-account guessing limits.

A risk challenge's row names the agreement (``payment_request_id = "risk/{agreement_id}"``), so the
limits on sending are queries on that column: at most ``daily_limit`` codes per UTC day (the docs ask
for at least 3) and ``resend_gap`` between two. Only the newest code of an agreement is live, a code
verifies once (its row is expired by a conditional update), and at most ``attempts_per_code`` wrong
answers are checked per code. Neither the code nor the token is logged or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlmodel import Session, col

from alipayplus import (
    Result,
    ResultCode,
    SendOtpRequest,
    SendOtpResponse,
    VerifyOtpRequest,
    VerifyOtpResponse,
    VerifyType,
)

from .agreements import Agreements, TokenOwner
from .credentials import Credentials, Verdict, customer_subject
from .db import reader
from .payments import otp_code
from .records import CredentialFailure, OtpChallenge
from .secrets import keyed_digest
from .sms import SmsGateway
from .users import UserStore

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
CHANNEL = "risk-challenge"  # Credentials' channel label for these attempts


def _utc_now() -> datetime:
    return datetime.now(UTC)


def challenge_key(owner: TokenOwner) -> str:
    """What a risk challenge's ``OtpChallenge.payment_request_id`` holds: its agreement (or, for a
    token without one, its customer), so a token's daily count and resend gap are simple queries."""
    if owner.agreement_id:
        return f"risk/{owner.agreement_id}"
    customer = owner.customer_id or ""
    if len(customer) > 48:  # stay within the column's 64 characters
        customer = hashlib.sha256(customer.encode()).hexdigest()[:48]
    return f"risk/customer/{customer}"


class RiskChallenges:
    """sendOtp and verifyOtp: answered while Alipay+ waits, short writes, no workflow."""

    def __init__(
        self,
        engine: Engine,
        secret_key: bytes,
        sms: SmsGateway,
        users: UserStore,
        credentials: Credentials,
        otp_ttl: timedelta,
        daily_limit: int,
        resend_gap: timedelta,
        clock: Clock = _utc_now,
        attempts_per_code: int = 3,
    ) -> None:
        self._engine, self._secret_key, self._sms, self._users = engine, secret_key, sms, users
        self._credentials, self._otp_ttl, self._clock = credentials, otp_ttl, clock
        self._daily_limit, self._resend_gap, self._attempts_per_code = daily_limit, resend_gap, attempts_per_code
        self._agreements = Agreements(engine, secret_key, clock=clock)

    # --- sendOtp ---------------------------------------------------------------------------------

    def send(self, request: SendOtpRequest) -> SendOtpResponse:
        """Text the token's user a new code, within the daily limit and the resend gap."""
        owner = self._agreements.token_owner(request.access_token)
        if owner.result_code is not ResultCode.SUCCESS or owner.customer_id is None:
            return SendOtpResponse(result=Result.of(owner.result_code))
        if request.verify_type is not VerifyType.MOBILE:
            return SendOtpResponse(
                result=Result.of(
                    ResultCode.BUSINESS_NOT_SUPPORT, f"verifyType {request.verify_type}: this wallet only texts codes"
                )
            )
        user = self._users.get(owner.customer_id)
        if user is None or not user.phone:
            return SendOtpResponse(result=Result.of(ResultCode.USER_NOT_EXIST))
        key, now = challenge_key(owner), self._clock()
        challenge_id = uuid.uuid4().hex
        code = otp_code(self._secret_key, challenge_id)
        with self._engine.begin() as connection:  # SQLite: BEGIN IMMEDIATE, so the check and insert are one
            _serialise(connection, key)
            refusal = self._too_frequent(connection, key, now)
            if refusal is not None:
                return SendOtpResponse(result=Result.of(ResultCode.OTP_SEND_TOO_FREQUENTLY, refusal))
            connection.execute(
                insert(OtpChallenge).values(
                    id=challenge_id,
                    payment_request_id=key,
                    customer_id=owner.customer_id,
                    code_digest=keyed_digest(self._secret_key, "otp", challenge_id, code),
                    expires_at=now + self._otp_ttl,
                    created_at=now,
                )
            )
        try:
            self._sms.send(
                user.phone,
                f"{code} is your code to confirm a payment with a merchant you authorised. It expires in "
                f"{max(int(self._otp_ttl.total_seconds() // 60), 1)} minutes. Never share it.",
                challenge_id,
            )
        except Exception:  # not sent: it neither counts nor holds the gap (the API answers U; Alipay+ retries)
            with self._engine.begin() as connection:
                connection.execute(delete(OtpChallenge).where(col(OtpChallenge.id) == challenge_id))
            raise
        with self._engine.begin() as connection:  # only the newest code of the agreement is live
            connection.execute(
                update(OtpChallenge)
                .where(
                    col(OtpChallenge.payment_request_id) == key,
                    col(OtpChallenge.id) != challenge_id,
                    col(OtpChallenge.expires_at) > now,
                )
                .values(expires_at=now)
            )
        log.info("risk challenge %s sent for %s", challenge_id, key)
        return SendOtpResponse(result=Result.success(), verify_request_id=challenge_id)

    def _too_frequent(self, connection: Connection, key: str, now: datetime) -> str | None:
        """Why another code may not be sent now, or None."""
        day_start = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
        sent_today, last = connection.execute(
            select(
                func.count().filter(col(OtpChallenge.created_at) >= day_start),
                func.max(col(OtpChallenge.created_at)),
            ).where(col(OtpChallenge.payment_request_id) == key)
        ).one()
        if sent_today >= self._daily_limit:
            return f"At most {self._daily_limit} OTPs a day (UTC) for this access token; try again tomorrow"
        if last is not None:
            last = last if last.tzinfo else last.replace(tzinfo=UTC)  # an aggregate skips UtcDateTime
            wait = last + self._resend_gap - now
            if wait > timedelta(0):
                gap, left = int(self._resend_gap.total_seconds()), int(-(-wait.total_seconds() // 1))
                return f"An OTP was sent less than {gap} s ago; try again in {left} s"
        return None

    # --- verifyOtp -------------------------------------------------------------------------------

    def verify(self, request: VerifyOtpRequest) -> VerifyOtpResponse:
        """Check the typed code against the token user's live challenge; a right code verifies once."""
        owner = self._agreements.token_owner(request.access_token)
        if owner.result_code is not ResultCode.SUCCESS or owner.customer_id is None:
            return VerifyOtpResponse(result=Result.of(owner.result_code))
        challenge_id, now = request.verify_request_id, self._clock()
        with Session(reader(self._engine)) as session:
            challenge = session.get(OtpChallenge, challenge_id)
            failures = session.execute(
                select(func.count()).where(
                    col(CredentialFailure.attempt_key).startswith(f"{CHANNEL}/{challenge_id}/", autoescape=True),
                    col(CredentialFailure.subject) == customer_subject(owner.customer_id),
                )
            ).scalar_one()
        code_digest = keyed_digest(self._secret_key, "otp", challenge_id, request.otp_code)
        if (
            challenge is not None
            and challenge.payment_request_id == challenge_key(owner)
            and challenge.customer_id == owner.customer_id
            and _verified_with(challenge, code_digest)
        ):  # Alipay+ asking again after a lost answer: the same answer
            return VerifyOtpResponse(result=Result.success())
        if (
            challenge is None
            or challenge.payment_request_id != challenge_key(owner)
            or challenge.customer_id != owner.customer_id
            or challenge.expires_at <= now
        ):  # unknown, another agreement's or user's, used or expired: all answered alike
            return VerifyOtpResponse(result=Result.of(ResultCode.OTP_EXPIRED))
        if failures >= self._attempts_per_code:
            return VerifyOtpResponse(
                result=Result.of(
                    ResultCode.USER_PAYMENT_VERIFICATION_FAILED, "Too many wrong codes for this request; send a new OTP"
                )
            )
        attempt_digest = keyed_digest(self._secret_key, "risk-attempt", challenge_id, request.otp_code)
        attempt = self._credentials.check_otp(
            owner.customer_id,
            challenge_id,
            code_digest,
            f"{CHANNEL}/{challenge_id}/{attempt_digest[:32]}",  # the same code retried is counted once
            CHANNEL,
        )
        if attempt.verdict in (Verdict.WAIT, Verdict.LOCKED):
            return VerifyOtpResponse(
                result=Result.of(
                    ResultCode.USER_PAYMENT_VERIFICATION_FAILED,
                    f"Too many wrong codes for this user; try again in {attempt.retry_after_seconds} s",
                )
            )
        if attempt.verdict is not Verdict.RIGHT:
            return VerifyOtpResponse(
                result=Result.of(ResultCode.USER_PAYMENT_VERIFICATION_FAILED, "The OTP code is wrong")
            )
        with self._engine.begin() as connection:  # single use: whoever expires it first verified it
            used = connection.execute(
                update(OtpChallenge)
                .where(
                    col(OtpChallenge.id) == challenge_id,
                    col(OtpChallenge.expires_at) > now,
                    col(OtpChallenge.verified_at).is_(None),
                )
                .values(expires_at=now, verified_at=now)
            ).rowcount
        if used != 1:  # a concurrent verify got there first: the same answer if it was this code
            with Session(self._engine) as session:
                again = session.get(OtpChallenge, challenge_id)
            if again is None or not _verified_with(again, code_digest):
                return VerifyOtpResponse(result=Result.of(ResultCode.OTP_EXPIRED))
        log.info("risk challenge %s verified", challenge_id)
        return VerifyOtpResponse(result=Result.success())


def _verified_with(challenge: OtpChallenge, code_digest: str) -> bool:
    """The challenge was verified, with this very code."""
    return challenge.verified_at is not None and hmac.compare_digest(challenge.code_digest, code_digest)


def _serialise(connection: Connection, key: str) -> None:
    """Hold ``key``'s sends one at a time until the transaction ends (SQLite's BEGIN IMMEDIATE
    already serialises writers; PostgreSQL takes a transaction-scoped advisory lock)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
