"""``make demo``'s merchant-presented mode scenarios (seed 003): a wallet user scans a merchant's code.

The user is ``hce_device.wallet_app.WalletApp`` (with Alipay+'s client SDK inside) on our real
API; the merchants, their codes and cashier pages are the sandbox Alipay+'s. Each scenario
reports where the payment ended as Alipay+ learns it (inquiryPayment) and where the user ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from alipayplus import Result
from hce_device.alipayplus_client_sdk import DeviceInfo
from hce_device.wallet_app import WalletApp
from sandbox.alipayplus.driver import apply_token_request

from ..stack import BLOCKED_CODE_PREFIX
from .session import Demo, Outcome, Scenario

PIN_USER, FROZEN_USER, PIN = "852-11112222", "852-33334444", "246810"
ANDROID = DeviceInfo(os="Android", mcc="525", time_zone="Asia/Singapore")  # a visitor in Singapore
IPHONE = DeviceInfo(os="iOS", time_zone="Asia/Hong_Kong")
SMALL_ORDER = {"currency": "SGD", "value": "5"}  # SGD 0.05: cheap enough to run the demo daily


def _status(result: Result) -> str:
    return f"{result.result_status}/{result.result_code}"


@asynccontextmanager
async def _signed_in(demo: Demo, login_id: str = PIN_USER, device: DeviceInfo = ANDROID) -> AsyncIterator[WalletApp]:
    stack = demo.stack
    app = WalletApp(stack.api_url, stack.sandbox_url, stack.settings.psp_id, device)
    try:
        await app.login(login_id, PIN)
        yield app
    finally:
        await app.aclose()


async def _order_code(demo: Demo, **options: Any) -> str:
    """The merchant asks Alipay+ for an order code (the sandbox's merchant control)."""
    response = await demo.user.post(
        f"{demo.stack.sandbox_url}/sandbox/merchant/orderCodes",
        json={"amount": SMALL_ORDER, "description": "Kopi and kaya toast", **options},
    )
    response.raise_for_status()
    return str(response.json()["codeValue"])


async def _entry_code(demo: Demo, currency: str) -> str:
    response = await demo.user.get(f"{demo.stack.sandbox_url}/sandbox/merchant/entryCodes")
    response.raise_for_status()
    return next(str(code["codeValue"]) for code in response.json() if code["currency"] == currency)


async def _final(demo: Demo, payment_request_id: str | None) -> str:
    if not payment_request_id:
        return "no payment"
    for _ in range(200):
        answer = await demo.stack.driver.inquire(payment_request_id)
        if answer.payment_result is not None and answer.payment_result.is_final:
            return _status(answer.payment_result)
        await asyncio.sleep(0.1)
    return "U/PAYMENT_IN_PROCESS"


# --- the scenarios --------------------------------------------------------------------------


async def scan_page_logos(demo: Demo) -> Outcome:
    async with _signed_in(demo) as app:
        here = await app.scan_page_logos()  # the region from the carrier (525: Singapore)
        elsewhere = await app.scan_page_logos("US")
    return Outcome("—", f"SG: {'logos' if here else 'none'}, US: {len(elsewhere)} logos")


async def order_code_paid(demo: Demo) -> Outcome:
    code = await _order_code(demo, redirectUrl=f"{demo.stack.sandbox_url}/sandbox/merchant/result")
    async with _signed_in(demo) as app:
        scanned = await app.scan(code)
        if scanned.page is None or scanned.decoded is None:
            return Outcome("—", f"{scanned.verdict}: {scanned.message}")
        result = await scanned.page.confirm()
        request_id = scanned.decoded.payment_request_id
    return Outcome(f"pay/{request_id}", f"{await _final(demo, request_id)} → {result.destination}")


async def entry_code_paid(demo: Demo) -> Outcome:
    """The user types the amount on the merchant's cashier page; on iOS no WAP redirect."""
    code = await _entry_code(demo, "HKD")
    async with _signed_in(demo, device=IPHONE) as app:
        scanned = await app.scan(code, amount="0.30")
        if scanned.page is None or scanned.decoded is None:
            return Outcome("—", f"{scanned.verdict}: {scanned.message}")
        result = await scanned.page.confirm()
        request_id = scanned.decoded.payment_request_id
    return Outcome(f"pay/{request_id}", f"{await _final(demo, request_id)} → {result.destination} ({result.status})")


async def user_cancels(demo: Demo) -> Outcome:
    async with _signed_in(demo) as app:
        scanned = await app.scan(await _order_code(demo))
        if scanned.page is None or scanned.decoded is None:
            return Outcome("—", f"{scanned.verdict}: {scanned.message}")
        result = await scanned.page.cancel()
        request_id = scanned.decoded.payment_request_id
    moved = "nothing moved" if request_id and demo.postings(request_id) == 0 else "MONEY MOVED"
    return Outcome(f"pay/{request_id}", f"{await _final(demo, request_id)} → {result.status}, {moved}")


async def order_times_out(demo: Demo) -> Outcome:
    async with _signed_in(demo) as app:
        scanned = await app.scan(await _order_code(demo, paymentExpiresInSeconds=3))
    request_id = scanned.decoded.payment_request_id if scanned.decoded else None
    return Outcome(f"pay/{request_id}", await _final(demo, request_id))  # the user never answered


async def frozen_user(demo: Demo) -> Outcome:
    async with _signed_in(demo, FROZEN_USER) as app:
        scanned = await app.scan(await _order_code(demo))
    return Outcome("—", _status(scanned.decoded.result) if scanned.decoded else scanned.verdict)


async def blocklisted_code(demo: Demo) -> Outcome:
    async with _signed_in(demo) as app:
        scanned = await app.scan(f"{BLOCKED_CODE_PREFIX}promo-42")
    sent = any(r.code_value.startswith(BLOCKED_CODE_PREFIX) for r in demo.stack.code_service.identified)
    untouched = "SENT to Alipay+" if sent else "not sent to Alipay+"
    return Outcome("—", f"{scanned.verdict}, {untouched}")


async def invalid_code(demo: Demo) -> Outcome:
    async with _signed_in(demo) as app:
        forged = await app.scan("https://qr.alipayplus.sandbox/o/this-order-was-never-issued")
        foreign = await app.scan("https://example.com/not-a-payment-code")
    decoded = _status(forged.decoded.result) if forged.decoded else forged.verdict
    return Outcome("—", f"{decoded}, foreign code {foreign.verdict}")


async def expired_code(demo: Demo) -> Outcome:
    code = await _order_code(demo, codeExpiresInSeconds=1)
    await asyncio.sleep(1.5)  # the merchant's code expires before the user scans it
    async with _signed_in(demo) as app:
        scanned = await app.scan(code)
    return Outcome("—", _status(scanned.decoded.result) if scanned.decoded else scanned.verdict)


async def reused_auth_code(demo: Demo) -> Outcome:
    driver = demo.stack.driver
    async with _signed_in(demo) as app:
        auth_code = await app.get_auth_code()  # what the client SDK's getAuthCode receives
    psp_id = demo.stack.settings.psp_id
    first = await driver.apply_token(apply_token_request(auth_code=auth_code, psp_id=psp_id))
    again = await driver.apply_token(apply_token_request(auth_code=auth_code, psp_id=psp_id))
    return Outcome("—", f"{_status(first.result)}, then {_status(again.result)}")


async def token_refresh(demo: Demo) -> Outcome:
    driver, psp_id = demo.stack.driver, demo.stack.settings.psp_id
    async with _signed_in(demo) as app:
        auth_code = await app.get_auth_code()
    issued = await driver.apply_token(apply_token_request(auth_code=auth_code, psp_id=psp_id))
    refreshed = await driver.apply_token(apply_token_request(refresh_token=issued.refresh_token, psp_id=psp_id))
    replayed = await driver.apply_token(apply_token_request(refresh_token=issued.refresh_token, psp_id=psp_id))
    new_pair = refreshed.access_token not in (None, issued.access_token)
    same = (replayed.access_token, replayed.refresh_token) == (refreshed.access_token, refreshed.refresh_token)
    return Outcome(
        "—",
        f"{_status(refreshed.result)} {'new pair' if new_pair else 'SAME pair'}, "
        f"replay {'gets the same new pair' if same else 'DIFFERS'}",
    )


MPM_SCENARIOS = [
    Scenario("MPM: scan page acceptance marks", "SG: logos, US: 0 logos", scan_page_logos),
    Scenario("MPM: order code paid (Android)", "S/SUCCESS → MERCHANT_PAGE", order_code_paid),
    Scenario("MPM: entry code paid (iOS)", "S/SUCCESS → RESULT_PAGE (success)", entry_code_paid),
    Scenario("MPM: user cancels", "F/ORDER_IS_CLOSED → cancelled, nothing moved", user_cancels),
    Scenario("MPM: unanswered order times out", "F/ORDER_IS_CLOSED", order_times_out),
    Scenario("MPM: frozen user", "F/USER_STATUS_ABNORMAL", frozen_user),
    Scenario("MPM: blocklisted code", "INVALID, not sent to Alipay+", blocklisted_code),
    Scenario("MPM: invalid code", "F/INVALID_CODE, foreign code INVALID", invalid_code),
    Scenario("MPM: expired code", "F/EXPIRED_CODE", expired_code),
    Scenario("MPM: authCode used twice", "S/SUCCESS, then F/USED_CODE", reused_auth_code),
    Scenario("MPM: token refresh and replay", "S/SUCCESS new pair, replay gets the same new pair", token_refresh),
]
