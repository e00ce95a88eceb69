"""Activity options shared by the payment processes."""

from datetime import timedelta

from temporalio.common import RetryPolicy

# Database steps: short, idempotent by key, retried until the database answers.
DB_TIMEOUT = timedelta(seconds=10)
DB_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=5))
