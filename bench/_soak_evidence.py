"""What the soak reads back once the load has settled: records, postings, deliveries, what the sandbox received."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from alipayplus import TransportError
from sandbox.alipayplus.driver import AlipayPlusDriver
from wallet.deliveries import Delivery, DeliveryReport
from wallet.ledger import Ledger
from wallet.records import Entry, PaymentRecord, Posting, RefundRecord
from wallet.states import PaymentStatus

from ._soak_load import Flow, Kill
from ._soak_proxy import ProxyCall

NOT_OK_QUERY = "ExecutionStatus != 'Running' AND ExecutionStatus != 'Completed' AND ExecutionStatus != 'ContinuedAsNew'"
NOT_OK_STATUSES = ("Failed", "Terminated", "TimedOut", "Canceled")


# Here, under both the delivery checks and the rest, so they share it without an import cycle.
@dataclass
class Check:
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # findings reported but not counted as violations

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def allow(self, message: str) -> None:
        self.allowed.append(message)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class Delivered:
    """One delivery workflow (notify/… or auth/…) as it ended, or is."""

    workflow_id: str
    status: WorkflowExecutionStatus | None  # None: never started
    delivery: str | None = None  # the DeliveryReport's delivery when completed
    detail: str = ""

    @property
    def open(self) -> bool:
        return self.status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)

    @property
    def acknowledged(self) -> bool:
        return self.status is WorkflowExecutionStatus.COMPLETED and self.delivery == Delivery.ACKNOWLEDGED.value


async def workflow_status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).status
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise


async def delivered(client: Client, workflow_id: str) -> Delivered:
    status = await workflow_status(client, workflow_id)
    found = Delivered(workflow_id, status)
    if status is None or found.open:
        return found
    handle = client.get_workflow_handle(workflow_id, result_type=DeliveryReport)
    try:
        report = await asyncio.wait_for(handle.result(), 30)
        found.delivery, found.detail = str(report.delivery), report.detail
    except WorkflowFailureError as exc:
        cause: BaseException | None = exc.cause
        reasons: list[str] = []
        while cause is not None and len(reasons) < 3:
            reasons.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__
        found.detail = " ← ".join(reasons) or str(exc)
    except Exception as exc:  # decoding, a timeout: say so, the check fails on it
        found.detail = f"{type(exc).__name__}: {exc}"
    return found


def read_records(engine: Engine, ids: list[str]) -> tuple[dict[str, PaymentRecord], dict[str, list[RefundRecord]]]:
    with Session(engine) as session:
        payments = session.exec(select(PaymentRecord).where(col(PaymentRecord.payment_request_id).in_(ids))).all()
        refunds = session.exec(select(RefundRecord).where(col(RefundRecord.payment_request_id).in_(ids))).all()
    by_payment: dict[str, list[RefundRecord]] = {}
    for refund in refunds:
        by_payment.setdefault(refund.payment_request_id, []).append(refund)
    return {payment.payment_request_id: payment for payment in payments}, by_payment


@dataclass(frozen=True)
class UserPosting:
    key: str
    kind: str
    reference: str
    amount: int  # signed, on the user's account


def read_user_postings(engine: Engine, account_id: str, ids: list[str]) -> dict[str, list[UserPosting]]:
    statement = (
        sa_select(col(Posting.idempotency_key), col(Posting.kind), col(Posting.reference), func.sum(col(Entry.amount)))
        .join(Entry, col(Entry.posting_id) == col(Posting.id))
        .where(col(Entry.account_id) == account_id, col(Posting.reference).in_(ids))
        .group_by(col(Posting.id), col(Posting.idempotency_key), col(Posting.kind), col(Posting.reference))
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    postings: dict[str, list[UserPosting]] = {}
    for key, kind, reference, amount in rows:
        postings.setdefault(reference, []).append(UserPosting(key, kind, reference, int(amount)))
    return postings


def final(record: PaymentRecord | None) -> bool:
    return record is not None and record.status is not PaymentStatus.PROCESSING


def debited(record: PaymentRecord | None) -> bool:
    """The debit commits the record's paymentTime with it: set exactly when money left the user."""
    return record is not None and record.payment_time is not None


