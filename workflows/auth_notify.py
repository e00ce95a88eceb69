"""authNotify: after one-click consent, issue the access token and tell Alipay+ (TOKEN_CREATED).

Id ``auth/{referenceAgreementId}``; retries on U or no answer (seed 004, step 5).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

from ._delivery import deliver_until_answered

with workflow.unsafe.imports_passed_through():
    from activities.notifications import AuthorizationGrant, Delivery, DeliveryReport, NotificationActivities


class AuthNotifyInput(BaseModel):
    grant: AuthorizationGrant
    attempts_so_far: int = 0


@workflow.defn
class AuthNotifyWorkflow:
    def __init__(self) -> None:
        self._attempts = 0

    @workflow.run
    async def run(self, notice: AuthNotifyInput) -> DeliveryReport:
        async def send() -> DeliveryReport:
            self._attempts += 1
            return await workflow.execute_activity_method(
                NotificationActivities.auth_notify,
                notice.grant,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )

        report, attempt = await deliver_until_answered(send, first_attempt=notice.attempts_so_far + 1)
        if report.delivery is Delivery.UNKNOWN:
            workflow.continue_as_new(AuthNotifyInput(grant=notice.grant, attempts_so_far=attempt))
        return report

    @workflow.query
    def attempts(self) -> int:
        return self._attempts
