"""The activities of a user's unbinding (spec §7.2): find the agreement, ask Alipay+ whether the
merchant allows it (consultUnbinding), revoke it; each one call of ``wallet.agreements``, safe twice."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from alipayplus import ConsultUnbindingResponse, ResultStatus, SignedClient, TransportError
from wallet.agreements import Agreements, AgreementView, CancelledBy, Revoked, UnbindRequest
from wallet.records import AgreementStatus


@dataclass
class AgreementActivities:
    agreements: Agreements
    alipayplus: SignedClient

    @activity.defn
    def unbinding_subject(self, request: UnbindRequest) -> AgreementView | None:
        """The agreement, if it is this user's and still bound (a repeat after the revocation: None)."""
        found = self.agreements.owned(request.agreement_id, request.customer_id)
        usable = (AgreementStatus.ACTIVE, AgreementStatus.AUTHORIZED)
        return found if found is not None and found.status in usable else None

    @activity.defn
    async def consult_unbinding(self, agreement_id: str) -> bool:
        """Whether the merchant allows the user to unbind from our side. No answer, or U: raised,
        so the activity's retry policy asks again; F: not allowed."""
        request = self.agreements.consult_request(agreement_id)
        try:
            answer = await self.alipayplus.call(request.PATH, request, ConsultUnbindingResponse)
        except TransportError as exc:
            raise ApplicationError(f"consultUnbinding unanswered: {exc}") from None
        status = answer.result.result_status
        if status is ResultStatus.UNKNOWN:
            raise ApplicationError(f"consultUnbinding answered U/{answer.result.result_code}")
        return status is ResultStatus.SUCCESS and bool(answer.allow_unbinding)

    @activity.defn
    def revoke_for_user(self, agreement_id: str) -> Revoked:
        return self.agreements.revoke(agreement_id, CancelledBy.USER)
