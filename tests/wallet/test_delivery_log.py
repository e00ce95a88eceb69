"""The delivery log (issue 17, item 4): one row per attempt however often its activity runs, no
message in it, and the oldest delivery still waiting for an S or F answer."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from alipayplus import Amount, NotifyPaymentRequest, Result, ResultCode, SignedClient, TransportError
from wallet.deliveries import Delivery
from wallet.delivery_log import DETAIL_LENGTH, NO_ANSWER, Attempt, AttemptKey, DeliveryLog, short_detail
from wallet.notifications import Notifications
from wallet.records import DeliveryAttempt

pytestmark = pytest.mark.timeout(30)
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def attempt(delivery_id: str, run_id: str, activity_id: str, at: datetime, answer: str, **more: object) -> Attempt:
    fields: dict[str, object] = {
        "kind": "notifyPayment",
        "result_code": {"S": "SUCCESS", "F": "PROCESS_FAIL", "U": "UNKNOWN_EXCEPTION"}.get(answer),
        "detail": f"{answer}/…",
        "latency_ms": 12,
        **more,
    }
    return Attempt(delivery_id, run_id=run_id, activity_id=activity_id, attempted_at=at, answer=answer, **fields)  # type: ignore[arg-type]


def rows(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(DeliveryAttempt)).one()


def test_an_attempt_is_recorded_once_however_often_its_activity_runs(engine: Engine) -> None:
    log = DeliveryLog(engine)
    first = attempt("notify/p1", "run-1", "1", T0, "U")

    assert log.record(first) is True
    # the same run's activity executed again (a retry, a redelivered task): a later time, another answer
    assert log.record(attempt("notify/p1", "run-1", "1", T0 + timedelta(seconds=3), "S")) is False
    assert rows(engine) == 1
    assert log.attempts("notify/p1") == [first]
    # the same activity id in another run (continue-as-new, a redelivery) is another attempt
    assert log.record(attempt("notify/p1", "run-2", "1", T0 + timedelta(minutes=1), "S")) is True
    assert [a.run_id for a in log.attempts("notify/p1")] == ["run-1", "run-2"]


def test_attempts_come_back_oldest_first_in_utc_with_their_answers(engine: Engine) -> None:
    log = DeliveryLog(engine)
    later = attempt("auth/a1", "r", "2", T0 + timedelta(seconds=5), "S", kind="authNotify", latency_ms=40)
    earlier = attempt(
        "auth/a1", "r", "1", (T0).astimezone(UTC), NO_ANSWER, kind="authNotify", result_code=None, latency_ms=5000
    )
    log.record(later)
    log.record(earlier)

    found = log.attempts("auth/a1")
    assert [(a.answer, a.result_code, a.latency_ms) for a in found] == [
        (NO_ANSWER, None, 5000),
        ("S", "SUCCESS", 40),
    ]
    assert all(a.attempted_at.tzinfo is not None and a.attempted_at.utcoffset() == timedelta(0) for a in found)
    assert log.attempts("auth/none") == []
    assert log.summaries(["auth/a1", "auth/none"]) == {"auth/a1": (2, found[1])}


def test_the_detail_keeps_one_short_line_never_a_quoted_body(engine: Engine) -> None:
    log = DeliveryLog(engine)
    garbled = "POST /aps/x: unparsable response: 1 validation error\n  input_value={'accessToken': 'secret'}"
    log.record(attempt("notify/p2", "r", "1", T0, NO_ANSWER, detail=garbled))
    log.record(attempt("notify/p2", "r", "2", T0 + timedelta(seconds=5), "U", detail="x" * 1000))

    short, long = log.attempts("notify/p2")
    assert short.detail == "POST /aps/x: unparsable response: 1 validation error"
    assert "secret" not in short.detail
    assert len(long.detail) == DETAIL_LENGTH and long.detail.endswith("…")
    assert short_detail("") == ""


def test_a_malformed_attempt_is_refused(engine: Engine) -> None:
    log = DeliveryLog(engine)
    with pytest.raises(ValueError):
        log.record(attempt("notify/p3", "r", "1", T0, "MAYBE"))
    with pytest.raises(ValueError):
        log.record(attempt("notify/p3", "r", "1", T0.replace(tzinfo=None), "S"))
    with pytest.raises(ValueError):
        log.record(attempt("notify/p3", "r", "1", T0, "S", kind="refund"))
    assert rows(engine) == 0


def test_the_oldest_undelivered_is_the_first_unanswered_attempt_of_a_delivery_still_waiting(engine: Engine) -> None:
    log = DeliveryLog(engine)
    assert log.oldest_undelivered_since() is None
    # acknowledged after two unanswered attempts: not waiting
    log.record(attempt("notify/done", "r1", "1", T0, "U"))
    log.record(attempt("notify/done", "r1", "2", T0 + timedelta(seconds=5), NO_ANSWER))
    log.record(attempt("notify/done", "r1", "3", T0 + timedelta(seconds=35), "S"))
    # rejected (F): an answer, so not waiting either (an operator looks at REJECTED instead)
    log.record(attempt("notify/rejected", "r2", "1", T0 + timedelta(minutes=1), "F"))
    assert log.oldest_undelivered_since() is None

    # still waiting since its first attempt
    log.record(attempt("notify/waiting", "r3", "1", T0 + timedelta(minutes=2), "U"))
    log.record(attempt("notify/waiting", "r3", "2", T0 + timedelta(minutes=3), NO_ANSWER))
    assert log.oldest_undelivered_since() == T0 + timedelta(minutes=2)

    # the rejected one redelivered and unanswered: it waits since the redelivery's first attempt
    log.record(attempt("notify/rejected", "r4", "1", T0 + timedelta(minutes=1, seconds=30), "U"))
    assert log.oldest_undelivered_since() == T0 + timedelta(minutes=1, seconds=30)

    # once answered, the next oldest counts
    log.record(attempt("notify/rejected", "r4", "2", T0 + timedelta(minutes=4), "S"))
    assert log.oldest_undelivered_since() == T0 + timedelta(minutes=2)


def test_a_horizon_leaves_out_deliveries_abandoned_long_ago(engine: Engine) -> None:
    log = DeliveryLog(engine)
    now = datetime.now(UTC)
    log.record(attempt("notify/abandoned", "r1", "1", now - timedelta(days=10), "U"))
    log.record(attempt("notify/recent", "r2", "1", now - timedelta(hours=2), "U"))
    log.record(attempt("notify/recent", "r2", "2", now - timedelta(minutes=1), "U"))

    assert log.oldest_undelivered_since() == (now - timedelta(days=10)).replace(microsecond=now.microsecond)
    assert log.oldest_undelivered_since(timedelta(days=3)) == now - timedelta(hours=2)
    assert log.oldest_undelivered_since(timedelta(seconds=1)) is None


# --- recording from the notification calls (wallet.notifications) -----------------------------------


class ScriptedAlipayPlus:
    """Stands for the signed client: answers each call with the next of ``answers`` (an exception is raised)."""

    def __init__(self, *answers: object) -> None:
        self._answers = list(answers)

    async def call(self, path: str, request: object, response_type: type[Any]) -> Any:
        answer = self._answers.pop(0)
        if answer == "HANG":
            await asyncio.Event().wait()
        if isinstance(answer, BaseException):
            raise answer
        return response_type(result=answer)


class BrokenLog(DeliveryLog):
    def record(self, attempt: Attempt) -> bool:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))


def notifications(engine: Engine, client: ScriptedAlipayPlus, log: DeliveryLog | None = None) -> Notifications:
    return Notifications(
        alipayplus=cast(SignedClient, client),
        engine=engine,
        secret_key=b"k" * 32,
        access_token_ttl=timedelta(hours=1),
        refresh_token_ttl=timedelta(days=1),
        delivery_log=log,
    )


def notice(payment_request_id: str) -> NotifyPaymentRequest:
    price = Amount(currency="IDR", value=5000)
    return NotifyPaymentRequest(
        payment_result=Result.success(),
        payment_request_id=payment_request_id,
        payment_id="p" * 16,
        payment_amount=price,
        pay_to_amount=price,
    )


def counted(answer: str) -> float:
    labels = {"kind": "notifyPayment", "answer": answer}
    return REGISTRY.get_sample_value("mpp_delivery_attempts_total", labels) or 0.0


def timed() -> float:
    return REGISTRY.get_sample_value("mpp_delivery_attempt_duration_seconds_count", {"kind": "notifyPayment"}) or 0.0


async def test_each_attempt_is_recorded_and_counted_once(engine: Engine) -> None:
    sender = notifications(
        engine, ScriptedAlipayPlus(Result.success(), Result.success(), Result.of(ResultCode.PROCESS_FAIL))
    )
    key = AttemptKey("notify/n1", "run-1", "1")
    before_s, before_f, before_timed = counted("S"), counted("F"), timed()

    first = await sender.send_payment_notice(notice("n1"), key)
    repeated = await sender.send_payment_notice(notice("n1"), key)  # the same activity run, executed again
    rejected = await sender.send_payment_notice(notice("n1"), AttemptKey("notify/n1", "run-1", "2"))

    assert (first.delivery, repeated.delivery, rejected.delivery) == (
        Delivery.ACKNOWLEDGED,
        Delivery.ACKNOWLEDGED,
        Delivery.REJECTED,
    )
    recorded = DeliveryLog(engine).attempts("notify/n1")
    assert [(a.answer, a.result_code, a.kind) for a in recorded] == [
        ("S", "SUCCESS", "notifyPayment"),
        ("F", "PROCESS_FAIL", "notifyPayment"),
    ]
    assert (counted("S") - before_s, counted("F") - before_f, timed() - before_timed) == (1, 1, 2)
    # without a key (not run as a workflow's activity) nothing is recorded
    sender = notifications(engine, ScriptedAlipayPlus(Result.success()))
    assert (await sender.send_payment_notice(notice("n2"))).delivery is Delivery.ACKNOWLEDGED
    assert DeliveryLog(engine).attempts("notify/n2") == []


async def test_no_answer_is_recorded_as_such_with_its_latency(engine: Engine) -> None:
    sender = notifications(engine, ScriptedAlipayPlus(TransportError("POST /aps/x: HTTP 502")))
    report = await sender.send_payment_notice(notice("n3"), AttemptKey("notify/n3", "r", "1"))

    assert report.delivery is Delivery.UNKNOWN
    [recorded] = DeliveryLog(engine).attempts("notify/n3")
    assert (recorded.answer, recorded.result_code, recorded.detail) == (NO_ANSWER, None, "POST /aps/x: HTTP 502")
    assert recorded.latency_ms >= 0


async def test_a_cancelled_attempt_is_recorded_unanswered_and_still_cancelled(engine: Engine) -> None:
    sender = notifications(engine, ScriptedAlipayPlus("HANG"))
    call = asyncio.create_task(sender.send_payment_notice(notice("n4"), AttemptKey("notify/n4", "r", "1")))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    [recorded] = DeliveryLog(engine).attempts("notify/n4")
    assert recorded.answer == NO_ANSWER and "cancelled" in recorded.detail


async def test_a_log_that_cannot_be_written_changes_nothing_but_a_warning(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    sender = notifications(engine, ScriptedAlipayPlus(Result.success()), BrokenLog(engine))
    before = counted("S")
    with caplog.at_level(logging.WARNING, logger="wallet.notifications"):
        report = await sender.send_payment_notice(notice("n5"), AttemptKey("notify/n5", "r", "1"))

    assert report.delivery is Delivery.ACKNOWLEDGED
    assert counted("S") == before
    assert "could not record delivery attempt" in caplog.text
