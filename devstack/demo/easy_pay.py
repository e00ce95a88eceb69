"""``make demo``'s Easy Pay, refund and cancel scenarios.

Alipay+ is the sandbox driver (signed pay, inquiryPayment, refund and cancelPayment calls); the
user is an HTTP client on our verification page, reading OTPs from the sandbox SMS inbox.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx

from alipayplus import Amount, AuthorizationInfo, PayRequest
from api.pages import form_fields, link

from .session import FROZEN_USER, OTP_USER, PIN, PIN_USER, POOR_USER, PRICE, Demo, Outcome, Scenario, _result, _status


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


EASY_PAY_SCENARIOS = [
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
]
