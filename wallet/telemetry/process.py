"""A production process's telemetry, set up once at its start (``mpp worker``, ``mpp api``)."""

from __future__ import annotations

from wallet.settings import Settings

from .logs import LogFormat, configure_logging
from .tracing import configure_tracing


def start(service_name: str, settings: Settings, *, log_format: LogFormat | None = None) -> None:
    """Logs as ``settings`` (or ``log_format``) say, and traces as the ``OTEL_*`` variables say."""
    configure_logging(log_format or settings.log_format, settings.log_level)
    configure_tracing(service_name)
