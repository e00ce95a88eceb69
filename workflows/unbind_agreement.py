"""The user unbinds a merchant in the wallet app (spec §§7.2, 8; Auto Debit's account unbinding).

Id ``unbind/{agreementId}``, started by the app's ``DELETE /app/v1/agreements/{id}``:
  Step 1  the agreement is the user's and still bound;
  Step 2  (setting ``consult_unbinding``) ask Alipay+ whether the merchant allows unbinding from the
          wallet's side, consultUnbinding, retried while unanswered for up to an hour (then the
          visible give-up: UNANSWERED, nothing changed); not allowed: REFUSED, nothing changed;
  Step 3  revoke the agreement: its every access and refresh token dies;
  Step 4  authNotify TOKEN_CANCELED, delivered durably like every notification.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from ._options import ACTIVITY_FAILURES, db_step, is_permanent

with workflow.unsafe.imports_passed_through():
    from activities.agreements import AgreementActivities
    from activities.deliveries import DeliveryActivities
    from alipayplus import AuthorizationNotifyType
    from wallet.agreements import UnbindOutcome, UnbindRequest
    from wallet.deliveries import AuthNotifyInput, AuthorizationGrant

CONSULT_ATTEMPT = timedelta(seconds=10)  # one signed call; Alipay+'s client gives up at 5 s
CONSULT_GIVE_UP = timedelta(hours=1)  # the user waits in the app: past this, nothing changed
CONSULT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=2))


@workflow.defn
class UnbindAgreementWorkflow:
    @workflow.run
    async def run(self, request: UnbindRequest) -> UnbindOutcome:
        # Step 1: the user's own agreement, still bound.
        agreement = await db_step(AgreementActivities.unbinding_subject, request)
        if agreement is None:
            return UnbindOutcome.NOT_FOUND

        # Step 2: may the user unbind from our side? (optional)
        if request.consult:
            try:
                allowed = await workflow.execute_activity_method(
                    AgreementActivities.consult_unbinding,
                    request.agreement_id,
                    start_to_close_timeout=CONSULT_ATTEMPT,
                    schedule_to_close_timeout=CONSULT_GIVE_UP,
                    retry_policy=CONSULT_RETRY,
                )
            except ACTIVITY_FAILURES as error:
                if is_permanent(error):
                    raise
                workflow.logger.warning("consultUnbinding unanswered for %s: giving up", CONSULT_GIVE_UP)
                return UnbindOutcome.UNANSWERED
            if not allowed:
                return UnbindOutcome.REFUSED

        # Step 3: revoke the agreement and every token of it.
        await db_step(AgreementActivities.revoke_for_user, request.agreement_id)

        # Step 4: tell Alipay+ (TOKEN_CANCELED), durably.
        await db_step(
            DeliveryActivities.start_auth_notification,
            AuthNotifyInput(
                grant=AuthorizationGrant(
                    reference_agreement_id=agreement.reference_agreement_id,
                    auth_client_id=agreement.auth_client_id,
                    customer_id=request.customer_id,
                    acquirer_id=agreement.acquirer_id or "",
                    psp_id=agreement.psp_id or "",
                    notify_type=AuthorizationNotifyType.TOKEN_CANCELED,
                    agreement_id=request.agreement_id,
                )
            ),
        )
        return UnbindOutcome.UNBOUND
