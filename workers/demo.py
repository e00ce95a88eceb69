"""``make demo``: every Easy Pay, refund, cancel, merchant-presented (MPM), NFC activation and NFC
payment scenario, through the real HTTP API, on the embedded stack.

Alipay+ is the sandbox driver (signed pay, inquiryPayment, refund and cancelPayment calls); the
user is an HTTP client on our verification page, reading OTPs from the sandbox SMS inbox. For
NFC, each scenario activates its own phone (``hce_device.nfc_sdk``) and taps it on a sandbox POS
terminal, whose authorization goes over HTTP to the sandbox Mastercard and becomes Alipay+'s NFC
pay; reversals, clearings and merchant refunds become cancelPayment, refund and adjustRefund
(``workers.demo_nfc_pay``). Scenarios run concurrently; each ends in a state that is checked, and
the process exits non-zero if any state is wrong. Money given back is read from the ledger, per
payment.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlmodel import col

from alipayplus import Amount, AuthorizationInfo, PayRequest, PayResponse, RefundResponse, Result
from api.pages import form_fields, link
from wallet.db import create_engine_for
from wallet.ledger import RETURNS, Ledger, LedgerCheck, PostingKind
from wallet.nfc_tokens import NfcTokens
from wallet.records import Account, AccountKind, Entry, Posting
from wallet.users import DEMO_USERS

from .demo_mpm import MPM_SCENARIOS
from .demo_nfc import NFC_SCENARIOS
from .demo_nfc_pay import NFC_PAY_SCENARIOS
from .dev_stack import DEFAULT_PORTS, DevStack, Ports, dev_stack
from .scenario import Outcome, Scenario

PIN_USER, OTP_USER, FROZEN_USER, POOR_USER = "852-11112222", "852-95303585", "852-33334444", "852-55556666"
PIN = "246810"
OTP_PHONE = "+85295303585"
PRICE = Amount(currency="IDR", value=5000)


class Demo:
    """What the scenarios share: the stack, an HTTP client for the user, id minting."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        # a browser: every page post is answered 303 back to the page, which it then shows
        self.user = httpx.AsyncClient(timeout=10.0, follow_redirects=True)
        self._run = time.strftime("%Y%m%d%H%M%S")
        # One OTP user, one phone: OTP scenarios take turns so each reads its own code.
        self.otp_phone = asyncio.Lock()
        self._used_otps: set[str] = set()
        self.records = create_engine_for(stack.settings.database_url)

    async def aclose(self) -> None:
        await self.user.aclose()
        self.records.dispose()

    def new_id(self, tag: str) -> str:
        return f"demo{self._run}{tag}{uuid.uuid4().hex[:8]}"

    def order(self, login_id: str, *, amount: Amount = PRICE, **options: object) -> PayRequest:
        request_id = self.new_id("p")
        return self.stack.driver.easy_pay_order(
            request_id,
            login_id,
            amount,
            self.stack.settings.psp_id,
            redirect_url=f"{self.stack.sandbox_url}/sandbox/result?paymentRequestId={request_id}",
            **options,  # type: ignore[arg-type]
        )

    async def evaluate(self, login_id: str) -> Outcome:
        request = self.stack.driver.easy_pay_evaluation(self.new_id("e"), login_id, PRICE, self.stack.settings.psp_id)
        answer = await self.stack.driver.pay(request)
        return Outcome(f"evaluation/{request.payment_request_id}", _result(answer))

    async def create(self, request: PayRequest) -> PayResponse:
        """Alipay+ sends pay #2; on an unknown result it starts its inquiry schedule, as it does."""
        answer = await self.stack.driver.pay(request)
        if not answer.result.is_final:
            await self.stack.inquiries(request)
        return answer

    async def inquiries_settled(self) -> str:
        """Wait for every inquiry schedule (each ends at its first final answer, ≤ 10 s later)."""
        schedules = self.stack.inquiries.schedules.values()
        outcomes = await asyncio.gather(*(schedule.result() for schedule in schedules))
        final = sum(outcome.final for outcome in outcomes)
        return f"{len(outcomes)} inquiry schedules, {final} ended with a final result"

    async def type_code(self, answer: PayResponse, code: str) -> httpx.Response:
        page = await self.user.get(answer.payment_url or "")
        page.raise_for_status()
        return await self.user.post(answer.payment_url or "", data={"code": code, **form_fields(page.text)})

    async def read_otp(self, payment_request_id: str, after: str | None = None) -> str:
        """The user reads the newest code on their phone (a new one, if ``after`` is given)."""
        for _ in range(100):
            code = self.stack.alipayplus.latest_otp(OTP_PHONE)
            if code and code != after and code not in self._used_otps:
                self._used_otps.add(code)
                return code
            await asyncio.sleep(0.05)
        raise AssertionError(f"no new OTP reached {OTP_PHONE} for {payment_request_id}")

    async def final(self, request: PayRequest) -> Outcome:
        """The payment's final state, as Alipay+ learns it by inquiryPayment."""
        for _ in range(200):
            answer = await self.stack.driver.inquire(request.payment_request_id)
            result = answer.payment_result
            if result is not None and result.is_final:
                return Outcome(f"pay/{request.payment_request_id}", f"{result.result_status}/{result.result_code}")
            await asyncio.sleep(0.1)
        return Outcome(f"pay/{request.payment_request_id}", "U/PAYMENT_IN_PROCESS")

    async def paid(self) -> tuple[PayRequest, str]:
        """A PIN payment of ``PRICE``, verified and final: (pay #2's request, its paymentId)."""
        request = self.order(PIN_USER)
        answer = await self.create(request)
        await self.type_code(answer, PIN)
        outcome = await self.final(request)
        if outcome.state != "S/SUCCESS" or not answer.payment_id:
            raise AssertionError(f"payment {request.payment_request_id} ended {outcome.state}")
        return request, answer.payment_id

    async def refund(self, payment: tuple[PayRequest, str], value: int, refund_request_id: str) -> RefundResponse:
        """Alipay+'s refund of ``value`` (minor units, the payment's currency) of a paid payment."""
        request, payment_id = payment
        amount = Amount(currency=request.payment_amount.currency, value=value)
        refund = self.stack.driver.refund_request(request, payment_id, refund_request_id, amount)
        return await self.stack.driver.refund(refund)

    async def cancel(self, request: PayRequest) -> Result:
        answer = await self.stack.driver.cancel(request.payment_request_id, request.acquirer_id, request.psp_id)
        return answer.result

    async def inquiry_result(self, request: PayRequest) -> str:
        answer = await self.stack.driver.inquire(request.payment_request_id, request.acquirer_id, request.psp_id)
        return _status(answer.payment_result) if answer.payment_result else _status(answer.result)

    def returned(self, payment_request_id: str, kinds: Sequence[PostingKind] = RETURNS) -> Amount:
        """What the payment's refunds and reversal gave back to its user, from the ledger (``kinds``
        ``(ADJUST_REFUND,)`` with an adjustRefund's refundRequestId: what that adjustRefund credited)."""
        query = (
            select(func.coalesce(func.sum(col(Entry.amount)), 0))
            .join(Posting, col(Posting.id) == col(Entry.posting_id))
            .join(Account, col(Account.id) == col(Entry.account_id))
            .where(
                col(Posting.reference) == payment_request_id,
                col(Posting.kind).in_(kinds),
                col(Account.kind) == AccountKind.USER,
            )
        )
        with self.records.connect() as connection:
            total = connection.execute(query).scalar_one()
        return Amount(currency=PRICE.currency, value=int(total))

    def postings(self, payment_request_id: str) -> int:
        with self.records.connect() as connection:
            query = select(func.count()).select_from(Posting).where(col(Posting.reference) == payment_request_id)
            return int(connection.execute(query).scalar_one())

    async def notified(self, request_id: str, count: int = 1) -> None:
        for _ in range(300):
            if len(self.stack.alipayplus.notifications(request_id)) >= count:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"notifyPayment for {request_id} arrived fewer than {count} times")


