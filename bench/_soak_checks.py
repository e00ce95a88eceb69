"""What the soak proves once the load has settled: nothing lost, nothing moved twice.

Every check reads the truth from where it lives: payment and refund records and ledger postings
from the database, delivery workflows and their results from Temporal, what Alipay+ received
from the sandbox, what was faulted from the proxy's log, and what the callers were answered
from the flows themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from alipayplus import ResultCode, TransportError
from sandbox.alipayplus.driver import AlipayPlusDriver
from wallet.deliveries import Delivery, DeliveryReport
from wallet.ledger import Ledger, PostingKind
from wallet.records import Entry, PaymentRecord, Posting, RefundRecord
from wallet.states import PaymentStatus

from ._soak_load import Flow, Kill
from ._soak_proxy import ProxyCall

NOT_OK_QUERY = "ExecutionStatus != 'Running' AND ExecutionStatus != 'Completed' AND ExecutionStatus != 'ContinuedAsNew'"
NOT_OK_STATUSES = ("Failed", "Terminated", "TimedOut", "Canceled")
KILL_WINDOW = 1.0  # seconds after the sandbox's S was written back within which a worker kill explains a re-send


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


# --- reading the truth ------------------------------------------------------------------------


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
            found.append((execution.id, execution.workflow_type, _status_name(execution.status)))
        return found
    except RPCError:  # a visibility store without "!=": ask per status
        found.clear()
    for status in NOT_OK_STATUSES:
        async for execution in client.list_workflows(f"ExecutionStatus = '{status}'"):
            found.append((execution.id, execution.workflow_type, _status_name(execution.status)))
    return found


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name if status is not None else "UNKNOWN"


# --- the checks -------------------------------------------------------------------------------


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


def check_all(evidence: Evidence, *, strict_once: bool = False) -> list[Check]:
    """Every check over ``evidence``; ``strict_once`` also counts re-sends a worker kill explains."""
    flows, records = evidence.flows, evidence.records
    finality, flows_done, inquiry, answers = (
        Check("every payment final (record SUCCESS/FAIL/CLOSED)"),
        Check("every flow got its final answers (callers retried until then)"),
        Check("inquiryPayment agrees with the record"),
        Check("callers' answers agree with the records"),
    )
    one_debit, returns, balance = (
        Check("one debit (pay/{id}/debit) per debited payment, none otherwise"),
        Check("refunds and reversals once each, within the debit"),
        Check("user balance change = −debits + refunds + reversals"),
    )
    notified, once, auth, auth_once = (
        Check("notifyPayment delivered (acknowledged, received, result = record, same body)"),
        Check("notifyPayment not sent again after an intact S"),
        Check("authNotify delivered (acknowledged, received, same body)"),
        Check("authNotify not sent again after an intact S"),
    )
    workflows, ledger, bypass = (
        Check("no workflow FAILED / TERMINATED / TIMED_OUT / CANCELED"),
        Check("Ledger.check().ok"),
        Check("proxy saw every notification the sandbox received"),
    )
    expected_change = 0
    for flow in flows:
        payment_request_id = flow.payment_request_id
        record = records.get(payment_request_id)
        refunds = evidence.refunds.get(payment_request_id, [])
        postings = evidence.postings.get(payment_request_id, [])

        # final state
        finality.checked += 1
        if not final(record):
            finality.fail(f"{payment_request_id}: {record.status if record else 'no record'}")
        flows_done.checked += 1
        if flow.error:
            flows_done.fail(f"{payment_request_id}: {flow.error}")

        # inquiry
        if record is not None and final(record):
            inquiry.checked += 1
            want = f"{'S' if record.status is PaymentStatus.SUCCESS else 'F'}/{record.result_code}"
            got = evidence.inquiries.get(payment_request_id, "not asked")
            if got != want:
                inquiry.fail(f"{payment_request_id}: inquiry {got}, record {record.status}/{record.result_code}")

        # what the callers were told
        answers.checked += 1
        _check_answers(answers, flow, record, refunds)

        # money
        one_debit.checked += 1
        debits = [posting for posting in postings if posting.kind == PostingKind.PAYMENT_DEBIT]
        pay_to = (record.pay_to_amount_value or 0) if record else 0
        if len(debits) > 1:
            one_debit.fail(f"{payment_request_id}: debited {len(debits)} times ({', '.join(p.key for p in debits)})")
        for posting in debits:
            if posting.key != f"pay/{payment_request_id}/debit" or posting.amount != -pay_to:
                one_debit.fail(f"{payment_request_id}: debit {posting.key} of {posting.amount}, payToAmount {pay_to}")
        if debited(record) != bool(debits):
            one_debit.fail(
                f"{payment_request_id}: record {record.status if record else None} paid at "
                f"{record.payment_time if record else None}, {len(debits)} debit posting(s)"
            )
        if record is not None and record.status is PaymentStatus.SUCCESS and not debits:
            one_debit.fail(f"{payment_request_id}: SUCCESS without a debit")

        returns.checked += 1
        refunded = sum(refund.credited_value for refund in refunds if refund.result_code == ResultCode.SUCCESS)
        refund_postings = [posting for posting in postings if posting.kind == PostingKind.REFUND]
        reversals = [posting for posting in postings if posting.kind == PostingKind.CANCEL_REVERSAL]
        keys = Counter(posting.key for posting in refund_postings + reversals)
        if keys and max(keys.values()) > 1:
            returns.fail(f"{payment_request_id}: a refund or reversal posted twice")
        if sum(posting.amount for posting in refund_postings) != refunded:
            returns.fail(
                f"{payment_request_id}: refund postings {sum(p.amount for p in refund_postings)}, records {refunded}"
            )
        reversed_ = record is not None and record.cancelled_at is not None and debited(record)
        reversal_due = pay_to - refunded if reversed_ else 0
        if sum(posting.amount for posting in reversals) != reversal_due or len(reversals) > 1:
            returns.fail(f"{payment_request_id}: reversal postings {[p.amount for p in reversals]}, due {reversal_due}")
        if sum(posting.amount for posting in refund_postings + reversals) > -sum(p.amount for p in debits):
            returns.fail(f"{payment_request_id}: gave back more than it debited")
        if debited(record):
            expected_change += -pay_to + refunded + reversal_due

        # notifyPayment
        if record is not None and final(record):
            notified.checked += 1
            once.checked += 1
            _check_delivery(
                notified,
                once,
                evidence.notifies.get(payment_request_id),
                evidence.notifications.get(payment_request_id, []),
                [
                    call
                    for call in evidence.proxy_calls
                    if call.api == "notifyPayment" and call.subject == payment_request_id
                ],
                evidence.kills,
                expected_payment_result(record),
                strict_once,
            )

    # authNotify: one per one-click payment that debited, none for the others
    for agreement, flow in evidence.agreement_payments().items():
        record = records.get(flow.payment_request_id)
        received = evidence.auth_notifications.get(agreement, [])
        if not debited(record):
            if received:
                auth.fail(f"{agreement}: authNotify for a payment that never debited ({flow.payment_request_id})")
            continue
        auth.checked += 1
        auth_once.checked += 1
        _check_delivery(
            auth,
            auth_once,
            evidence.auths.get(agreement),
            received,
            [call for call in evidence.proxy_calls if call.api == "authNotify" and call.subject == agreement],
            evidence.kills,
            None,
            strict_once,
        )
        for body in received[:1]:
            if body.get("customerId") != evidence.customer_id or body.get("authorizationNotifyType") != "TOKEN_CREATED":
                auth.fail(f"{agreement}: {body.get('authorizationNotifyType')} for {body.get('customerId')}")

    balance.checked = 1
    actual = evidence.balance_after - evidence.balance_before
    if actual != expected_change:
        balance.fail(f"balance moved {actual}, the records say {expected_change}")

    ledger.checked = 1
    if not evidence.ledger_ok:
        ledger.fail(evidence.ledger_detail)

    workflows.checked = 1
    for workflow_id, workflow_type, status in evidence.not_ok:
        workflows.fail(f"{workflow_id} ({workflow_type}) {status}")

    # every body the sandbox received came through the proxy (else the faults were bypassed)
    for api, received_by_subject in (
        ("notifyPayment", evidence.notifications),
        ("authNotify", evidence.auth_notifications),
    ):
        forwarded: Counter[str] = Counter(
            call.subject or "" for call in evidence.proxy_calls if call.api == api and call.forwarded
        )
        for subject, bodies in received_by_subject.items():
            bypass.checked += 1
            if len(bodies) > forwarded[subject]:
                bypass.fail(f"{api} {subject}: sandbox received {len(bodies)}, proxy forwarded {forwarded[subject]}")

    return [
        finality,
        flows_done,
        inquiry,
        answers,
        one_debit,
        returns,
        balance,
        ledger,
        notified,
        once,
        auth,
        auth_once,
        workflows,
        bypass,
    ]


def _check_answers(check: Check, flow: Flow, record: PaymentRecord | None, refunds: list[RefundRecord]) -> None:
    payment_request_id = flow.payment_request_id
    if flow.pin_redirect == "success" and not debited(record):
        check.fail(f"{payment_request_id}: the user was sent to status=success but never debited")
    if flow.pin_redirect == "fail" and debited(record):
        check.fail(f"{payment_request_id}: the user was sent to status=fail but debited")
    if flow.final is not None and record is not None and final(record) and record.cancelled_at is None:
        want = f"{'S' if record.status is PaymentStatus.SUCCESS else 'F'}/{record.result_code}"
        if flow.final != want:
            check.fail(f"{payment_request_id}: the caller's inquiry said {flow.final}, record {want}")
    if flow.refund_result is not None:
        refund = next((r for r in refunds if r.refund_request_id == flow.refund_request_id), None)
        recorded = refund.result_code if refund else None
        if flow.refund_result.split("/", 1)[1] != recorded:
            check.fail(f"{flow.refund_request_id}: refund answered {flow.refund_result}, record {recorded}")
    for cancel in (flow.cancel_before_result, flow.cancel_after_result):
        if cancel == "S/SUCCESS" and (record is None or record.cancelled_at is None):
            check.fail(f"{payment_request_id}: cancelPayment answered S, record not cancelled")


def _check_delivery(
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
        delivered_check.fail(f"{subject}: still {_status_name(found.status)} (stuck)")
    elif not found.acknowledged:
        detail = found.detail[:160]
        delivered_check.fail(f"{subject}: {_status_name(found.status)} {found.delivery or ''} {detail}".rstrip())
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


def counts_of(checks: Iterable[Check]) -> int:
    return sum(len(check.violations) for check in checks)


def user_balance(engine: Engine, account_id: str) -> int:
    return Ledger(engine).balance(account_id)
