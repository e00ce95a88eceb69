"""The MPM confirmation page in the wallet app's web view (seed 003, steps 6–7): confirm, cancel, and
where the user goes next (``api.routers.mpm.next_location``).

The merchant's order code is the sandbox Alipay+'s; the wallet app (``hce_device.wallet_app``, the
client SDK inside) identifies and decodes it, which makes Alipay+ send our pay; the page it names
opens in Chromium, signed in to the wallet by the session cookie the app's login sets. The payment's
final state is Alipay+'s inquiryPayment's.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, expect

from alipayplus import Amount
from devstack.demo import PIN, PIN_USER, Demo
from devstack.stack import DevStack
from hce_device.alipayplus_client_sdk import DeviceInfo
from hce_device.wallet_app import WalletApp
from sandbox.alipayplus.mpm import DEFAULT_EXCHANGE_RATES

from .conftest import ANDROID_UA, IOS_UA, AxeCheck, Shot
from .pages import expect_result, press

pytestmark = pytest.mark.timeout(180)

ORDER = Amount(currency="SGD", value=5)  # SGD 0.05, quoted into the wallet's IDR
WALLET_HOME = "mppwallet://home"


@dataclass(frozen=True)
class Scanned:
    """An order code the user scanned: our confirmation page for it (``url``) and where the
    merchant wants the user back (``merchant_url``: the sandbox merchant's result page)."""

    payment_request_id: str
    url: str
    merchant_url: str
    reference_order_id: str

    @property
    def payment_id(self) -> str:
        return urlsplit(self.url).path.rsplit("/", 1)[-1]


async def scan(stack: DevStack, user_agent: str) -> Scanned:
    """The merchant shows an order code (with its result page as the redirect); the app scans it."""
    code = stack.mpm.create_order_code(ORDER, "Kopi and kaya toast")
    code.redirect_url = stack.mpm.result_url(code.reference_order_id)
    device = DeviceInfo(os="iOS" if "iPhone" in user_agent else "Android", user_agent=user_agent)
    async with WalletApp(stack.api_url, stack.sandbox_url, stack.settings.psp_id, device) as app:
        await app.login(PIN_USER, PIN)
        scanned = await app.scan(code.code_value)
    assert scanned.page is not None and scanned.decoded is not None, scanned.message
    assert scanned.decoded.payment_request_id
    return Scanned(scanned.decoded.payment_request_id, scanned.page.url, code.redirect_url, code.reference_order_id)


async def sign_in(context: BrowserContext, stack: DevStack) -> None:
    """The wallet app's login: its session cookie then rides with the web view's requests to our host."""
    response = await context.request.post(f"{stack.api_url}/app/v1/login", data={"loginId": PIN_USER, "pin": PIN})
    assert response.ok, await response.text()
    assert any(cookie.get("name") == "mpp_session" for cookie in await context.cookies(stack.api_url))


async def open_confirmation(page: Page, context: BrowserContext, stack: DevStack, scanned: Scanned) -> None:
    await sign_in(context, stack)
    response = await page.goto(scanned.url)
    assert response is not None and response.status == 200
    await expect(page.locator("#pay-to-amount")).to_contain_text("IDR")
    await expect(page.locator("#payment-amount")).to_contain_text(str(ORDER))
    rate = DEFAULT_EXCHANGE_RATES["SGD/IDR"]
    await expect(page.locator("#rate")).to_contain_text(re.compile(rf"1 SGD = {re.escape(str(rate))} IDR"))
    await expect(page.locator("#confirm")).to_be_enabled()
    await expect(page.locator("#cancel")).to_be_enabled()


async def final_state(shop: Demo, payment_request_id: str) -> str:
    """Where the payment ended, as Alipay+'s inquiryPayment tells it (waits while it is unknown)."""
    for _ in range(200):
        answer = await shop.stack.driver.inquire(payment_request_id)
        result = answer.payment_result
        if result is not None and result.is_final:
            return f"{result.result_status}/{result.result_code}"
        await asyncio.sleep(0.1)
    return "U/PAYMENT_IN_PROCESS"


async def test_unsigned_in_page_asks_to_sign_in(stack: DevStack, page: Page, shot: Shot) -> None:
    """Without the wallet's session the page names no payment and changes nothing."""
    scanned = await scan(stack, ANDROID_UA)
    response = await page.goto(scanned.url)
    assert response is not None and response.status == 401
    await expect(page.locator("#confirm")).to_have_count(0)
    await shot("1-sign-in")


async def test_confirm_on_android_goes_to_the_merchants_page(
    stack: DevStack, shop: Demo, context: BrowserContext, page: Page, shot: Shot, axe: AxeCheck
) -> None:
    scanned = await scan(stack, ANDROID_UA)
    await open_confirmation(page, context, stack, scanned)
    await shot("1-confirm")
    await axe("mpm-confirm")

    landed = await press(page, "#confirm")  # Android: a merchant's http(s) page opens at once
    assert landed.url == scanned.merchant_url
    await expect(page.locator("#referenceOrderId")).to_have_text(scanned.reference_order_id)
    assert await final_state(shop, scanned.payment_request_id) == "S/SUCCESS"
    await shop.notified(scanned.payment_request_id)
    await page.reload()  # the merchant has heard (notifyPayment): its page says paid
    await expect(page.locator("#status")).to_have_text("success")
    await shot("2-merchant-page")


@pytest.mark.parametrize("user_agent", [IOS_UA], ids=["ios"])
async def test_confirm_on_ios_shows_our_result_page(
    stack: DevStack, shop: Demo, context: BrowserContext, page: Page, shot: Shot, axe: AxeCheck, user_agent: str
) -> None:
    scanned = await scan(stack, user_agent)
    await open_confirmation(page, context, stack, scanned)
    await shot("1-confirm")

    landed = await press(page, "#confirm")  # iOS: no merchant WAP page from the web view; our result page
    assert urlsplit(landed.url).path == urlsplit(scanned.url).path
    await expect_result(page, "success")
    await expect(page.locator("#reference")).to_have_text(scanned.payment_id)
    await expect(page.locator("#time")).not_to_be_empty()
    await expect(page.locator("a#next")).to_have_attribute("href", WALLET_HOME)
    await shot("2-paid")
    await axe("mpm-result-success")
    assert await final_state(shop, scanned.payment_request_id) == "S/SUCCESS"
    debited = shop.postings(scanned.payment_request_id)
    assert debited > 0

    await page.reload()  # a reload is a GET: still the result, nothing paid twice
    await expect_result(page, "success")
    assert shop.postings(scanned.payment_request_id) == debited


async def test_cancel(
    stack: DevStack, shop: Demo, context: BrowserContext, page: Page, shot: Shot, axe: AxeCheck
) -> None:
    scanned = await scan(stack, ANDROID_UA)
    await open_confirmation(page, context, stack, scanned)

    landed = await press(page, "#cancel")
    assert urlsplit(landed.url).path == urlsplit(scanned.url).path  # a cancel never leaves at once
    await expect_result(page, "cancelled")
    # Android, after a failure: an optional way back to the merchant's page
    await expect(page.locator("a#next")).to_have_attribute("href", scanned.merchant_url)
    await shot("1-cancelled")
    await axe("mpm-result-cancelled")
    assert await final_state(shop, scanned.payment_request_id) == "F/ORDER_IS_CLOSED"
    assert shop.postings(scanned.payment_request_id) == 0
