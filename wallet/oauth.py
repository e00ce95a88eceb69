"""Logins, authCodes and the token pairs applyToken hands Alipay+ (seed 003, step 1).

Short single-row transactions answered while the caller waits, so the API calls them
directly (in a thread) rather than through a workflow: there is nothing to resume after a
crash, and every write is conditional, so a retry or a race can never issue twice.
Secrets are stored as digests only: session tokens and authCodes are random, token pairs
are derived from their row id with the server secret (so a replayed refresh can be given
the same new pair without ever storing it).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from alipayplus import ApplyTokenRequest, ApplyTokenResponse, GrantType, Result, ResultCode

from .credentials import Attempt, Credentials, Verdict
from .records import Agreement, AgreementStatus, AppSession, AuthCode, OAuthToken
from .secrets import derive_token, token_digest

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IssuedSession:
    token: str
    customer_id: str
    expires_at: datetime


@dataclass(frozen=True)
class IssuedAuthCode:
    auth_code: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenOwner:
    """Whose access token a payment carries, or why it cannot be used."""

    result_code: ResultCode
    customer_id: str | None = None


class AppSessions:
    """The wallet app's logins: loginId + PIN gives a bearer token for the app-facing API."""

    def __init__(self, engine: Engine, credentials: Credentials, ttl: timedelta, clock: Clock = _utc_now) -> None:
        self._engine, self._credentials, self._ttl, self._clock = engine, credentials, ttl, clock

    def login(self, login_id: str, pin: str, address: str | None) -> IssuedSession | Attempt:
        """A session, or the attempt that refused one: WRONG for an unknown login or a wrong PIN (the
        caller cannot tell which), WAIT or LOCKED after too many (``Credentials``)."""
        attempt = self._credentials.login(login_id, pin, address)
        if attempt.verdict is not Verdict.RIGHT or attempt.customer_id is None:
            return attempt
        token = secrets.token_urlsafe(32)
        expires_at = self._clock() + self._ttl
        with Session(self._engine) as session:
            session.add(
                AppSession(token_digest=token_digest(token), customer_id=attempt.customer_id, expires_at=expires_at)
            )
            session.commit()
        return IssuedSession(token=token, customer_id=attempt.customer_id, expires_at=expires_at)

    def customer_of(self, token: str) -> str | None:
        """The customer a live session token belongs to."""
        with Session(self._engine) as session:
            found = session.get(AppSession, token_digest(token))
        if found is None or found.revoked_at is not None or found.expires_at <= self._clock():
            return None
        return found.customer_id

    def logout(self, token: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                update(AppSession)
                .where(col(AppSession.token_digest) == token_digest(token), col(AppSession.revoked_at).is_(None))
                .values(revoked_at=self._clock())
            )


@dataclass(frozen=True)
class TokenLifetimes:
    auth_code: timedelta
    access_token: timedelta
    refresh_token: timedelta
    refresh_replay_grace: timedelta = timedelta(minutes=5)