def _status(result: Result) -> str:
    return f"{result.result_status}/{result.result_code}"


def _result(answer: PayResponse | RefundResponse) -> str:
    return _status(answer.result)


def _redirect_status(page: httpx.Response) -> str:
    """The status our result page hands on to Alipay+'s result page (its Continue link)."""
    match = re.search(r"[?&]status=(\w+)", link(page.text, "continue") or "")
    return match.group(1) if match else f"HTTP {page.status_code}"


# --- the scenarios --------------------------------------------------------------------------


async def evaluation_supported(demo: Demo) -> Outcome:
    return await demo.evaluate(PIN_USER)


async def evaluation_frozen(demo: Demo) -> Outcome:
    return await demo.evaluate(FROZEN_USER)


async def evaluation_unknown(demo: Demo) -> Outcome:
    return await demo.evaluate("852-00000000")


async def evaluation_poor(demo: Demo) -> Outcome:
    return await demo.evaluate(POOR_USER)


async def pin_payment(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER)
    answer = await demo.create(request)
    redirect = await demo.type_code(answer, PIN)
    outcome = await demo.final(request)
    await demo.notified(request.payment_request_id)
    outcome.state += f" → status={_redirect_status(redirect)}"
    return outcome


async def otp_payment(demo: Demo) -> Outcome:
    request = demo.order(OTP_USER)
    async with demo.otp_phone:
        answer = await demo.create(request)
        redirect = await demo.type_code(answer, await demo.read_otp(request.payment_request_id))
    outcome = await demo.final(request)
    outcome.state += f" → status={_redirect_status(redirect)}"
    return outcome


