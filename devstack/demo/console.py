"""The demo's console logging: retries its scenarios provoke on purpose read as progress, not warnings.

The product code warns about every retry, as it must in production; only ``mpp demo`` installs this
handler, and it knows which of those warnings a scenario caused by design (the sandbox Alipay+
answering U, say). Everything else still prints as a warning, on the demo's console, so rich's
progress display stays intact.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

WORKFLOW_LOGGER = "temporalio.workflow"
DELIVERED_API = {"NotifyPaymentWorkflow": "notifyPayment", "AuthNotifyWorkflow": "authNotify"}


@dataclass(frozen=True)
class IntendedRetry:
    """A warning some scenario provokes on purpose, and how to say it as progress."""

    logger: str
    template: str  # the call's unformatted message; temporalio appends the workflow's details to it
    progress: Callable[[dict[str, Any], tuple[Any, ...]], str | None]  # None: not the intended case


def _delivery_retry(workflow: dict[str, Any], args: tuple[Any, ...]) -> str | None:
    attempt, detail = args
    if not str(detail).startswith("U/"):
        return None  # no answer at all, or a broken one: not what a scenario scripts
    api = DELIVERED_API.get(workflow.get("workflow_type", ""), "the delivery")
    return (
        f"{workflow.get('workflow_id', '?')}: the sandbox Alipay+ answered {api} attempt {attempt} U on purpose;"
        " it is sent again shortly"
    )


def _otp_not_sent(workflow: dict[str, Any], args: tuple[Any, ...]) -> str:
    return f"{workflow.get('workflow_id', '?')}: no SMS code could be sent before the order expired"


INTENDED_RETRIES = (
    IntendedRetry(WORKFLOW_LOGGER, "attempt %d unanswered (%s); retrying", _delivery_retry),
    IntendedRetry(WORKFLOW_LOGGER, "no code sent before the order expires: %s", _otp_not_sent),
)


def as_progress(record: logging.LogRecord) -> str | None:
    """The progress line for an intended retry's record, or None for any other record."""
    for retry in INTENDED_RETRIES:
        if record.name == retry.logger and str(record.msg).startswith(retry.template):
            args = record.args if isinstance(record.args, tuple) else ()
            with contextlib.suppress(ValueError, TypeError):  # a call with other arguments: not this one
                return retry.progress(getattr(record, "temporal_workflow", {}), args)
    return None


class DemoLogHandler(RichHandler):
    """Intended retries as a dim "…" line; every other record as rich renders a log record."""

    def emit(self, record: logging.LogRecord) -> None:
        progress = as_progress(record)
        if progress is None:
            super().emit(record)
            return
        try:
            self.console.print(f"[dim]… {escape(progress)}[/]", soft_wrap=True, highlight=False)
        except Exception:  # a log line must never break the demo
            self.handleError(record)


class _PassRecords(QueueHandler):
    """Hands records to the listener's thread as they are. Workflow code logs inside Temporal's
    sandbox, where rich's lazy imports would be re-imported (and warned about) per workflow; the
    listener renders outside it. Unlike QueueHandler's default, the call's template and arguments
    stay on the record: ``as_progress`` reads them."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


@contextlib.contextmanager
def demo_logging(console: Console) -> Iterator[DemoLogHandler]:
    """Route warnings (and worse) to ``console`` while the demo runs; no logger's level changes."""
    handler = DemoLogHandler(level=logging.WARNING, console=console, show_path=False, rich_tracebacks=False)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    enqueue = _PassRecords(records)
    enqueue.setLevel(logging.WARNING)
    listener = QueueListener(records, handler, respect_handler_level=True)
    root = logging.getLogger()
    listener.start()
    root.addHandler(enqueue)
    try:
        yield handler
    finally:
        root.removeHandler(enqueue)
        listener.stop()  # prints what is still queued
