"""The soak's report: the process check, the table of checks and the table of counts."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from devstack.processes import Stack

from ._soak_checks import Check
from ._soak_load import Kill
from ._soak_proxy import FAULTS, PHASES
from ._soak_run import Soak


def process_check(stack: Stack | None, kills: list[Kill]) -> Check:
    check = Check("processes: no unexpected exit, clean exit (0) on SIGTERM")
    if stack is None:
        return check
    for service in stack.services:
        check.checked += 1
        for exit_ in service.unexpected_exits():
            check.fail(f"{service.name} pid {exit_.pid} exited by itself with {exit_.returncode}; see {service.log}")
        code = stack.stop_codes.get(service.name, "not started")
        if service.name in stack.stopped_while_starting:  # an aborted run: no handlers yet, nothing to judge
            continue
        if service.process is not None and code != 0:
            how = "had to be SIGKILLed" if code is None else f"exited with {code}"
            check.fail(f"{service.name} {how} on SIGTERM; see {service.log}")
    return check


def checks_table(checks: list[Check]) -> Table:
    table = Table(title="Soak checks", show_lines=False)
    table.add_column("check")
    table.add_column("checked", justify="right")
    table.add_column("violations", justify="right")
    table.add_column("first violations (allowed findings dimmed)", overflow="fold")
    for check in checks:
        shown = check.violations[:4] + [f"… and {len(check.violations) - 4} more"] * (len(check.violations) > 4)
        shown += [f"[dim]allowed: {finding}[/]" for finding in check.allowed[:2]]
        shown += [f"[dim]… and {len(check.allowed) - 2} more allowed[/]"] * (len(check.allowed) > 2)
        count = "[green]0[/]" if check.ok else f"[red]{len(check.violations)}[/]"
        table.add_row(
            check.name,
            str(check.checked),
            count + (f" [dim](+{len(check.allowed)} allowed)[/]" if check.allowed else ""),
            "\n".join(shown),
        )
    return table


def counts_table(soak: Soak) -> Table:
    evidence, proxy, load = soak.evidence, soak.proxy, soak.load
    table = Table(title="Soak counts")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("detail", overflow="fold")
    flows = soak.flows
    if evidence is not None:
        statuses = Counter(
            (str(record.status) if (record := evidence.records.get(f.payment_request_id)) else "no record")
            for f in flows
        )
        debited = sum(1 for record in evidence.records.values() if record.payment_time is not None)
        reversed_ = sum(
            1 for record in evidence.records.values() if record.payment_time is not None and record.cancelled_at
        )
        one_click = sum(1 for flow in flows if flow.agreement)
        table.add_row(
            "payments",
            str(len(flows)),
            ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
            + f"; debited {debited}, of which reversed by cancel {reversed_}; one-click {one_click}",
        )
    refunds = Counter(flow.refund_result for flow in flows if flow.refund_result)
    table.add_row("refunds (30%)", str(sum(refunds.values())), _counted(refunds))
    before = Counter(flow.cancel_before_result for flow in flows if flow.cancel_before_result)
    after = Counter(flow.cancel_after_result for flow in flows if flow.cancel_after_result)
    table.add_row(
        "cancels",
        str(sum(before.values()) + sum(after.values())),
        f"before the PIN: {_counted(before)}; after success: {_counted(after)}",
    )
    kills = Counter(kill.service for kill in soak.kills)
    for service in ("worker", "api"):
        restarts = [kill.restart_seconds for kill in soak.kills if kill.service == service]
        detail = (
            f"restart to ready avg {sum(restarts) / len(restarts):.1f} s, max {max(restarts):.1f} s" if restarts else ""
        )
        table.add_row(f"{service} kills (SIGKILL)", str(kills[service]), detail)
    if proxy is not None:
        faults = proxy.faults()
        for fault in FAULTS:
            table.add_row(
                f"fault {fault}",
                str(sum(faults.get((fault, phase), 0) for phase in PHASES)),
                ", ".join(f"{phase} forwarding {faults.get((fault, phase), 0)}" for phase in PHASES),
            )
        for api in ("notifyPayment", "authNotify"):
            calls = [call for call in proxy.calls if call.api == api]
            table.add_row(
                f"{api} calls via proxy",
                str(len(calls)),
                f"forwarded {sum(1 for c in calls if c.forwarded)}, faulted {sum(1 for c in calls if c.fault)}",
            )
    if evidence is not None:
        table.add_row(
            "notifyPayment received by sandbox",
            str(sum(len(bodies) for bodies in evidence.notifications.values())),
            f"for {len(evidence.notifications)} payments",
        )
        table.add_row(
            "authNotify received by sandbox",
            str(sum(len(bodies) for bodies in evidence.auth_notifications.values())),
            f"for {len(evidence.auth_notifications)} agreements",
        )
        lost, doubled, stuck = outcome_counts(soak)
        table.add_row("lost", str(lost), "final payment / debited one-click whose delivery never got acknowledged")
        table.add_row("doubled", str(doubled), "debited twice, or notified/authNotified again after an intact S")
        resent = sum(len(check.allowed) for check in soak.checks if "again after" in check.name)
        table.add_row(
            "re-sent after a worker kill",
            str(resent),
            "the worker died right after Alipay+'s S, before recording it: at-least-once, allowed"
            + (" (counted as doubled: --strict-once)" if soak.args.strict_once else ""),
        )
        table.add_row("stuck", str(stuck), "payment not final, or its delivery still running after the settle")
    if load is not None:
        table.add_row(
            "caller retries",
            str(load.stats.transport_retries + load.stats.pin_retries),
            f"signed calls without a signed answer {load.stats.transport_retries}, PIN POSTs {load.stats.pin_retries}, "
            f"pay U without page {load.stats.pay_unknown}, refund/cancel U {sum(load.stats.retried_u.values())}",
        )
    return table


def outcome_counts(soak: Soak) -> tuple[int, int, int]:
    evidence = soak.evidence
    assert evidence is not None
    lost = stuck = 0
    for delivery in [*evidence.notifies.values(), *evidence.auths.values()]:
        if delivery.open:
            stuck += 1
        elif delivery.status is not None and not delivery.acknowledged:
            lost += 1
    for flow in soak.flows:
        record = evidence.records.get(flow.payment_request_id)
        if record is None or record.status == "PROCESSING":
            stuck += 1
            continue
        if evidence.notifies[flow.payment_request_id].status is None:
            lost += 1
        if flow.agreement and record.payment_time is not None and evidence.auths[flow.agreement].status is None:
            lost += 1
    doubled_checks = [check for check in soak.checks if "again after" in check.name]
    debits_twice = sum(
        1 for postings in evidence.postings.values() if sum(p.kind == "PAYMENT_DEBIT" for p in postings) > 1
    )
    return lost, debits_twice + sum(len(check.violations) for check in doubled_checks), stuck


def _counted(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(counter.items())) or "none"
