"""Agreements: a merchant's standing authorisation to charge one of our users without them.

Two ways in: Easy Pay's one-click consent (seed 004, the token goes out in authNotify
TOKEN_CREATED) and the Auto Debit binding (spec §7.3: ``prepare`` answers our consent page's URL,
the signed-in user consents, authNotify AUTHCODE_CREATED carries the authCode, ``applyToken``
exchanges it). Two ways out (spec §7.2): ``cancelToken`` from Alipay+, or the user unbinding in the
app (then authNotify TOKEN_CANCELED). A revoked agreement's every token, access and refresh, is dead.

Short conditional writes answered while the caller waits, like ``wallet.oauth``: a retry or a race
never binds, issues or revokes twice. Tokens and authCodes are derived from the agreement or pair
id with the server secret, so a notice can be re-sent byte-identical while only digests are stored.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel
from sqlalchemy import Engine, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from alipayplus import (
    AuthNotifyRequest,
    AuthorizationNotifyType,
    CancelTokenRequest,
    CancelTokenResponse,
    ConsultUnbindingRequest,
    PrepareRequest,
    PrepareResponse,
    Result,
    ResultCode,
    Scope,
)

from .records import AccessToken, Agreement, AgreementStatus, AuthCode, OAuthToken
from .secrets import derive_token, token_digest

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Origin(StrEnum):
    AUTO_DEBIT = "AUTO_DEBIT"  # bound through prepare and our consent page
    EASY_PAY = "EASY_PAY"  # Easy Pay's one-click consent on pay #2


class CancelledBy(StrEnum):
    MERCHANT = "MERCHANT"  # cancelToken
    USER = "USER"  # the wallet app


def scopes_of(text: str) -> set[str]:
    """Stored scopes are space-separated; the app's authCode request may use commas."""
    return {scope for scope in text.replace(",", " ").split() if scope}


def auth_code_for(secret_key: bytes, agreement_id: str) -> str:
    """The binding's authCode: 32 characters (the seed's limit), derived so AUTHCODE_CREATED can be re-sent."""
    return hmac.new(secret_key, f"authcode:agreement:{agreement_id}".encode(), "sha256").hexdigest()[:32].upper()


def easy_pay_agreement_id(access_token: str) -> str:
    """An Easy Pay consent's agreement id: as migration 0009 named the ones before it."""
    return token_digest(access_token)[:32]


@dataclass(frozen=True)
class TokenOwner:
    """Whose access token a payment carries, under which agreement, or why it cannot be used."""

    result_code: ResultCode
    customer_id: str | None = None
    agreement_id: str | None = None


class AgreementView(BaseModel):
    """What the user sees of an agreement (the consent page, the app's list), and what its
    notices name."""

    agreement_id: str
    merchant_name: str
    scopes: list[str]
    origin: Origin
    status: AgreementStatus
    customer_id: str | None
    created_at: datetime
    authorized_at: datetime | None
    auth_client_id: str
    reference_agreement_id: str
    acquirer_id: str | None
    psp_id: str | None


class UnbindRequest(BaseModel):
    """The user asks, in the app, to unbind one of their agreements."""

    agreement_id: str
    customer_id: str
    consult: bool = False  # ask Alipay+ first (consultUnbinding): settings.consult_unbinding


class UnbindOutcome(StrEnum):
    UNBOUND = "UNBOUND"  # revoked; TOKEN_CANCELED is on its way to Alipay+
    REFUSED = "REFUSED"  # the merchant does not allow unbinding from our side: unbind with the merchant
    UNANSWERED = "UNANSWERED"  # Alipay+ never answered consultUnbinding (the give-up): nothing changed
    NOT_FOUND = "NOT_FOUND"  # no such bound agreement of this user's (unbound already, or never theirs)


@dataclass(frozen=True)
class Consented:
    """The user consented: where their browser goes next (the merchant's authRedirectUrl)."""

    redirect_url: str
    auth_code: str


class ConsentRefused(StrEnum):
    NOT_FOUND = "not-found"  # no such agreement waiting for consent (or it is another user's)
    ALREADY_DECIDED = "already-decided"  # consented or cancelled already


@dataclass(frozen=True)
class Revoked:
    changed: bool  # this call revoked it (False: it was revoked already)
    agreement_id: str


