"""Whether each notifyPayment and authNotify got through once: acknowledged, received intact, not re-sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alipayplus import ResultCode
from wallet.records import PaymentRecord

from ._soak_evidence import Check, Delivered, debited, status_name
from ._soak_load import Kill
from ._soak_proxy import ProxyCall

KILL_WINDOW = 1.0  # seconds after the sandbox's S was written back within which a worker kill explains a re-send


def expected_payment_result(record: PaymentRecord) -> tuple[str, str | None]:
    """What notifyPayment must have said: S/SUCCESS when the user was debited (a later cancel
    reverses it but does not change what was notified), else F with the record's code (any F
    code once a cancel has rewritten a failed payment's record)."""
    if debited(record):
        return "S", ResultCode.SUCCESS.value
    if record.cancelled_at is not None:
        return "F", None
    return "F", record.result_code


def _without_time(body: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name != "receivedAt"}


@dataclass(frozen=True)
class OverDelivery:
    extra: int  # calls forwarded after the first intact S
    after_kill: float | None  # seconds from that S being forwarded to a worker kill that explains the re-send

    def describe(self) -> str:
        if self.after_kill is None:
            return f"{self.extra} more after the first intact S, no worker kill around it"
        return (
            f"{self.extra} more after the first intact S; the worker was SIGKILLed {self.after_kill * 1000:.0f} ms "
            "after it was forwarded, before the answer could be recorded (at-least-once)"
        )


def over_deliveries(calls: list[ProxyCall], kills: list[Kill]) -> OverDelivery | None:
    """Calls forwarded after the first one the sandbox answered S and the caller got intact.

    A worker SIGKILLed between forwarding that call and ``KILL_WINDOW`` after its answer was written
    back explains a re-send: the MPP died before it could record the S (at-least-once delivery).
    """
    forwarded = sorted((call for call in calls if call.forwarded), key=lambda call: call.forwarded_at or 0.0)
    first = next((call for call in forwarded if call.clean_success), None)
    if first is None or first.forwarded_at is None:
        return None
    extra = [call for call in forwarded if (call.forwarded_at or 0.0) > (first.forwarded_at or 0.0)]
    if not extra:
        return None
    sent, answered = first.forwarded_at, (first.finished or first.forwarded_at) + KILL_WINDOW
    kill = next((k for k in kills if k.service == "worker" and sent <= k.at <= answered), None)
    return OverDelivery(len(extra), kill.at - sent if kill else None)


def check_delivery(
    delivered_check: Check,
    once_check: Check,
    found: Delivered | None,
    received: list[dict[str, Any]],
    calls: list[ProxyCall],
    kills: list[Kill],
    expected: tuple[str, str | None] | None,
    strict_once: bool,
) -> None:
    subject = found.workflow_id if found else "?"
    if found is None or found.status is None:
        delivered_check.fail(f"{subject}: never started")
    elif found.open:
        delivered_check.fail(f"{subject}: still {status_name(found.status)} (stuck)")
    elif not found.acknowledged:
        detail = found.detail[:160]
        delivered_check.fail(f"{subject}: {status_name(found.status)} {found.delivery or ''} {detail}".rstrip())
    if not received:
        delivered_check.fail(f"{subject}: the sandbox never received it")
    else:
        first = _without_time(received[0])
        if any(_without_time(body) != first for body in received[1:]):
            delivered_check.fail(f"{subject}: {len(received)} bodies, not all identical")
        if expected is not None:
            result = first.get("paymentResult") or {}
            status, code = expected
            if result.get("resultStatus") != status or (code is not None and result.get("resultCode") != code):
                delivered_check.fail(
                    f"{subject}: notified {result.get('resultStatus')}/{result.get('resultCode')}, "
                    f"expected {status}/{code or 'F code'}"
                )
    over = over_deliveries(calls, kills)
    if over is not None:
        if over.after_kill is None or strict_once:
            once_check.fail(f"{subject}: {over.describe()}")
        else:
            once_check.allow(f"{subject}: {over.describe()}")
