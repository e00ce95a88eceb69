"""Worker interceptors: what every activity gets without saying so."""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from wallet.failures import cannot_succeed

PERMANENT_FAILURE = "PermanentFailure"  # the ApplicationError type workflows see
__all__ = ["PERMANENT_FAILURE", "PermanentFailures", "cannot_succeed"]


class PermanentFailures(Interceptor):
    """Turns an activity error no retry can fix into a non-retryable ``ApplicationError``, so the
    workflow ends with a final answer (F/PROCESS_FAIL, a delivery given up) instead of the activity
    being retried forever while Alipay+ is answered U."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _FailPermanently(next)


class _FailPermanently(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception as error:
            if not cannot_succeed(error):
                raise
            # the first line only, and no cause: failures reach workflow history unencrypted, and the
            # database's full message carries the statement's parameters (personal data)
            first_line = (str(error).splitlines() or [""])[0][:300]
            raise ApplicationError(
                f"{type(error).__name__}: {first_line}", type=PERMANENT_FAILURE, non_retryable=True
            ) from None