class Agreements:
    """prepare, consent, token checks, cancelToken and unbinding, over the agreement records."""

    def __init__(
        self,
        engine: Engine,
        secret_key: bytes,
        consent_page_url: str = "",
        auth_code_ttl: timedelta = timedelta(minutes=5),
        clock: Clock = _utc_now,
    ) -> None:
        self._engine, self._secret_key, self._consent_page_url = engine, secret_key, consent_page_url
        self._auth_code_ttl, self._clock = auth_code_ttl, clock

    # --- binding (spec §7.3) ----------------------------------------------------------------

    def prepare(self, request: PrepareRequest) -> PrepareResponse:
        """The consent page's URL for this agreement; the same for a repeat with the same key fields."""
        digest = request.key_fields_digest()
        with Session(self._engine, expire_on_commit=False) as session:  # found is read after
            found = self._by_reference(session, request.auth_client_id, request.reference_agreement_id)
            if found is None:
                found = Agreement(
                    id=uuid.uuid4().hex,
                    auth_client_id=request.auth_client_id,
                    reference_agreement_id=request.reference_agreement_id,
                    origin=Origin.AUTO_DEBIT,
                    status=AgreementStatus.PREPARED,
                    scopes=" ".join(sorted(scope.value for scope in request.scopes)),
                    auth_client_name=request.auth_client_display_name or request.auth_client_name,
                    reference_merchant_id=request.reference_merchant_id,
                    auth_redirect_url=request.auth_redirect_url,
                    auth_state=request.auth_state,
                    request_digest=digest,
                    acquirer_id=request.acquirer_id,
                    psp_id=request.psp_id,
                    created_at=self._clock(),
                )
                session.add(found)
                try:
                    session.commit()
                except IntegrityError:  # a concurrent prepare of the same agreement won: answer as its repeat
                    session.rollback()
                    found = self._by_reference(session, request.auth_client_id, request.reference_agreement_id)
                    if found is None:
                        raise
        if found.request_digest != digest:
            return PrepareResponse(result=Result.of(ResultCode.REPEAT_REQ_INCONSISTENT))
        if found.status == AgreementStatus.CANCELLED:
            return PrepareResponse(
                result=Result.of(ResultCode.PARAM_ILLEGAL, "referenceAgreementId: this agreement was cancelled")
            )
        return PrepareResponse(result=Result.success(), auth_url=f"{self._consent_page_url}/{found.id}")

    def view(self, agreement_id: str) -> AgreementView | None:
        with Session(self._engine) as session:
            found = session.get(Agreement, agreement_id)
        return _view(found) if found is not None else None

    def consent(self, agreement_id: str, customer_id: str) -> Consented | ConsentRefused:
        """The signed-in user authorises the merchant: one authCode, once (a conditional update)."""
        now = self._clock()
        with Session(self._engine) as session:
            claimed = session.connection().execute(
                update(Agreement)
                .where(
                    col(Agreement.id) == agreement_id,
                    col(Agreement.status) == AgreementStatus.PREPARED,
                    col(Agreement.origin) == Origin.AUTO_DEBIT,
                )
                .values(status=AgreementStatus.AUTHORIZED, customer_id=customer_id, authorized_at=now)
            )
            found = session.get(Agreement, agreement_id)
            if found is None or found.origin != Origin.AUTO_DEBIT:
                return ConsentRefused.NOT_FOUND
            if claimed.rowcount != 1:
                session.rollback()
                if found.status == AgreementStatus.AUTHORIZED and found.customer_id == customer_id:
                    return self._consented(found)  # the same user again (a second press, a reload)
                return ConsentRefused.ALREADY_DECIDED
            code = auth_code_for(self._secret_key, agreement_id)
            session.add(
                AuthCode(
                    code_digest=token_digest(code),
                    customer_id=customer_id,
                    scopes=found.scopes,
                    expires_at=now + self._auth_code_ttl,
                    agreement_id=agreement_id,
                    created_at=now,
                )
            )
            session.commit()
            return self._consented(found)

    def _consented(self, agreement: Agreement) -> Consented:
        code = auth_code_for(self._secret_key, agreement.id)
        redirect = _with_query(agreement.auth_redirect_url or "", authCode=code, authState=agreement.auth_state or "")
        return Consented(redirect_url=redirect, auth_code=code)

    # --- paying with a token (spec §2.1) ------------------------------------------------------

    def token_owner(self, access_token: str, scope: Scope = Scope.AGREEMENT_PAY) -> TokenOwner:
        """The customer an agreement token stands for: ours, live, not revoked, with ``scope``."""
        digest = token_digest(access_token)
        now = self._clock()
        with Session(self._engine) as session:
            pair = session.exec(select(OAuthToken).where(col(OAuthToken.access_token_digest) == digest)).first()
            if pair is not None:
                dead = pair.revoked_at is not None or pair.retired_at is not None
                scopes, expires_at = scopes_of(pair.scopes), pair.access_token_expires_at
                customer_id, agreement_id = pair.customer_id, pair.agreement_id
            else:
                consent = session.get(AccessToken, digest)
                if consent is None:
                    return TokenOwner(ResultCode.INVALID_TOKEN)
                dead = consent.revoked_at is not None
                scopes, expires_at = {Scope.AGREEMENT_PAY.value}, consent.access_token_expires_at
                customer_id, agreement_id = consent.customer_id, consent.agreement_id
            agreement = session.get(Agreement, agreement_id) if agreement_id else None
        if dead or (agreement is not None and agreement.status == AgreementStatus.CANCELLED):
            return TokenOwner(ResultCode.INVALID_TOKEN, customer_id, agreement_id)
        if scope.value not in scopes:
            return TokenOwner(ResultCode.INVALID_TOKEN, customer_id, agreement_id)
        if expires_at <= now:
            return TokenOwner(ResultCode.EXPIRED_ACCESS_TOKEN, customer_id, agreement_id)
        return TokenOwner(ResultCode.SUCCESS, customer_id, agreement_id)

    # --- revocation (spec §7.2) -----------------------------------------------------------------

    def cancel_token(self, request: CancelTokenRequest) -> CancelTokenResponse:
        """The merchant unbound: the token's agreement (or, without one, the pair) is revoked.
        Idempotent on accessToken: a token revoked already answers SUCCESS again."""
        digest = token_digest(request.access_token)
        with Session(self._engine) as session:
            pair = session.exec(select(OAuthToken).where(col(OAuthToken.access_token_digest) == digest)).first()
            consent = session.get(AccessToken, digest) if pair is None else None
        agreement_id = pair.agreement_id if pair is not None else consent.agreement_id if consent else None
        if agreement_id is not None:
            self.revoke(agreement_id, CancelledBy.MERCHANT)
        elif pair is not None:
            self._revoke_pair_chain(pair.id)
        elif consent is not None:
            with self._engine.begin() as connection:
                connection.execute(
                    update(AccessToken)
                    .where(col(AccessToken.token_digest) == digest, col(AccessToken.revoked_at).is_(None))
                    .values(revoked_at=self._clock())
                )
        else:
            return CancelTokenResponse(result=Result.of(ResultCode.INVALID_TOKEN))
        return CancelTokenResponse(result=Result.success())

    def revoke(self, agreement_id: str, by: CancelledBy) -> Revoked:
        """Cancel the agreement and kill every token of it, in one transaction."""
        now = self._clock()
        with self._engine.begin() as connection:
            cancelled = connection.execute(
                update(Agreement)
                .where(col(Agreement.id) == agreement_id, col(Agreement.status) != AgreementStatus.CANCELLED)
                .values(status=AgreementStatus.CANCELLED, cancelled_at=now, cancelled_by=by)
            ).rowcount
            connection.execute(
                update(OAuthToken)
                .where(col(OAuthToken.agreement_id) == agreement_id, col(OAuthToken.revoked_at).is_(None))
                .values(revoked_at=now, retired_at=func.coalesce(col(OAuthToken.retired_at), now))
            )
            connection.execute(
                update(AccessToken)
                .where(col(AccessToken.agreement_id) == agreement_id, col(AccessToken.revoked_at).is_(None))
                .values(revoked_at=now)
            )
        return Revoked(changed=cancelled == 1, agreement_id=agreement_id)

    def _revoke_pair_chain(self, pair_id: str) -> None:
        """A pair without an agreement (an MPM login's): it and every pair refreshed from it."""
        now = self._clock()
        with Session(self._engine) as session:
            chain: list[str] = []
            current: str | None = pair_id
            while current is not None and current not in chain:
                chain.append(current)
                pair = session.get(OAuthToken, current)
                current = pair.successor_id if pair is not None else None
            session.connection().execute(
                update(OAuthToken)
                .where(col(OAuthToken.id).in_(chain), col(OAuthToken.revoked_at).is_(None))
                .values(revoked_at=now, retired_at=func.coalesce(col(OAuthToken.retired_at), now))
            )
            session.commit()

    # --- the user's agreements (the wallet app) ---------------------------------------------------

    def of_customer(self, customer_id: str) -> list[AgreementView]:
        """The user's agreements a merchant may still use (bound, or consented and not yet exchanged)."""
        with Session(self._engine) as session:
            found = session.exec(
                select(Agreement)
                .where(
                    col(Agreement.customer_id) == customer_id,
                    or_(
                        col(Agreement.status) == AgreementStatus.ACTIVE,
                        col(Agreement.status) == AgreementStatus.AUTHORIZED,
                    ),
                )
                .order_by(col(Agreement.created_at))
            ).all()
        return [_view(agreement) for agreement in found]

    def owned(self, agreement_id: str, customer_id: str) -> AgreementView | None:
        """The agreement, if it is this user's (an id of someone else's is as good as unknown)."""
        view = self.view(agreement_id)
        return view if view is not None and view.customer_id == customer_id else None

    # --- what authNotify and consultUnbinding carry (spec §8) ----------------------------------------

    def notice(self, agreement_id: str, notify_type: AuthorizationNotifyType) -> AuthNotifyRequest:
        """AUTHCODE_CREATED (the code, the prepare's authState) or TOKEN_CANCELED: the same body every time."""
        with Session(self._engine) as session:
            found = session.get(Agreement, agreement_id)
        if found is None:
            raise LookupError(f"no agreement {agreement_id}")
        authcode = notify_type is AuthorizationNotifyType.AUTHCODE_CREATED
        return AuthNotifyRequest(
            authorization_notify_type=notify_type,
            auth_client_id=found.auth_client_id,
            reference_merchant_id=found.reference_merchant_id,
            reference_agreement_id=found.reference_agreement_id,
            auth_code=auth_code_for(self._secret_key, agreement_id) if authcode else None,
            auth_state=found.auth_state if authcode else None,
            customer_id=found.customer_id,
            acquirer_id=found.acquirer_id,
            psp_id=found.psp_id,
        )

    def consult_request(self, agreement_id: str) -> ConsultUnbindingRequest:
        """consultUnbinding names the agreement by its live access token (derived, never stored)."""
        with Session(self._engine) as session:
            found = session.get(Agreement, agreement_id)
            if found is None:
                raise LookupError(f"no agreement {agreement_id}")
            if found.origin == Origin.EASY_PAY:
                access_token = derive_token(self._secret_key, "access", found.reference_agreement_id)
            else:
                pair = session.exec(
                    select(OAuthToken)
                    .where(col(OAuthToken.agreement_id) == agreement_id)
                    .order_by(col(OAuthToken.created_at).desc())
                ).first()
                access_token = derive_token(self._secret_key, "access", f"oauth:{pair.id}") if pair else ""
        return ConsultUnbindingRequest(
            auth_client_id=found.auth_client_id,
            reference_merchant_id=(found.reference_merchant_id or found.auth_client_id)[:32],
            access_token=access_token or "-",
        )

    @staticmethod
    def _by_reference(session: Session, auth_client_id: str, reference_agreement_id: str) -> Agreement | None:
        return session.exec(
            select(Agreement).where(
                col(Agreement.auth_client_id) == auth_client_id,
                col(Agreement.reference_agreement_id) == reference_agreement_id,
            )
        ).first()


def _view(agreement: Agreement) -> AgreementView:
    return AgreementView(
        agreement_id=agreement.id,
        merchant_name=agreement.auth_client_name or agreement.auth_client_id,
        scopes=sorted(scopes_of(agreement.scopes)),
        origin=Origin(agreement.origin),
        status=AgreementStatus(agreement.status),
        customer_id=agreement.customer_id,
        created_at=agreement.created_at,
        authorized_at=agreement.authorized_at,
        auth_client_id=agreement.auth_client_id,
        reference_agreement_id=agreement.reference_agreement_id,
        acquirer_id=agreement.acquirer_id,
        psp_id=agreement.psp_id,
    )


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return urlunsplit(parts._replace(query=query))
