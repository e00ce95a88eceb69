"""Logs: one JSON object per line (``MPP_LOG_FORMAT=json``, the default), or text for a person
(``mpp dev``, ``mpp demo``). Every line says where it comes from: the workflow id and type, the
activity, the paymentRequestId and the trace id, whichever apply.

Temporal's workflow and activity loggers put their context on the record (``temporal_workflow``,
``temporal_activity``); the API binds the paymentRequestId of the call it serves
(``bind_payment_request_id``); the trace id is the current span's. Nothing here formats a message
body: what a line says is up to its caller, and no caller logs a PIN, OTP, token, key or card
number (``tests/security/test_no_secrets_in_telemetry.py`` runs the demo and looks).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from enum import StrEnum
from typing import IO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter
from temporalio import activity, workflow


class LogFormat(StrEnum):
    JSON = "json"  # one JSON object per line, for a log pipeline
    TEXT = "text"  # for a person at a terminal


_payment_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("payment_request_id", default=None)

# Workflow ids that carry a paymentRequestId after their prefix (wallet.workflow_ids)
_PAYMENT_PREFIXES = ("pay/", "evaluation/", "cancel/", "notify/")


@contextlib.contextmanager
def bound_payment_request_id(payment_request_id: str | None) -> Iterator[None]:
    """Every line logged inside names this paymentRequestId."""
    token = _payment_request_id.set(payment_request_id)
    try:
        yield
    finally:
        _payment_request_id.reset(token)


def bind_payment_request_id(payment_request_id: str | None) -> None:
    """For the rest of the current task (an API request): every line names this paymentRequestId."""
    _payment_request_id.set(payment_request_id)


class ContextFilter(logging.Filter):
    """Adds ``workflow_id``, ``workflow_type``, ``activity_type``, ``payment_request_id``, ``trace_id``
    and ``span_id`` to every record, where known (else they are absent, not empty)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context: dict[str, str] = {}
        temporal = getattr(record, "temporal_workflow", None) or getattr(record, "temporal_activity", None)
        if isinstance(temporal, dict):
            for key in ("workflow_id", "workflow_type", "activity_type", "run_id"):
                if temporal.get(key):
                    context[key] = str(temporal[key])
        elif activity.in_activity():
            info = activity.info()
            context.update(
                workflow_id=info.workflow_id or "",
                workflow_type=info.workflow_type or "",
                activity_type=info.activity_type,
            )
        payment_request_id = _payment_request_id.get()
        workflow_id = context.get("workflow_id", "")
        if payment_request_id is None and workflow_id.startswith(_PAYMENT_PREFIXES):
            payment_request_id = workflow_id.split("/", 1)[1]
        if payment_request_id:
            context["payment_request_id"] = payment_request_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            context["trace_id"] = format(span.trace_id, "032x")
            context["span_id"] = format(span.span_id, "016x")
        for key, value in context.items():
            setattr(record, key, value)
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        # temporalio's own context dicts are flattened by ContextFilter; the raw ones would repeat them
        reserved_attrs=[*JsonFormatter().reserved_attrs, "temporal_workflow", "temporal_activity", "color_message"],
        timestamp="time",  # ISO 8601, UTC
    )


def configure_logging(log_format: LogFormat, level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one that writes ``log_format`` to ``stream`` (stderr).
    In JSON, Temporal's loggers no longer append their context to the message: it is in fields."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    if log_format is LogFormat.JSON:
        handler.setFormatter(json_formatter())
        workflow.logger.workflow_info_on_message = False
        activity.logger.activity_info_on_message = False
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
