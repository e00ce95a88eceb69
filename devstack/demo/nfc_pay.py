"""``make demo``'s NFC payment scenarios (issue 6): taps at a POS and what the acquirer sends later.

Each scenario activates its own phone (``devstack.demo.nfc.activated_phone``: the PIN user's card at
status 2) and taps it on a sandbox POS terminal (``sandbox.pos.PosTerminal``) whose CVM limit is
low, so a high-value tap needs the phone's verification. The terminal sends the authorization over
HTTP to the sandbox Mastercard, which verifies the ARQC and hands it to Alipay+'s card-event
converter (``stack.card_events``): that sends our NFC pay, and turns the later reversal, clearing
and merchant refunds into cancelPayment, refund and adjustRefund. Money given back or credited is
read from the ledger; the workflow id shown is the one worth opening in the Web UI.

A locked phone (status 3 or 4) answers GENERATE AC with ``69 85`` and tells the app 10008, as it
does without credentials: the terminal ends that tap as ``DECLINED`` (the card refused it), with no
authorization sent and no credential used.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alipayplus import Amount, PayRequest, Result
from hce_device.card import TransactionListener
from sandbox.alipayplus.card_events import CardAuthorization, CardEventResult, ConversionStep, MppCall
from sandbox.pos import HttpCardNetwork, PosConfig, PosTerminal, TapOutcome
from wallet.ledger import PostingKind

from .nfc import PIN_USER, ActivatedPhone, activated_phone, credentials_left
from .session import Demo, Outcome, Scenario

CURRENCY = "IDR"
TAP = Amount(currency=CURRENCY, value=250_00)  # IDR 250.00: the user's balance is shared with ~40 scenarios
HIGH_VALUE = Amount(currency=CURRENCY, value=600_00)  # above the demo terminal's CVM limit
DEMO_TERMINAL = PosConfig(terminal_id="DEMOPOS1", merchant_name="Demo Kopi", cvm_required_limit=500_00)
CLEARED = Amount(currency=CURRENCY, value=180_00)  # the acquirer clears less than it authorized
PARTIAL_REFUND = Amount(currency=CURRENCY, value=100_00)
EXCESS_REFUND = Amount(currency=CURRENCY, value=400_00)  # above the IDR 250.00 paid
UNLINKED_REFUND = Amount(currency=CURRENCY, value=120_00)
TAPS_IN_A_ROW = 12  # more than activation's 10 credentials: replenishment must happen along the way
POLLS, POLL_SECONDS = 200, 0.05


class TapEvents(TransactionListener):
    """The wallet app's TransactionListener: what the phone told the user."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.prompts = 0  # "verify on your phone"

    def on_transaction_auth(self) -> None:
        self.prompts += 1

    def on_transaction_failed(self, code: str) -> None:
        self.failures.append(code)


@asynccontextmanager
async def _at_the_counter(demo: Demo) -> AsyncIterator[tuple[ActivatedPhone, PosTerminal, TapEvents]]:
    """A freshly activated phone with a listener, and the demo's terminal on the sandbox Mastercard."""
    network = HttpCardNetwork(demo.stack.sandbox_url)
    try:
        async with activated_phone(demo, PIN_USER) as phone:
            events = TapEvents()
            phone.sdk.set_transaction_listener(events)
            yield phone, PosTerminal(DEMO_TERMINAL, network), events
    finally:
        await network.aclose()


def _tap_state(outcome: TapOutcome) -> str:
    return outcome.status.value if outcome.reason is None else f"{outcome.status.value} ({outcome.reason})"


def _authorization(demo: Demo, outcome: TapOutcome) -> CardAuthorization:
    """Alipay+'s record of an approved tap: the NFC pay it sent, and our paymentId."""
    if not outcome.approved or outcome.authorization is None:
        raise AssertionError(f"the tap was not approved: {_tap_state(outcome)}")
    return demo.stack.card_events.authorizations[outcome.authorization.retrieval_reference]


def _payment(authorization: CardAuthorization) -> PayRequest:
    if authorization.payment is None:
        raise AssertionError(f"authorization {authorization.authorization_id} sent no pay")
    return authorization.payment


async def _paid_tap(demo: Demo) -> tuple[CardAuthorization, PayRequest]:
    """A new phone's approved tap of ``TAP``: Alipay+'s authorization and the NFC pay it became."""
    async with _at_the_counter(demo) as (phone, terminal, _):
        authorization = _authorization(demo, await terminal.tap(phone.sdk, TAP))
    return authorization, _payment(authorization)


def _status(result: Result | None) -> str:
    return f"{result.result_status}/{result.result_code}" if result else "no answer"


def _call(step: ConversionStep) -> MppCall:
    if step.call is None:
        raise AssertionError(f"{step.event} sent nothing ({step.action})")
    return step.call