async def wrong_code_then_right(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER)
    answer = await demo.create(request)
    wrong = await demo.type_code(answer, "135791")
    if wrong.status_code != 200 or "Wrong PIN. 2 attempts left." not in wrong.text:
        return Outcome(f"pay/{request.payment_request_id}", "wrong code was not refused")
    await demo.type_code(answer, PIN)
    return await demo.final(request)


async def otp_resend(demo: Demo) -> Outcome:
    request = demo.order(OTP_USER)
    async with demo.otp_phone:
        answer = await demo.create(request)
        first = await demo.read_otp(request.payment_request_id)
        page = await demo.user.get(answer.payment_url or "")
        resent = await demo.user.post(f"{answer.payment_url}/resend", data=form_fields(page.text, "/resend"))
        second = await demo.read_otp(request.payment_request_id, after=first)
        if "new code" not in resent.text:
            return Outcome(f"pay/{request.payment_request_id}", "resend failed")
        stale = await demo.type_code(answer, first)  # the replaced code no longer works
        if "Wrong code" not in stale.text:
            return Outcome(f"pay/{request.payment_request_id}", "stale code accepted")
        await demo.type_code(answer, second)
    return await demo.final(request)


async def too_many_wrong_codes(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER)
    answer = await demo.create(request)
    last = None
    for _ in range(3):
        last = await demo.type_code(answer, "999999")
    outcome = await demo.final(request)
    outcome.state += f" → status={_redirect_status(last) if last else '?'}"
    return outcome


async def cancelled_on_the_page(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER)
    answer = await demo.create(request)
    page = await demo.user.get(answer.payment_url or "")
    shown = await demo.user.post(f"{answer.payment_url}/cancel", data=form_fields(page.text, "/cancel"))
    outcome = await demo.final(request)
    moved = "nothing moved" if demo.postings(request.payment_request_id) == 0 else "MONEY MOVED"
    outcome.state += f" → status={_redirect_status(shown)}, {moved}"
    return outcome


async def expiry(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER, expires_in=timedelta(seconds=3))
    await demo.create(request)
    return await demo.final(request)


async def insufficient_balance(demo: Demo) -> Outcome:
    request = demo.order(POOR_USER)
    return Outcome(f"pay/{request.payment_request_id}", _result(await demo.create(request)))


async def frozen_user_order(demo: Demo) -> Outcome:
    request = demo.order(FROZEN_USER)
    return Outcome(f"pay/{request.payment_request_id}", _result(await demo.create(request)))


async def over_single_limit(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER, amount=Amount(currency="IDR", value=5_000_001))
    return Outcome(f"pay/{request.payment_request_id}", _result(await demo.create(request)))


async def duplicate_and_inconsistent(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER, expires_in=timedelta(seconds=5))  # left unpaid: let it close soon
    first = await demo.create(request)
    again = await demo.create(request)
    changed = await demo.create(
        request.model_copy(update={"pay_to_amount": Amount(currency="IDR", value=PRICE.value + 1)})
    )
    same = again.payment_id == first.payment_id and again.payment_url == first.payment_url
    return Outcome(
        f"pay/{request.payment_request_id}", f"{'same answer' if same else 'DIFFERENT answer'}, then {_result(changed)}"
    )


async def notify_retried(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER)
    demo.stack.alipayplus.script("notifyPayment", ["U"], subject=request.payment_request_id)
    answer = await demo.create(request)
    await demo.type_code(answer, PIN)
    await demo.notified(request.payment_request_id, count=2)  # U, then S after the 5 s retry
    notices = demo.stack.alipayplus.notifications(request.payment_request_id)
    return Outcome(f"notify/{request.payment_request_id}", f"{len(notices)} deliveries, last S")


