"""Traces (OpenTelemetry): one trace from Alipay+'s call through the API, Temporal's start or
update, the workflow and its activities, to our signed call out and the ledger write.

The exporter follows the standard variables: ``OTEL_TRACES_EXPORTER`` = ``otlp`` (OTLP over HTTP,
``OTEL_EXPORTER_OTLP_ENDPOINT`` and the rest read by the exporter itself), ``console``, or ``none``
(the default: no spans are made at all). ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
name the process. Span attributes carry ids (paymentRequestId, workflow id, route templates),
never a PIN, OTP, token, key or card number: ``scrub_http_attributes`` keeps query strings and
concrete paths off the HTTP server spans.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

EXPORTER_VARIABLE = "OTEL_TRACES_EXPORTER"
TRACER_NAME = "mpp-wallet"

_provider: TracerProvider | None = None
_TRACER = trace.get_tracer(TRACER_NAME)


class UnknownExporter(ValueError):
    """``OTEL_TRACES_EXPORTER`` names an exporter this build does not ship."""


def _exporter_from_environment() -> SpanExporter | None:
    chosen = os.environ.get(EXPORTER_VARIABLE, "none").strip().lower()
    if chosen in ("", "none"):
        return None
    if chosen == "console":
        return ConsoleSpanExporter()
    if chosen == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise UnknownExporter(f"{EXPORTER_VARIABLE}={chosen!r}: use otlp, console or none")


def configure_tracing(service_name: str, *, processors: Sequence[SpanProcessor] = ()) -> bool:
    """Install this process's tracer provider, once; later calls only add ``processors`` (tests add
    an in-memory exporter this way). Returns whether spans are recorded at all."""
    global _provider
    if _provider is None:
        exporter = _exporter_from_environment()
        if exporter is None and not processors:
            return False
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
        _provider = TracerProvider(resource=resource)
        if exporter is not None:
            _provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(_provider)
        # every httpx client, ours and the SDKs': a client span per call and W3C traceparent on it
        HTTPXClientInstrumentor().instrument(request_hook=_scrub_client_url, async_request_hook=_scrub_client_url_async)
    for processor in processors:
        _provider.add_span_processor(processor)
    return True


def tracing_enabled() -> bool:
    return _provider is not None


def temporal_interceptors() -> list[Interceptor]:
    """Given to every Temporal client: spans for starts, updates, queries, workflows and activities,
    with the trace context carried in Temporal headers (W3C trace context, not payloads)."""
    return [TracingInterceptor(_TRACER)] if tracing_enabled() else []


def tracer() -> trace.Tracer:
    """Ours, made once: a proxy that follows whatever provider ``configure_tracing`` installs later
    (no-op until then), so a hot path like the ledger's post pays no lookup."""
    return _TRACER


# The attributes of an HTTP server span that would repeat a concrete URL; the span's name and
# http.route already carry the route template.
_URL_ATTRIBUTES = ("http.url", "http.target", "url.full", "url.path", "url.query")


def _scrub_client_url(span: trace.Span, request: Any) -> None:
    """httpx's request hook: the URL without its query string (where a one-time value could ride)."""
    if span.is_recording():
        url = str(request.url).split("?", 1)[0]
        for attribute in ("http.url", "url.full"):
            span.set_attribute(attribute, url)


async def _scrub_client_url_async(span: trace.Span, request: Any) -> None:
    _scrub_client_url(span, request)


def scrub_http_attributes(span: trace.Span, scope: dict[str, object]) -> None:
    """FastAPI instrumentation's server request hook: a concrete path or query can hold ids of a
    person or a one-time value; keep the template (the span's name) instead."""
    if span.is_recording():
        route = span.name.split(" ", 1)[-1] if hasattr(span, "name") else ""
        present = getattr(span, "attributes", None) or {}
        for attribute in _URL_ATTRIBUTES:
            if attribute in present:
                span.set_attribute(attribute, "" if attribute == "url.query" else route)