class Authorizations:
    """authCodes for Alipay+'s client SDK, and applyToken's token pairs."""

    def __init__(
        self,
        engine: Engine,
        secret_key: bytes,
        lifetimes: TokenLifetimes,
        clock: Clock = _utc_now,
        agreement_lifetimes: TokenLifetimes | None = None,
    ) -> None:
        self._engine, self._secret_key, self._lifetimes, self._clock = engine, secret_key, lifetimes, clock
        # an Auto Debit binding's pairs live as long as agreement tokens do (settings.access_token_ttl, …)
        self._agreement_lifetimes = agreement_lifetimes or lifetimes

    def issue_auth_code(self, customer_id: str, scopes: str) -> IssuedAuthCode:
        code = secrets.token_hex(16).upper()  # 32 characters, the seed's limit
        expires_at = self._clock() + self._lifetimes.auth_code
        with Session(self._engine) as session:
            session.add(
                AuthCode(code_digest=token_digest(code), customer_id=customer_id, scopes=scopes, expires_at=expires_at)
            )
            session.commit()
        return IssuedAuthCode(auth_code=code, expires_at=expires_at)

    def apply_token(self, request: ApplyTokenRequest) -> ApplyTokenResponse:
        if request.grant_type is GrantType.AUTHORIZATION_CODE:
            return self._exchange_auth_code(request.auth_code or "")
        return self._refresh(request.refresh_token or "")

    # --- grants ---------------------------------------------------------------------------

    def _exchange_auth_code(self, auth_code: str) -> ApplyTokenResponse:
        now = self._clock()
        digest = token_digest(auth_code)
        with Session(self._engine) as session:
            claimed = session.connection().execute(  # single use: only one caller flips used_at
                update(AuthCode)
                .where(
                    col(AuthCode.code_digest) == digest,
                    col(AuthCode.used_at).is_(None),
                    col(AuthCode.expires_at) > now,
                )
                .values(used_at=now)
            )
            code = session.get(AuthCode, digest)
            if claimed.rowcount != 1 or code is None:
                return _refused(_why_unusable(code, now))
            if code.agreement_id is not None:  # an Auto Debit binding: its agreement becomes active
                bound = session.connection().execute(
                    update(Agreement)
                    .where(col(Agreement.id) == code.agreement_id, col(Agreement.status) == AgreementStatus.AUTHORIZED)
                    .values(status=AgreementStatus.ACTIVE)
                )
                if bound.rowcount != 1:  # revoked between the consent and the exchange
                    session.rollback()
                    return _refused(ResultCode.INVALID_CODE)
            pair = self._new_pair(code.customer_id, code.scopes, now, code.agreement_id)
            session.add(pair)
            session.commit()
            return self._answer(pair)

    def _refresh(self, refresh_token: str) -> ApplyTokenResponse:
        now = self._clock()
        with Session(self._engine) as session:
            old = session.exec(
                select(OAuthToken).where(col(OAuthToken.refresh_token_digest) == token_digest(refresh_token))
            ).first()
            if old is None:
                return _refused(ResultCode.INVALID_REFRESH_TOKEN)
            if old.retired_at is not None:
                return self._replayed(session, old, now)
            if old.refresh_token_expires_at <= now:
                return _refused(ResultCode.EXPIRED_REFRESH_TOKEN)
            new = self._new_pair(old.customer_id, old.scopes, now, old.agreement_id)
            retired = session.connection().execute(  # only one refresh of a pair wins
                update(OAuthToken)
                .where(col(OAuthToken.id) == old.id, col(OAuthToken.retired_at).is_(None))
                .values(retired_at=now, successor_id=new.id)
            )
            if retired.rowcount != 1:  # a concurrent refresh won: answer with its pair
                session.rollback()
                session.refresh(old)
                return self._replayed(session, old, now)
            session.add(new)
            session.commit()
            return self._answer(new)

    def _replayed(self, session: Session, old: OAuthToken, now: datetime) -> ApplyTokenResponse:
        """The same old refresh token again: within the grace period, the pair it was swapped for."""
        grace_over = old.retired_at is None or now - old.retired_at > self._lifetimes.refresh_replay_grace
        successor = session.get(OAuthToken, old.successor_id) if old.successor_id and not grace_over else None
        if successor is None or successor.retired_at is not None:  # its pair has been refreshed in turn
            return _refused(ResultCode.INVALID_REFRESH_TOKEN)
        return self._answer(successor)

    def _new_pair(self, customer_id: str, scopes: str, now: datetime, agreement_id: str | None = None) -> OAuthToken:
        pair_id = uuid.uuid4().hex
        access_token, refresh_token = self._tokens(pair_id)
        lifetimes = self._agreement_lifetimes if agreement_id else self._lifetimes
        return OAuthToken(
            id=pair_id,
            access_token_digest=token_digest(access_token),
            refresh_token_digest=token_digest(refresh_token),
            customer_id=customer_id,
            scopes=scopes,
            access_token_expires_at=now + lifetimes.access_token,
            refresh_token_expires_at=now + lifetimes.refresh_token,
            agreement_id=agreement_id,
        )

    def _tokens(self, pair_id: str) -> tuple[str, str]:
        return (
            derive_token(self._secret_key, "access", f"oauth:{pair_id}"),
            derive_token(self._secret_key, "refresh", f"oauth:{pair_id}"),
        )

    def _answer(self, pair: OAuthToken) -> ApplyTokenResponse:
        access_token, refresh_token = self._tokens(pair.id)
        return ApplyTokenResponse(
            result=Result.success(),
            access_token=access_token,
            access_token_expiry_time=pair.access_token_expires_at,
            refresh_token=refresh_token,
            refresh_token_expiry_time=pair.refresh_token_expires_at,
            customer_id=pair.customer_id,
        )


def access_token_owner(engine: Engine, access_token: str, now: datetime) -> TokenOwner:
    """The customer an access token stands for; unknown and retired tokens are invalid."""
    with Session(engine) as session:
        pair = session.exec(
            select(OAuthToken).where(col(OAuthToken.access_token_digest) == token_digest(access_token))
        ).first()
    if pair is None or pair.retired_at is not None:
        return TokenOwner(ResultCode.INVALID_TOKEN)
    if pair.access_token_expires_at <= now:
        return TokenOwner(ResultCode.EXPIRED_ACCESS_TOKEN, pair.customer_id)
    return TokenOwner(ResultCode.SUCCESS, pair.customer_id)


def _why_unusable(code: AuthCode | None, now: datetime) -> ResultCode:
    if code is None:
        return ResultCode.INVALID_CODE
    if code.used_at is not None:
        return ResultCode.USED_CODE
    return ResultCode.EXPIRED_CODE if code.expires_at <= now else ResultCode.INVALID_CODE


def _refused(code: ResultCode) -> ApplyTokenResponse:
    return ApplyTokenResponse(result=Result.of(code))