async def one_click_consent(demo: Demo) -> Outcome:
    agreement = demo.new_id("a")
    demo.stack.alipayplus.script("authNotify", ["U"], subject=agreement)
    request = demo.order(
        PIN_USER,
        authorization=AuthorizationInfo(
            auth_client_id="2188120040699147", auth_state="authStatus_demo", reference_agreement_id=agreement
        ),
    )
    answer = await demo.create(request)
    await demo.type_code(answer, PIN)
    for _ in range(150):
        notices = demo.stack.alipayplus.auth_notifications(agreement)
        if len(notices) >= 2:
            kind = notices[-1].body["authorizationNotifyType"]
            return Outcome(f"auth/{agreement}", f"{kind} after {len(notices)} deliveries")
        await asyncio.sleep(0.1)
    return Outcome(f"auth/{agreement}", "authNotify not retried")


async def inquiry_schedule(demo: Demo) -> Outcome:
    """Alipay+ inquires every 10 s while the result is unknown; the user verifies meanwhile."""
    request = demo.order(PIN_USER)
    answer = await demo.create(request)
    await asyncio.sleep(1)
    await demo.type_code(answer, PIN)
    schedule = demo.stack.inquiries.schedules[request.payment_request_id]
    outcome = await schedule.result()
    result = outcome.payment_result
    state = f"{result.result_status}/{result.result_code}" if result else "no final result"
    return Outcome(schedule.id, f"{state} after {outcome.inquiries} inquiry")


async def bad_signature(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER)
    body = request.to_wire()
    headers = demo.stack.alipayplus.signer.headers(PayRequest.PATH, body)
    response = await demo.user.post(
        f"{demo.stack.api_url}{PayRequest.PATH}", content=body.replace(b"5000", b"5"), headers=headers
    )
    result = response.json()["result"]
    return Outcome("—", f"{result['resultStatus']}/{result['resultCode']}")


async def unknown_payment_inquiry(demo: Demo) -> Outcome:
    answer = await demo.stack.driver.inquire(demo.new_id("x"))
    return Outcome("—", f"{answer.result.result_status}/{answer.result.result_code}")


async def full_refund(demo: Demo) -> Outcome:
    payment = await demo.paid()
    refund_request_id = demo.new_id("r")
    answer = await demo.refund(payment, PRICE.value, refund_request_id)
    credited = demo.returned(payment[0].payment_request_id)
    return Outcome(f"refund/{refund_request_id}", f"{_result(answer)}, credited {credited}")


async def two_partial_refunds(demo: Demo) -> Outcome:
    payment = await demo.paid()
    first = await demo.refund(payment, 2000, demo.new_id("r"))
    refund_request_id = demo.new_id("r")
    second = await demo.refund(payment, 1500, refund_request_id)
    credited = demo.returned(payment[0].payment_request_id)
    return Outcome(f"refund/{refund_request_id}", f"{_result(first)} + {_result(second)}, credited {credited}")


async def refund_exceeding(demo: Demo) -> Outcome:
    payment = await demo.paid()
    first = await demo.refund(payment, 3000, demo.new_id("r"))
    refund_request_id = demo.new_id("r")
    too_much = await demo.refund(payment, PRICE.value - 3000 + 1, refund_request_id)
    credited = demo.returned(payment[0].payment_request_id)
    return Outcome(f"refund/{refund_request_id}", f"{_result(first)}, then {_result(too_much)}, credited {credited}")


async def duplicate_refund(demo: Demo) -> Outcome:
    payment = await demo.paid()
    refund_request_id = demo.new_id("r")
    first = await demo.refund(payment, 2000, refund_request_id)
    again = await demo.refund(payment, 2000, refund_request_id)
    same = "same" if first.refund_id is not None and again.refund_id == first.refund_id else "DIFFERENT"
    credited = demo.returned(payment[0].payment_request_id)
    return Outcome(f"refund/{refund_request_id}", f"{_result(again)}, {same} refundId, credited {credited}")


async def cancel_unpaid(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER)
    answer = await demo.create(request)
    form = form_fields((await demo.user.get(answer.payment_url or "")).text)  # the page, open before the cancel
    cancelled = await demo.cancel(request)
    page = await demo.user.post(answer.payment_url or "", data={"code": PIN, **form})  # too late: the order is closed
    moved = "nothing moved" if demo.postings(request.payment_request_id) == 0 else "MONEY MOVED"
    return Outcome(
        f"cancel/{request.payment_request_id}",
        f"{_status(cancelled)}, then {await demo.inquiry_result(request)} → status={_redirect_status(page)}, {moved}",
    )