async def settle(client: Client, engine: Engine, flows: list[Flow], timeout: float, progress: Any = None) -> list[str]:
    """Wait until every payment is final and each delivery it needs has ended, or ``timeout``.

    Returns what is still open. A delivery whose payment workflow has closed without ever starting
    it will never start: that counts as decided (the checks call it lost), not as open.
    """
    ids = [flow.payment_request_id for flow in flows]
    agreements = {flow.payment_request_id: flow.agreement for flow in flows if flow.agreement}
    closed: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        records, _ = read_records(engine, ids)
        pending: list[str] = []
        for payment_request_id in ids:
            record = records.get(payment_request_id)
            if not final(record):
                pending.append(f"pay/{payment_request_id}: {record.status if record else 'no record'}")
                continue
            wanted = [f"notify/{payment_request_id}"]
            if payment_request_id in agreements and debited(record):
                wanted.append(f"auth/{agreements[payment_request_id]}")
            for workflow_id in wanted:
                if workflow_id in closed:
                    continue
                status = await workflow_status(client, workflow_id)
                if status is None:
                    payment = await workflow_status(client, f"pay/{payment_request_id}")
                    if payment not in (None, WorkflowExecutionStatus.RUNNING):
                        closed.add(workflow_id)  # never started, never will: lost
                        continue
                    pending.append(f"{workflow_id}: not started")
                elif status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW):
                    pending.append(f"{workflow_id}: running")
                else:
                    closed.add(workflow_id)
        if not pending or time.monotonic() > deadline:
            return pending
        if progress is not None:
            progress(pending)
        await asyncio.sleep(2.0)


async def sandbox_received(sandbox_url: str) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """notifyPayment and authNotify bodies the sandbox Alipay+ received, by subject, oldest first."""
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=30.0) as http:
        notifications = (await http.get("/sandbox/notifications")).raise_for_status().json()
        auth_notifications = (await http.get("/sandbox/auth-notifications")).raise_for_status().json()

    def group(bodies: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for body in bodies:
            grouped.setdefault(str(body.get(key)), []).append(body)
        return grouped

    return group(notifications, "paymentRequestId"), group(auth_notifications, "referenceAgreementId")


async def not_ok_workflows(client: Client) -> list[tuple[str, str, str]]:
    """(workflow id, type, status) of every execution that ended failed, terminated, timed out or cancelled."""
    found: list[tuple[str, str, str]] = []
    try:
        async for execution in client.list_workflows(NOT_OK_QUERY):
            found.append((execution.id, execution.workflow_type, status_name(execution.status)))
        return found
    except RPCError:  # a visibility store without "!=": ask per status
        found.clear()
    for status in NOT_OK_STATUSES:
        async for execution in client.list_workflows(f"ExecutionStatus = '{status}'"):
            found.append((execution.id, execution.workflow_type, status_name(execution.status)))
    return found


def status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name if status is not None else "UNKNOWN"


@dataclass
class Evidence:
    flows: list[Flow]
    records: dict[str, PaymentRecord]
    refunds: dict[str, list[RefundRecord]]
    postings: dict[str, list[UserPosting]]
    notifies: dict[str, Delivered]
    auths: dict[str, Delivered]
    notifications: dict[str, list[dict[str, Any]]]
    auth_notifications: dict[str, list[dict[str, Any]]]
    proxy_calls: list[ProxyCall]
    kills: list[Kill]
    balance_before: int
    balance_after: int
    customer_id: str
    ledger_ok: bool
    ledger_detail: str
    not_ok: list[tuple[str, str, str]]
    inquiries: dict[str, str]  # paymentRequestId -> "S/SUCCESS" (the payment's result) or an error

    def agreement_payments(self) -> dict[str, Flow]:
        return {flow.agreement: flow for flow in self.flows if flow.agreement}


async def inquire_all(driver: AlipayPlusDriver, flows: list[Flow], concurrency: int = 8) -> dict[str, str]:
    """A signed inquiryPayment per payment; its payment result as ``status/code``."""
    answers: dict[str, str] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(payment_request_id: str) -> None:
        async with gate:
            for _ in range(20):
                try:
                    inquiry = await driver.inquire(payment_request_id)
                except TransportError as exc:
                    answers[payment_request_id] = f"no signed answer: {exc}"
                    await asyncio.sleep(0.5)
                    continue
                result = inquiry.payment_result
                if not inquiry.result.is_success or result is None:
                    answers[payment_request_id] = f"inquiry {inquiry.result.result_status}/{inquiry.result.result_code}"
                else:
                    answers[payment_request_id] = f"{result.result_status}/{result.result_code}"
                return

    await asyncio.gather(*(one(flow.payment_request_id) for flow in flows))
    return answers


def user_balance(engine: Engine, account_id: str) -> int:
    return Ledger(engine).balance(account_id)
