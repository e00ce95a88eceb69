"""What the soak proves once the load has settled: nothing lost, nothing moved twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from alipayplus import ResultCode
from wallet.ledger import PostingKind
from wallet.records import PaymentRecord, RefundRecord
from wallet.states import PaymentStatus

from ._soak_delivery import KILL_WINDOW, OverDelivery, check_delivery, expected_payment_result, over_deliveries
from ._soak_evidence import (
    NOT_OK_QUERY,
    NOT_OK_STATUSES,
    Check,
    Delivered,
    Evidence,
    UserPosting,
    debited,
    delivered,
    final,
    inquire_all,
    not_ok_workflows,
    read_records,
    read_user_postings,
    sandbox_received,
    settle,
    user_balance,
    workflow_status,
)
from ._soak_load import Flow

# What this module offered before the evidence and the delivery checks moved out, still importable from here.
__all__ = [
    "KILL_WINDOW",
    "NOT_OK_QUERY",
    "NOT_OK_STATUSES",
    "Check",
    "Delivered",
    "Evidence",
    "OverDelivery",
    "UserPosting",
    "check_all",
    "counts_of",
    "debited",
    "delivered",
    "expected_payment_result",
    "final",
    "inquire_all",
    "not_ok_workflows",
    "over_deliveries",
    "read_records",
    "read_user_postings",
    "sandbox_received",
    "settle",
    "user_balance",
    "workflow_status",
]


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
            check_delivery(
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
        check_delivery(
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


def counts_of(checks: Iterable[Check]) -> int:
    return sum(len(check.violations) for check in checks)