async def cancel_after_success(demo: Demo) -> Outcome:
    request, _ = await demo.paid()
    cancelled = await demo.cancel(request)
    returned = demo.returned(request.payment_request_id)
    return Outcome(
        f"cancel/{request.payment_request_id}",
        f"{_status(cancelled)}, returned {returned}, then {await demo.inquiry_result(request)}",
    )


async def cancel_before_pay(demo: Demo) -> Outcome:
    request = demo.order(PIN_USER)
    cancelled = await demo.cancel(request)  # Alipay+ cancels a payment the wallet never saw ...
    late = await demo.create(request)  # ... and then its pay #2 arrives
    return Outcome(
        f"cancel/{request.payment_request_id}",
        f"{_status(cancelled)}, then pay {_result(late)}, inquiry {await demo.inquiry_result(request)}",
    )


SCENARIOS = [
    Scenario("pay #1: active user is supported", "S/SUCCESS", evaluation_supported),
    Scenario("pay #1: frozen user", "F/USER_STATUS_ABNORMAL", evaluation_frozen),
    Scenario("pay #1: unknown user", "F/USER_NOT_EXIST", evaluation_unknown),
    Scenario("pay #1: balance too low", "F/USER_BALANCE_NOT_ENOUGH", evaluation_poor),
    Scenario("PIN verified, debited, notified", "S/SUCCESS → status=success", pin_payment),
    Scenario("SMS OTP verified", "S/SUCCESS → status=success", otp_payment),
    Scenario("wrong PIN, then right PIN", "S/SUCCESS", wrong_code_then_right),
    Scenario("OTP resent, new code used", "S/SUCCESS", otp_resend),
    Scenario("three wrong codes", "F/USER_PAYMENT_VERIFICATION_FAILED → status=fail", too_many_wrong_codes),
    Scenario("cancelled on the page", "F/ORDER_IS_CLOSED → status=fail, nothing moved", cancelled_on_the_page),
    Scenario("not verified before paymentExpiryTime", "F/ORDER_IS_CLOSED", expiry),
    Scenario("pay #2: balance too low", "F/USER_BALANCE_NOT_ENOUGH", insufficient_balance),
    Scenario("pay #2: frozen user", "F/USER_STATUS_ABNORMAL", frozen_user_order),
    Scenario("pay #2: over the single-payment limit", "F/PAYMENT_AMOUNT_EXCEED_LIMIT", over_single_limit),
    Scenario(
        "pay #2 repeated, then changed", "same answer, then F/REPEAT_REQ_INCONSISTENT", duplicate_and_inconsistent
    ),
    Scenario("notifyPayment answered U, retried", "2 deliveries, last S", notify_retried),
    Scenario("one-click consent: authNotify retried", "TOKEN_CREATED after 2 deliveries", one_click_consent),
    Scenario("Alipay+ inquiry schedule (10 s)", "S/SUCCESS after 1 inquiry", inquiry_schedule),
    Scenario("tampered body", "F/INVALID_SIGNATURE", bad_signature),
    Scenario("inquiry for an unknown payment", "F/ORDER_NOT_EXIST", unknown_payment_inquiry),
    Scenario("refund in full", "S/SUCCESS, credited IDR 50.00", full_refund),
    Scenario("two partial refunds", "S/SUCCESS + S/SUCCESS, credited IDR 35.00", two_partial_refunds),
    Scenario(
        "refund beyond the amount paid",
        "S/SUCCESS, then F/REFUND_AMOUNT_EXCEED, credited IDR 30.00",
        refund_exceeding,
    ),
    Scenario("refund request repeated", "S/SUCCESS, same refundId, credited IDR 20.00", duplicate_refund),
    Scenario(
        "cancel of an unpaid order",
        "S/SUCCESS, then F/ORDER_IS_CLOSED → status=fail, nothing moved",
        cancel_unpaid,
    ),
    Scenario("cancel after success", "S/SUCCESS, returned IDR 50.00, then F/ORDER_IS_CLOSED", cancel_after_success),
    Scenario(
        "cancel of an unknown payment, then pay #2",
        "S/SUCCESS, then pay F/ORDER_IS_CLOSED, inquiry F/ORDER_IS_CLOSED",
        cancel_before_pay,
    ),
    *MPM_SCENARIOS,
    *NFC_SCENARIOS,
    *NFC_PAY_SCENARIOS,
]


