"""Every call a notifyPayment / authNotify delivery made to Alipay+, and how it was answered: the
operator's view of a delivery's attempts (``/ops/deliveries/…``) and the oldest-undelivered figure.

The workflow's history holds the same facts, but encrypted and one workflow at a time; this table
holds only what an operator needs (when, the answer, its code, how long it took), never the message:
authNotify's carries tokens. Each attempt is one activity run of one workflow run, so
``(run_id, activity_id)`` names it and a second execution of the same activity records nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, exists, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from .db import reader
from .records import DeliveryAttempt

NOTIFY_PAYMENT = "notifyPayment"  # the kinds, as the metrics and the operator API name them
AUTH_NOTIFY = "authNotify"
KINDS = (NOTIFY_PAYMENT, AUTH_NOTIFY)
NO_ANSWER = "NO_ANSWER"  # a timeout, a 5xx, an unsigned or garbled body: Alipay+ said nothing usable
ANSWERS = ("S", "F", "U", NO_ANSWER)
ANSWERED = ("S", "F")  # an answer that ends a delivery: acknowledged or rejected
DETAIL_LENGTH = 200  # the delivery_attempt.detail column


@dataclass(frozen=True)
class AttemptKey:
    """Which attempt: the delivery (its workflow id), the workflow run and the activity in that run."""

    delivery_id: str
    run_id: str
    activity_id: str


@dataclass(frozen=True)
class Attempt:
    """One recorded attempt (``latency_ms``: from sending the request to its answer or its failure)."""

    delivery_id: str
    kind: str
    run_id: str
    activity_id: str
    attempted_at: datetime
    answer: str
    result_code: str | None
    detail: str
    latency_ms: int


def short_detail(text: str) -> str:
    """The first line of ``text``, cut to fit the column: a parse error's further lines quote the
    answer's body, which is not kept."""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return first_line if len(first_line) <= DETAIL_LENGTH else first_line[: DETAIL_LENGTH - 1] + "…"


class DeliveryLog:
    """The ``delivery_attempt`` table: written by the notification activities, read by the operator API."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reads = reader(engine)

    def record(self, attempt: Attempt) -> bool:
        """Keep ``attempt``; True if it is new, False if this run's activity was already recorded."""
        if attempt.kind not in KINDS or attempt.answer not in ANSWERS:
            raise ValueError(f"not a delivery attempt: kind {attempt.kind!r}, answer {attempt.answer!r}")
        if attempt.attempted_at.tzinfo is None:
            raise ValueError("attempted_at must be timezone-aware")
        row = {
            "delivery_id": attempt.delivery_id,
            "kind": attempt.kind,
            "run_id": attempt.run_id,
            "activity_id": attempt.activity_id,
            "attempted_at": attempt.attempted_at.astimezone(UTC),
            "answer": attempt.answer,
            "result_code": attempt.result_code,
            "detail": short_detail(attempt.detail),
            "latency_ms": max(0, attempt.latency_ms),
        }
        try:
            with self._engine.begin() as connection:
                if self._recorded(connection, attempt):
                    return False
                connection.execute(insert(DeliveryAttempt).values(**row))
            return True
        except IntegrityError:
            # A concurrent twin committed first (PostgreSQL; SQLite serialises writers, so the check
            # above sees it): recorded once, by the twin.
            with self._reads.connect() as connection:
                if self._recorded(connection, attempt):
                    return False
            raise

    def attempts(self, delivery_id: str) -> list[Attempt]:
        """The delivery's attempts over all its runs, oldest first."""
        table = _table()
        statement = select(table).where(table.c.delivery_id == delivery_id).order_by(table.c.attempted_at, table.c.id)
        with self._reads.connect() as connection:
            return [_attempt(row._mapping) for row in connection.execute(statement)]

    def summaries(self, delivery_ids: Sequence[str]) -> dict[str, tuple[int, Attempt]]:
        """For each of ``delivery_ids`` that made any attempt: how many, and the latest (absent: none)."""
        if not delivery_ids:
            return {}
        table = _table()
        counted = (
            select(table.c.delivery_id, func.count().label("attempts"), func.max(table.c.attempted_at).label("last_at"))
            .where(table.c.delivery_id.in_(list(delivery_ids)))
            .group_by(table.c.delivery_id)
            .subquery()
        )
        latest = (
            select(table, counted.c.attempts)
            .join(
                counted,
                (table.c.delivery_id == counted.c.delivery_id) & (table.c.attempted_at == counted.c.last_at),
            )
            .order_by(table.c.id)  # two attempts at the same instant: the one recorded last
        )
        with self._reads.connect() as connection:
            return {row.delivery_id: (row.attempts, _attempt(row._mapping)) for row in connection.execute(latest)}

    def oldest_undelivered_since(self, horizon: timedelta | None = None) -> datetime | None:
        """When the oldest delivery still waiting for an S or F answer first went unanswered; None if none waits.

        A delivery waits while its latest attempt was answered U or not at all; it waits since the
        first attempt after its last S or F answer (a redelivery after an F starts a new wait). One
        that gave up keeps waiting, until redelivered: with ``horizon``, only deliveries whose latest
        attempt lies within ``horizon`` of now count, so one abandoned long ago stops counting.
        """
        table = _table()
        later = table.alias("later")
        answered_since = exists().where(
            later.c.delivery_id == table.c.delivery_id,
            later.c.answer.in_(ANSWERED),
            later.c.attempted_at >= table.c.attempted_at,
        )
        waiting = (
            select(
                table.c.delivery_id,
                func.min(table.c.attempted_at).label("since"),
            )
            .where(table.c.answer.not_in(ANSWERED), ~answered_since)
            .group_by(table.c.delivery_id)
        )
        if horizon is not None:
            waiting = waiting.having(func.max(table.c.attempted_at) >= datetime.now(UTC) - horizon)
        tails = waiting.subquery()
        with self._reads.connect() as connection:
            oldest: datetime | None = connection.execute(select(func.min(tails.c.since))).scalar_one()
        return oldest

    @staticmethod
    def _recorded(connection: Any, attempt: Attempt) -> bool:
        found = connection.execute(
            select(col(DeliveryAttempt.id)).where(
                col(DeliveryAttempt.run_id) == attempt.run_id,
                col(DeliveryAttempt.activity_id) == attempt.activity_id,
            )
        ).first()
        return found is not None


def _table() -> Table:
    table: Table = DeliveryAttempt.__table__  # type: ignore[attr-defined]  # SQLModel sets it at run time
    return table


def _attempt(row: Any) -> Attempt:
    return Attempt(
        delivery_id=row["delivery_id"],
        kind=row["kind"],
        run_id=row["run_id"],
        activity_id=row["activity_id"],
        attempted_at=row["attempted_at"],
        answer=row["answer"],
        result_code=row["result_code"],
        detail=row["detail"],
        latency_ms=row["latency_ms"],
    )
