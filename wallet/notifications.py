"""Activities that tell Alipay+ something: notifyPayment and authNotify.

Each makes one signed call and reports how Alipay+ answered; the calling workflow owns
the retry schedule, so retries survive worker restarts as durable timers. Every attempt is
the same message: the payment's notice is fixed when the payment ends, and authNotify's tokens
are derived from the agreement id and stored once, so a repeat after a lost answer is harmless.

Each call is timed and, when the caller names the attempt (the activity's workflow run and
activity id), recorded in the delivery log (``wallet.delivery_log``) and counted in the metrics,
once per attempt. The log is for operators: failing to write it never changes the delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import Engine
from sqlmodel import Session, select

from alipayplus import (
    AuthNotifyRequest,
    AuthNotifyResponse,
    AuthorizationNotifyType,
    NotifyPaymentRequest,
    NotifyPaymentResponse,
    ResultStatus,
    Scope,
    SignedClient,
    TransportError,
)
from wallet.agreements import Agreements, Origin, easy_pay_agreement_id
from wallet.deliveries import AuthorizationGrant, Delivery, DeliveryReport
from wallet.delivery_log import AUTH_NOTIFY, NO_ANSWER, NOTIFY_PAYMENT, Attempt, AttemptKey, DeliveryLog
from wallet.records import AccessToken, Agreement, AgreementStatus
from wallet.secrets import derive_token, token_digest
from wallet.telemetry.metrics import DELIVERY_ATTEMPT_LATENCY, DELIVERY_ATTEMPTS

log = logging.getLogger(__name__)
Answer = TypeVar("Answer", NotifyPaymentResponse, AuthNotifyResponse)


def _report(status: ResultStatus, code: str) -> DeliveryReport:
    delivery = {
        ResultStatus.SUCCESS: Delivery.ACKNOWLEDGED,
        ResultStatus.FAIL: Delivery.REJECTED,
        ResultStatus.UNKNOWN: Delivery.UNKNOWN,
    }[status]
    return DeliveryReport(delivery=delivery, detail=f"{status}/{code}")


@dataclass(frozen=True)
class Sent:
    """One signed call: what the workflow is told, and what the delivery log keeps of it."""

    report: DeliveryReport
    answer: str  # S, F, U or NO_ANSWER
    result_code: str | None
    sent_at: datetime
    seconds: float


@dataclass
class Notifications:
    alipayplus: SignedClient
    engine: Engine
    secret_key: bytes
    access_token_ttl: timedelta
    refresh_token_ttl: timedelta

    delivery_log: DeliveryLog | None = None  # None: the log in ``engine``

    def __post_init__(self) -> None:
        if self.delivery_log is None:
            self.delivery_log = DeliveryLog(self.engine)

    async def send_payment_notice(
        self, request: NotifyPaymentRequest, attempt: AttemptKey | None = None
    ) -> DeliveryReport:
        """Send the payment's notice once; with ``attempt``, record the call as that attempt."""
        return await self._send(NOTIFY_PAYMENT, NotifyPaymentRequest.PATH, request, NotifyPaymentResponse, attempt)

    async def send_auth_notice(self, grant: AuthorizationGrant, attempt: AttemptKey | None = None) -> DeliveryReport:
        """Issue (once) and send the agreement's tokens, or its authCode or cancellation; with ``attempt``,
        record the call (never the tokens or the code)."""
        if grant.notify_type is AuthorizationNotifyType.TOKEN_CREATED:
            request = await asyncio.to_thread(self._issue_tokens, grant)
        else:
            agreements = Agreements(self.engine, self.secret_key)
            request = await asyncio.to_thread(agreements.notice, grant.agreement_id or "", grant.notify_type)
        return await self._send(AUTH_NOTIFY, AuthNotifyRequest.PATH, request, AuthNotifyResponse, attempt)

    async def _send(
        self,
        kind: str,
        path: str,
        request: NotifyPaymentRequest | AuthNotifyRequest,
        response_type: type[Answer],
        attempt: AttemptKey | None,
    ) -> DeliveryReport:
        sent_at, started = datetime.now(UTC), time.perf_counter()
        try:
            response = await self.alipayplus.call(path, request, response_type)
        except TransportError as exc:
            report = DeliveryReport(delivery=Delivery.UNKNOWN, detail=str(exc))
            sent = Sent(report, NO_ANSWER, None, sent_at, time.perf_counter() - started)
        except asyncio.CancelledError:
            # The attempt's timeout, or the worker stopping: the workflow counts it as unanswered, and so
            # does the log. Written at once: a cancelled task must not wait for a thread.
            if attempt is not None:
                gone = DeliveryReport(delivery=Delivery.UNKNOWN, detail="no answer: the attempt was cancelled")
                self._log(kind, attempt, Sent(gone, NO_ANSWER, None, sent_at, time.perf_counter() - started))
            raise
        else:
            result = response.result
            report = _report(result.result_status, result.result_code)
            sent = Sent(report, result.result_status.value, result.result_code, sent_at, time.perf_counter() - started)
        if attempt is not None:
            await asyncio.to_thread(self._log, kind, attempt, sent)  # a write may wait for SQLite's lock
        return sent.report

    def _log(self, kind: str, attempt: AttemptKey, sent: Sent) -> None:
        """Record the attempt and, the first time only, count it; a failure is a warning, nothing more."""
        assert self.delivery_log is not None  # set in __post_init__
        try:
            new = self.delivery_log.record(
                Attempt(
                    delivery_id=attempt.delivery_id,
                    kind=kind,
                    run_id=attempt.run_id,
                    activity_id=attempt.activity_id,
                    attempted_at=sent.sent_at,
                    answer=sent.answer,
                    result_code=sent.result_code,
                    detail=sent.report.detail,
                    latency_ms=round(sent.seconds * 1000),
                )
            )
        except Exception:
            log.warning(
                "%s: could not record delivery attempt %s", attempt.delivery_id, attempt.activity_id, exc_info=True
            )
            return
        if new:
            DELIVERY_ATTEMPTS.labels(kind=kind, answer=sent.answer).inc()
            DELIVERY_ATTEMPT_LATENCY.labels(kind=kind).observe(sent.seconds)

    def _issue_tokens(self, grant: AuthorizationGrant) -> AuthNotifyRequest:
        """Store the token pair for the agreement once (digests only) and build the notice."""
        access_token = derive_token(self.secret_key, "access", grant.reference_agreement_id)
        refresh_token = derive_token(self.secret_key, "refresh", grant.reference_agreement_id)
        with Session(self.engine) as session:
            stored = session.exec(
                select(AccessToken).where(AccessToken.reference_agreement_id == grant.reference_agreement_id)
            ).first()
            if stored is None:
                now = datetime.now(UTC).replace(microsecond=0)
                agreement_id = easy_pay_agreement_id(access_token)
                if session.get(Agreement, agreement_id) is None:
                    session.add(
                        Agreement(
                            id=agreement_id,
                            auth_client_id=grant.auth_client_id,
                            reference_agreement_id=grant.reference_agreement_id,
                            origin=Origin.EASY_PAY,
                            status=AgreementStatus.ACTIVE,
                            scopes=Scope.AGREEMENT_PAY.value,
                            customer_id=grant.customer_id,
                            acquirer_id=grant.acquirer_id,
                            psp_id=grant.psp_id,
                            created_at=now,
                            authorized_at=now,
                        )
                    )
                stored = AccessToken(
                    agreement_id=agreement_id,
                    token_digest=token_digest(access_token),
                    reference_agreement_id=grant.reference_agreement_id,
                    auth_client_id=grant.auth_client_id,
                    customer_id=grant.customer_id,
                    refresh_token_digest=token_digest(refresh_token),
                    access_token_expires_at=now + self.access_token_ttl,
                    refresh_token_expires_at=now + self.refresh_token_ttl,
                    created_at=now,
                )
                session.add(stored)
                session.commit()
                session.refresh(stored)
        return AuthNotifyRequest(
            authorization_notify_type=AuthorizationNotifyType.TOKEN_CREATED,
            reference_agreement_id=grant.reference_agreement_id,
            auth_client_id=grant.auth_client_id,
            access_token=access_token,
            access_token_expiry_time=stored.access_token_expires_at,
            refresh_token=refresh_token,
            refresh_token_expiry_time=stored.refresh_token_expires_at,
            customer_id=grant.customer_id,
            user_login_id=grant.user_login_id,
            acquirer_id=grant.acquirer_id,
            psp_id=grant.psp_id,
        )