def forget_earlier_runs(stack: DevStack) -> None:
    """The demo types wrong codes on purpose and activates new phones; an earlier run's must not
    make this one wait or pass the device quota (both counted in the database the dev stack keeps)."""
    engine = create_engine_for(stack.settings.database_url)
    credentials = stack.settings.credentials(engine)
    nfc_tokens = NfcTokens(engine, stack.settings.nfc_max_devices)
    for user in DEMO_USERS:
        credentials.unlock(user.customer_id, "demo")
        nfc_tokens.release_devices(user.customer_id)
    credentials.unlock_address("127.0.0.1", "demo")
    engine.dispose()


async def run_scenarios(stack: DevStack, console: Console) -> list[tuple[Scenario, Outcome, float]]:
    forget_earlier_runs(stack)
    demo = Demo(stack)
    results: list[tuple[Scenario, Outcome, float]] = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:

        async def one(scenario: Scenario) -> None:
            task = progress.add_task(scenario.name, total=1)
            started = time.perf_counter()
            try:
                outcome = await asyncio.wait_for(scenario.run(demo), timeout=60)
            except Exception as exc:  # a broken scenario is a wrong state, not a crash of the demo
                outcome = Outcome("—", f"error: {type(exc).__name__}: {exc}"[:120])
            seconds = time.perf_counter() - started
            mark = "[green]✓[/]" if outcome.state == scenario.expected else "[red]✗[/]"
            progress.update(task, completed=1, description=f"{mark} {scenario.name}")
            results.append((scenario, outcome, seconds))

        await asyncio.gather(*(one(scenario) for scenario in SCENARIOS))
        settling = progress.add_task("Alipay+ inquiry schedules settle", total=1)
        try:
            settled = f"[green]✓[/] {await asyncio.wait_for(demo.inquiries_settled(), timeout=30)}"
        except TimeoutError:
            settled = "[red]✗[/] some Alipay+ inquiry schedules are still waiting for a final result"
        progress.update(settling, completed=1, description=settled)
    await demo.aclose()
    order = {scenario.name: index for index, scenario in enumerate(SCENARIOS)}
    return sorted(results, key=lambda row: order[row[0].name])


def summary(results: list[tuple[Scenario, Outcome, float]]) -> Table:
    table = Table(title="Easy Pay, refund, cancel, MPM, NFC activation and NFC payment scenarios")
    for column in ("scenario", "workflow id", "final state", "seconds", ""):
        table.add_column(column)
    for scenario, outcome, seconds in results:
        ok = outcome.state == scenario.expected
        state = outcome.state if ok else f"{outcome.state} (expected {scenario.expected})"
        table.add_row(
            scenario.name, outcome.workflow_id, state, f"{seconds:.2f}", "[green]ok[/]" if ok else "[red]WRONG[/]"
        )
    return table


def ledger_line(check: LedgerCheck) -> str:
    return (
        f"Ledger: {check.postings} postings, balanced={check.balanced}, balances match entries="
        f"{check.balances_match_entries}, no negative user balance={check.no_negative_user_balance}, "
        f"returns within debits={check.returns_within_debits}"
    )


async def run_demo(var_dir: Path, console: Console, ports: Ports = DEFAULT_PORTS) -> int:
    if not console.is_terminal:
        console.width = max(console.width, 150)  # keep the summary table readable in logs
    console.print("Starting the embedded stack (Temporal dev server, worker, API, sandbox Alipay+)…")
    async with dev_stack(var_dir, ports) as stack:
        results = await run_scenarios(stack, console)
        console.print(summary(results))
        engine = create_engine_for(stack.settings.database_url)
        check = Ledger(engine).check()
        engine.dispose()
        console.print(ledger_line(check))
        console.print(f"Temporal Web UI: {stack.web_ui_url}/namespaces/{stack.settings.temporal_namespace}/workflows")
        console.print("(the demo stops the stack it started; `make dev` brings it back with these workflows)")
    wrong = [scenario.name for scenario, outcome, _ in results if outcome.state != scenario.expected]
    if wrong or not check.ok:
        console.print(
            f"[red]{len(wrong)} scenario(s) in the wrong state[/]" + ("" if check.ok else "; ledger check failed")
        )
        return 1
    console.print(f"[green]All {len(results)} scenarios ended in their expected state.[/]")
    return 0