def _steps(result: CardEventResult) -> str:
    """Each step as ``api amount result``, e.g. ``refund IDR 70.00 S/SUCCESS``."""
    return " + ".join(f"{_call(step).api} {step.amount} {_status(_call(step).result)}" for step in result.steps)


def _refund_request_id(step: ConversionStep) -> str:
    return str(_call(step).request["refundRequestId"])


def _credited(demo: Demo, refund_request_id: str) -> Amount:
    """What one adjustRefund credited to the user (its posting's reference is its refundRequestId)."""
    return demo.returned(refund_request_id, kinds=(PostingKind.ADJUST_REFUND,))


async def _counted(demo: Demo, phone: ActivatedPhone, taps: int) -> dict[str, object]:
    """Report what the phone still holds until our server counted ``taps`` and agrees with the phone."""
    state: dict[str, object] = {}
    for _ in range(POLLS):
        waiting = await phone.sdk.report_taps()
        token = await phone.token_state(demo)
        state = token
        if waiting == 0 and token["taps"] == taps and credentials_left(token) == phone.unused_credentials():
            return state
        await asyncio.sleep(POLL_SECONDS)
    return state


# --- the scenarios --------------------------------------------------------------------------


async def taps_with_replenishment(demo: Demo) -> Outcome:
    async with _at_the_counter(demo) as (phone, terminal, _):
        outcomes = []
        for _ in range(TAPS_IN_A_ROW):
            outcomes.append(await terminal.tap(phone.sdk, TAP))
            await phone.sdk.report_taps()  # as the app does after a tap: report it, top up below 10
        state = await _counted(demo, phone, TAPS_IN_A_ROW)
        on_phone = phone.unused_credentials()
    approved = sum(outcome.approved for outcome in outcomes)
    replenished = "replenished" if int(str(state["replenishments"])) >= 1 else "NOT replenished"
    agree = "phone = server" if on_phone == credentials_left(state) else f"phone {on_phone} ≠ server"
    return Outcome(
        f"token/{phone.token_reference_id}",
        f"{approved}/{len(outcomes)} approved, {state['taps']} taps counted, {replenished}, {agree}",
    )


async def high_value_tap(demo: Demo) -> Outcome:
    async with _at_the_counter(demo) as (phone, terminal, events):
        first = await terminal.tap(phone.sdk, HIGH_VALUE)
        prompted = events.prompts
        phone.sdk.verify_consumer()  # the user's biometric on the phone
        second = await terminal.tap(phone.sdk, HIGH_VALUE)
        payment = _payment(_authorization(demo, second))
    inquiry = await demo.inquiry_result(payment)
    prompt = "phone asked to verify" if prompted else "phone did NOT ask"
    return Outcome(
        f"pay/{payment.payment_request_id}",
        f"{first.status.value} ({prompt}), verified, {second.status.value}, inquiry {inquiry}",
    )


async def tap_while_locked(demo: Demo) -> Outcome:
    async with _at_the_counter(demo) as (phone, terminal, events):
        sdk = phone.sdk

        async def tap() -> str:
            """The POS's outcome, and what the phone's listener was told if the tap failed there."""
            told = len(events.failures)
            outcome = await terminal.tap(sdk, TAP)
            failures = events.failures[told:]
            return outcome.status.value + (f" ({', '.join(failures)})" if failures else "")

        locked = await sdk.lock()
        while_locked = await tap()
        unlocked = await sdk.unlock()
        after_unlock = await tap()
        locally = sdk.lock_locally()
        while_local = await tap()
        local_unlocked = sdk.local_unlock()
        after_local_unlock = await tap()
    return Outcome(
        f"token/{phone.token_reference_id}",
        f"lock {locked.status}: {while_locked}; unlock {unlocked.status}: {after_unlock}; "
        f"local lock {locally.status}: {while_local}; local unlock {local_unlocked.status}: {after_local_unlock}",
    )


async def same_day_reversal(demo: Demo) -> Outcome:
    authorization, payment = await _paid_tap(demo)
    reversal = await demo.stack.card_events.reverse(authorization.authorization_id)
    returned = demo.returned(payment.payment_request_id)
    return Outcome(
        f"cancel/{payment.payment_request_id}",
        f"{reversal.steps[0].event.value}: {_steps(reversal)}, returned {returned}",
    )


async def partial_clearing(demo: Demo) -> Outcome:
    authorization, payment = await _paid_tap(demo)
    cleared = await demo.stack.card_events.clear(authorization.authorization_id, CLEARED)
    returned = demo.returned(payment.payment_request_id)
    return Outcome(
        f"refund/{_refund_request_id(cleared.steps[0])}",
        f"cleared {CLEARED} of {TAP}: {_steps(cleared)}, returned {returned}",
    )


