"""What the demo's flows leave in telemetry: one connected trace per call that drives a payment,
JSON log lines that say which workflow and payment they are about, and, across every span
attribute and every log line, no PIN, OTP, token, key or card number.

Tracing is switched on for this process here, with an in-memory exporter, before the embedded
stack starts (its FastAPI app and Temporal client are instrumented only when it is on).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console

from devstack.demo import run_scenarios
from devstack.stack import DevStack, Ports, dev_stack
from wallet.telemetry.logs import ContextFilter, json_formatter
from wallet.telemetry.tracing import configure_tracing
from wallet.users import DEMO_PIN

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Telemetry:
    spans: tuple[ReadableSpan, ...]
    log_lines: tuple[str, ...]
    secrets: dict[str, str]  # what it is -> the secret value


class _Lines(logging.Handler):
    """Every record, formatted as production formats it (JSON, with the context fields)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.addFilter(ContextFilter())
        self.setFormatter(json_formatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    configure_tracing("mpp-test", processors=[SimpleSpanProcessor(spans)])
    yield spans
    spans.shutdown()  # later stacks in this process may still make spans: they go nowhere


def _secrets(stack: DevStack, keys_dir: Path) -> dict[str, str]:
    found = {"demo PIN": DEMO_PIN}
    for sms in stack.alipayplus._sms:
        code = re.search(r"\b(\d{6})\b", sms.text)
        if code:
            found[f"OTP sent to {sms.to}"] = code.group(1)
    for request, _ in stack.alipayplus._auth_notifications:
        # AUTHCODE_CREATED's authCode is not checked: by protocol it also rides in the consent page's
        # redirect URL (single use, minutes long), which the browser's HTTP client logs at DEBUG
        carried = {"access token": request.access_token, "refresh token": request.refresh_token}
        for name, value in carried.items():
            if value is not None:  # TOKEN_CANCELED and AUTHCODE_CREATED carry no token
                found[f"{name} {request.reference_agreement_id}"] = value
    for customer, token in stack.mpm.refresh_tokens.items():
        found[f"MPM refresh token {customer}"] = token
    for token in stack.ant_nfc.tokens():
        if token.card_profile is not None:
            found[f"token PAN {token.token_reference_id}"] = str(token.card_profile.token_pan)
    for name in ("mpp_private.pem", "alipayplus_private.pem"):
        body = [line for line in (keys_dir / name).read_text().splitlines() if "-----" not in line]
        found[f"{name} (a line of it)"] = body[len(body) // 2]
    for name in ("mpp_secret.key", "payload.key"):
        raw = (keys_dir / name).read_bytes()
        found[f"{name} (hex)"] = raw.hex()
        found[f"{name} (base64)"] = base64.b64encode(raw).decode()
    found["operator token"] = (keys_dir / "ops.token").read_text().strip()
    return found


@pytest.fixture(scope="module")
async def telemetry(
    exporter: InMemorySpanExporter, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Telemetry]:
    var_dir = tmp_path_factory.mktemp("telemetry")
    lines = _Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(lines)
    root.setLevel(logging.DEBUG)
    try:
        async with dev_stack(var_dir=var_dir, ports=Ports.free(), web_ui=False) as stack:
            await run_scenarios(stack, Console(file=io.StringIO()))
            secrets = _secrets(stack, var_dir / "keys")
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
    yield Telemetry(tuple(exporter.get_finished_spans()), tuple(lines.lines), secrets)


def _by_trace(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    return [span for span in spans if span.context is not None and span.context.trace_id == trace_id]


def _ancestry(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def test_a_payment_is_one_trace_from_pay_2_through_the_pin_to_the_debit_and_the_notice(telemetry: Telemetry) -> None:
    """Alipay+'s pay #2 starts the order: its trace holds the workflow, the PIN's update (linked to
    the browser's own post, a request of another party), the debit, the start of notifyPayment's
    delivery, that workflow's attempt and the signed call out, each under the one before."""
    traces = []
    for pay in (span for span in telemetry.spans if span.name == "POST /aps/api/v1/payments/pay"):
        assert pay.context is not None
        trace = _by_trace(telemetry.spans, pay.context.trace_id)
        names = {span.name for span in trace}
        paid = "RunActivity:debit" in names  # not the payment three wrong codes failed
        if paid and "HandleUpdate:submit_code" in names and any("NotifyPaymentWorkflow" in name for name in names):
            traces.append(trace)
    assert traces, "no pay #2 trace reaches the PIN, the debit and notifyPayment"
    trace = traces[0]
    by_id = {span.context.span_id: span for span in trace if span.context is not None}
    roots = [span for span in trace if span.parent is None or span.parent.span_id not in by_id]
    assert len(roots) == 1  # one tree, from the sandbox Alipay+'s own call (its httpx client span)
    names = "\n".join(sorted(span.name for span in trace))
    update = next(span for span in trace if span.name == "HandleUpdate:submit_code")
    posts = {
        span.context.trace_id for span in telemetry.spans if span.context is not None and "/easypay/verify" in span.name
    }
    assert any(link.context.trace_id in posts for link in update.links), names  # the PIN post's trace, linked
    debit = next(span for span in trace if span.name == "RunActivity:debit")
    ledger = [span for span in trace if span.name == "ledger.post" and span.parent is not None]
    assert any(span.parent.span_id == debit.context.span_id for span in ledger if span.parent and debit.context), names
    pay = next(span for span in trace if span.name == "POST /aps/api/v1/payments/pay")
    assert pay.attributes is not None and pay.attributes.get("alipayplus.payment_request_id")
    call_out = [span for span in trace if span.kind.name == "CLIENT" and span.name.startswith("POST")]
    chains = [_ancestry(span, by_id) for span in call_out]
    notify = [chain for chain in chains if "RunActivity:notify_payment" in chain]
    assert notify, names
    assert "StartWorkflow:NotifyPaymentWorkflow" in notify[0], notify[0]
    assert "RunActivity:start_payment_notification" in notify[0], notify[0]
    assert "POST /aps/api/v1/payments/pay" in notify[0], notify[0]


def test_spans_carry_ids_not_urls_with_values(telemetry: Telemetry) -> None:
    for span in telemetry.spans:
        for attribute in ("http.url", "http.target", "url.full", "url.query"):
            value = (span.attributes or {}).get(attribute)
            assert value is None or "?" not in str(value), (span.name, attribute, value)


def test_no_secret_in_any_span_or_log_line(telemetry: Telemetry) -> None:
    assert len(telemetry.secrets) > 10  # PIN, OTPs, tokens, PANs, keys: the check has something to find
    assert any(name.startswith("OTP") for name in telemetry.secrets)
    assert any(name.startswith("token PAN") for name in telemetry.secrets)
    # a line's time stamp is the one field whose digits could pass for a 6-digit code
    texts = [json.dumps({k: v for k, v in json.loads(line).items() if k != "time"}) for line in telemetry.log_lines]
    for span in telemetry.spans:
        texts.append(span.name)
        texts.extend(f"{key}={value}" for key, value in (span.attributes or {}).items())
        for event in span.events:
            texts.append(event.name)
            texts.extend(f"{key}={value}" for key, value in (event.attributes or {}).items())
    assert len(texts) > 1000
    for what, secret in telemetry.secrets.items():
        pattern = re.compile(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])")
        leaked = [text for text in texts if pattern.search(text)]
        assert not leaked, f"{what} appears in telemetry: {leaked[0][:300]}"


def test_log_lines_are_json_with_their_workflow_and_payment(telemetry: Telemetry) -> None:
    records = [json.loads(line) for line in telemetry.log_lines]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    in_workflows = [record for record in records if record.get("workflow_id", "").startswith("notify/")]
    assert in_workflows, "no line from a notifyPayment delivery"
    assert all(record["payment_request_id"] == record["workflow_id"].split("/", 1)[1] for record in in_workflows)
    assert any("trace_id" in record for record in records)
