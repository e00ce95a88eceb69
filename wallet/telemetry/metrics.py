"""Every metric the wallet exports, defined once (prometheus-client, the process's default registry).

Names start with ``mpp_``; the Temporal SDK's own (``temporal_…``) and the workflows' business
counters reach the same registry through ``wallet.telemetry.temporal_metrics``. Labels are small,
closed sets (a route template, a status, a code, a currency): never an id, an amount or a user.
Money is counted in minor units, per currency, so a sum never mixes currencies.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The HTTP listeners (api.monitoring's middleware)
HTTP_REQUESTS = Counter(
    "mpp_http_requests",
    "HTTP requests answered, by route template and status",
    ["listener", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "mpp_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template",
    ["listener", "route", "method"],
    buckets=LATENCY_BUCKETS,
)
ALIPAYPLUS_RESULTS = Counter(
    "mpp_alipayplus_results",
    "Our answers to Alipay+'s signed calls, by API and result (resultStatus, resultCode)",
    ["api", "result_status", "result_code"],
)
SIGNATURE_FAILURES = Counter(
    "mpp_signature_failures", "Alipay+ calls refused for their signature or its headers, by reason", ["reason"]
)
BODY_REJECTIONS = Counter(
    "mpp_body_rejections", "Requests refused before their body was read: too large or too deep", ["listener", "reason"]
)
CREDENTIAL_EVENTS = Counter(
    "mpp_credential_events",
    "Secrets a person types (PIN, OTP, login): wrong answers, backoffs, lockouts and unlocks",
    ["secret", "event"],
)

# Business (the ledger, the workers' activities; payments and deliveries come from the workflows)
POSTINGS = Counter("mpp_postings", "Ledger postings made (a replayed key is not counted)", ["kind", "currency"])
POSTED_MINOR_UNITS = Counter(
    "mpp_posted_minor_units", "Money moved by ledger postings, in the currency's minor units", ["kind", "currency"]
)
DELIVERY_ATTEMPTS = Counter(
    "mpp_delivery_attempts",
    "notifyPayment / authNotify calls to Alipay+, by kind and answer (S, F, U, no answer)",
    ["kind", "answer"],
)
DELIVERY_ATTEMPT_LATENCY = Histogram(
    "mpp_delivery_attempt_duration_seconds",
    "Time for Alipay+ to answer one delivery attempt",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
OLDEST_UNDELIVERED = Gauge(
    "mpp_oldest_undelivered_notification_age_seconds",
    "Age of the oldest notification with no S or F answer yet (0 when there is none)",
)
NFC_TAPS = Counter("mpp_nfc_taps", "NFC taps handled, by outcome", ["outcome"])
NFC_CREDENTIALS_REPLENISHED = Counter(
    "mpp_nfc_credentials_replenished", "Single-use NFC payment credentials issued to phones"
)

# Emitted by the workflows through Temporal's replay-safe meter (``workflow.metric_meter()``), exported
# here by ``wallet.telemetry.temporal_metrics``. Their names, for whoever reads the metrics.
PAYMENTS_FINISHED = "mpp_payments_finished"  # {product, status}
DELIVERIES_FINISHED = "mpp_deliveries_finished"  # {kind, outcome}
MONEY_PROCESSES_FINISHED = "mpp_money_processes_finished"  # {process: refund, cancel, adjust_refund; status}
NFC_ACTIVATIONS = "mpp_nfc_activations_finished"  # {outcome}
# ... and their descriptions (the workflows pass them to ``create_counter``)
HELP = {
    PAYMENTS_FINISHED: "Payment orders finished, by product and final status",
    DELIVERIES_FINISHED: "notifyPayment / authNotify deliveries ended, by kind and outcome",
    MONEY_PROCESSES_FINISHED: "Refunds, cancels and adjustRefunds finished, by process and final status",
    NFC_ACTIVATIONS: "NFC token activations ended, by outcome",
}