async def merchant_refund(demo: Demo) -> Outcome:
    authorization, payment = await _paid_tap(demo)
    refunded = await demo.stack.card_events.merchant_refund(authorization.authorization_id, PARTIAL_REFUND)
    returned = demo.returned(payment.payment_request_id)
    return Outcome(f"refund/{_refund_request_id(refunded.steps[0])}", f"{_steps(refunded)}, returned {returned}")


async def excess_refund(demo: Demo) -> Outcome:
    authorization, payment = await _paid_tap(demo)
    refunded = await demo.stack.card_events.merchant_refund(authorization.authorization_id, EXCESS_REFUND)
    if len(refunded.steps) != 2:
        return Outcome(f"pay/{payment.payment_request_id}", f"{len(refunded.steps)} step(s): {_steps(refunded)}")
    excess = _refund_request_id(refunded.steps[1])
    returned, credited = demo.returned(payment.payment_request_id), _credited(demo, excess)
    total = Amount(currency=CURRENCY, value=returned.value + credited.value)
    scenario = _call(refunded.steps[1]).request.get("subScenarioType")
    return Outcome(
        f"adjust-refund/{excess}", f"{_steps(refunded)} ({scenario}), credited {returned} + {credited} = {total}"
    )


async def unlinked_refund(demo: Demo) -> Outcome:
    async with activated_phone(demo, PIN_USER) as phone:
        token = phone.token_reference_id
    refunded = await demo.stack.card_events.unlinked_refund(token, UNLINKED_REFUND)
    step = refunded.steps[0]
    request_id = _refund_request_id(step)
    scenario = _call(step).request.get("subScenarioType")
    return Outcome(
        f"adjust-refund/{request_id}", f"{_steps(refunded)} ({scenario}), credited {_credited(demo, request_id)}"
    )


async def payment_found_by_custom_data(demo: Demo) -> Outcome:
    custom_data = f"KOPI{uuid.uuid4().hex[:10]}".encode()  # 14 bytes, the most the IAD carries
    async with _at_the_counter(demo) as (phone, terminal, _):
        phone.sdk.set_custom_data(custom_data)  # the app's order number for this tap
        authorization = _authorization(demo, await terminal.tap(phone.sdk, TAP))
        found = await phone.sdk.payment_for_tap(custom_data)
    payment = _payment(authorization)
    if found is None:
        return Outcome(f"pay/{payment.payment_request_id}", "APPROVED, but no payment for its custom data")
    same = "the tap's payment" if found["paymentRequestId"] == payment.payment_request_id else "ANOTHER payment"
    paid = Amount.model_validate(found["payToAmount"])
    return Outcome(
        f"pay/{payment.payment_request_id}",
        f"APPROVED; by its custom data the app finds {same}: {found['status']} {paid}",
    )


NFC_PAY_SCENARIOS = [
    Scenario(
        "NFC pay: 12 taps, credentials replenished",
        "12/12 approved, 12 taps counted, replenished, phone = server",
        taps_with_replenishment,
    ),
    Scenario(
        "NFC pay: high-value tap, verified on the phone",
        "SEE_PHONE (phone asked to verify), verified, APPROVED, inquiry S/SUCCESS",
        high_value_tap,
    ),
    Scenario(
        "NFC pay: taps while locked, then unlocked",
        "lock 3: DECLINED (10008); unlock 2: APPROVED; local lock 4: DECLINED (10008); local unlock 2: APPROVED",
        tap_while_locked,
    ),
    Scenario(
        "NFC pay: same-day reversal",
        "REVERSAL_IN_WINDOW: cancelPayment IDR 250.00 S/SUCCESS, returned IDR 250.00",
        same_day_reversal,
    ),
    Scenario(
        "NFC pay: partial clearing",
        "cleared IDR 180.00 of IDR 250.00: refund IDR 70.00 S/SUCCESS, returned IDR 70.00",
        partial_clearing,
    ),
    Scenario("NFC pay: merchant refund", "refund IDR 100.00 S/SUCCESS, returned IDR 100.00", merchant_refund),
    Scenario(
        "NFC pay: merchant refund above the payment",
        "refund IDR 250.00 S/SUCCESS + adjustRefund IDR 150.00 S/SUCCESS (EXCEED_REFUND), "
        "credited IDR 250.00 + IDR 150.00 = IDR 400.00",
        excess_refund,
    ),
    Scenario(
        "NFC pay: refund with no payment (unlinked)",
        "adjustRefund IDR 120.00 S/SUCCESS (UNLINKED_REFUND), credited IDR 120.00",
        unlinked_refund,
    ),
    Scenario(
        "NFC pay: the app finds its payment by custom data",
        "APPROVED; by its custom data the app finds the tap's payment: SUCCESS IDR 250.00",
        payment_found_by_custom_data,
    ),
]
