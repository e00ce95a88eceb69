"""``mpp demo``'s log handler: the retries its scenarios provoke print as progress, anything else as
a warning; the product's loggers keep their levels."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from devstack.demo.console import WORKFLOW_LOGGER, demo_logging

NOTIFY = {"workflow_id": "notify/demo1p", "workflow_type": "NotifyPaymentWorkflow", "attempt": 1}


def delivery_warning(detail: str) -> logging.LogRecord:
    """The record ``workflows.delivery`` logs for an unanswered attempt, as temporalio's adapter makes it."""
    return logging.getLogger(WORKFLOW_LOGGER).makeRecord(
        WORKFLOW_LOGGER,
        logging.WARNING,
        "delivery.py",
        130,
        f"attempt %d unanswered (%s); retrying ({NOTIFY})",
        (1, detail),
        None,
        extra={"temporal_workflow": NOTIFY},
    )


def printed(*records: logging.LogRecord) -> str:
    """What the demo's console shows for ``records`` logged while the demo runs."""
    output = io.StringIO()
    with demo_logging(Console(file=output, width=300, color_system=None)):
        for record in records:
            logging.getLogger(record.name).handle(record)
    return output.getvalue()


def test_a_scripted_u_answer_prints_as_progress_not_as_a_warning() -> None:
    text = printed(delivery_warning("U/UNKNOWN_EXCEPTION"))

    assert text.startswith("… notify/demo1p: the sandbox Alipay+ answered notifyPayment attempt 1 U on purpose")
    assert "WARNING" not in text


def test_a_delivery_that_got_no_answer_still_warns() -> None:
    text = printed(delivery_warning("no answer: activity timed out"))

    assert "WARNING" in text and "no answer: activity timed out" in text


def test_other_warnings_still_warn_and_levels_stay() -> None:
    levels = {name: logging.getLogger(name).level for name in ("", WORKFLOW_LOGGER, "temporalio.activity")}
    record = logging.getLogger("api.pages").makeRecord(
        "api.pages", logging.WARNING, "pages.py", 1, "redirect allow-list entry %r ignored", ("x y",), None
    )

    text = printed(record)

    assert "WARNING" in text and "redirect allow-list entry 'x y' ignored" in text
    assert {name: logging.getLogger(name).level for name in levels} == levels
    assert all(type(handler).__module__ != "devstack.demo.console" for handler in logging.getLogger().handlers)
