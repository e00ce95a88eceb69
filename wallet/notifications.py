"""Activities that tell Alipay+ something: notifyPayment and authNotify.

Each makes one signed call and reports how Alipay+ answered; the calling workflow owns
the retry schedule, so retries survive worker restarts as durable timers. Every attempt is
the same message: the payment's notice is fixed when the payment ends, and authNotify's tokens
are derived from the agreement id and stored once, so a repeat after a lost answer is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

from alipayplus import (
    AuthNotifyRequest,
    AuthNotifyResponse,
    AuthorizationNotifyType,
    NotifyPaymentRequest,
    NotifyPaymentResponse,
    ResultStatus,
    SignedClient,
    TransportError,
)
from wallet.deliveries import AuthorizationGrant, Delivery, DeliveryReport
from wallet.records import AccessToken
from wallet.secrets import derive_token, token_digest


def _report(status: ResultStatus, code: str) -> DeliveryReport:
    delivery = {
        ResultStatus.SUCCESS: Delivery.ACKNOWLEDGED,
        ResultStatus.FAIL: Delivery.REJECTED,
        ResultStatus.UNKNOWN: Delivery.UNKNOWN,
    }[status]
    return DeliveryReport(delivery=delivery, detail=f"{status}/{code}")


@dataclass
class Notifications:
    alipayplus: SignedClient
    engine: Engine
    secret_key: bytes
    access_token_ttl: timedelta
    refresh_token_ttl: timedelta

    async def notify_payment(self, request: NotifyPaymentRequest) -> DeliveryReport:
        try:
            response = await self.alipayplus.call(NotifyPaymentRequest.PATH, request, NotifyPaymentResponse)
        except TransportError as exc:
            return DeliveryReport(delivery=Delivery.UNKNOWN, detail=str(exc))
        return _report(response.result.result_status, response.result.result_code)

    async def auth_notify(self, grant: AuthorizationGrant) -> DeliveryReport:
        request = self._issue_tokens(grant)
        try:
            response = await self.alipayplus.call(AuthNotifyRequest.PATH, request, AuthNotifyResponse)
        except TransportError as exc:
            return DeliveryReport(delivery=Delivery.UNKNOWN, detail=str(exc))
        return _report(response.result.result_status, response.result.result_code)

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
                stored = AccessToken(
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
