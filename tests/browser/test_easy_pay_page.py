"""The Easy Pay verification page in a phone's Chromium (seed 004, step 3): PIN right, wrong then
right, three wrong; OTP with one and two resends; expiry; cancel; an invalid link.

Orders come from Alipay+ (the sandbox driver's signed pay #2, as ``make demo`` sends them); each test
ends on our result page, follows its link to Alipay+'s result page where there is one, and checks
the payment's final state by Alipay+'s inquiryPayment.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlsplit

import pytest
from playwright.async_api import Page, expect

from alipayplus import PayRequest
from devstack.demo import OTP_USER, PIN, PIN_USER, PRICE, Demo
from devstack.stack import DevStack

from .conftest import AxeCheck, OtpPhone, Shot
from .pages import expect_result, press, query, same_page

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("unlocked")]

WRONG_PIN = "135791"


@dataclass(frozen=True)
class Order:
    """An Easy Pay order Alipay+ sent us, waiting for the user on our page (``url``)."""

    request: PayRequest
    payment_id: str
    url: str

    @property
    def redirect_url(self) -> str:
        return self.request.payment_redirect_url or ""


async def place_order(shop: Demo, login_id: str, expires_in: timedelta = timedelta(minutes=10)) -> Order:
    request = shop.order(login_id, expires_in=expires_in)
    answer = await shop.create(request)
    assert answer.result.result_code == "PAYMENT_IN_PROCESS", answer.result
    assert answer.payment_id and answer.payment_url
    return Order(request, answer.payment_id, answer.payment_url)


async def final_state(shop: Demo, order: Order) -> str:
    """Where the payment ended, as Alipay+'s inquiryPayment tells it."""
    return (await shop.final(order.request)).state


def masked(login_id: str) -> tuple[str, str]:
    """The paying account's last four digits (shown) and its whole number (never shown)."""
    digits = re.sub(r"\D", "", login_id)
    return digits[-4:], digits


async def expect_verify_page(page: Page, order: Order, login_id: str, attempts: str) -> None:
    """The page while the payment waits: what is paid, by whom (masked), until when, how many tries."""
    await expect(page.locator('main[data-page="verify"]')).to_be_visible()
    await expect(page.locator("#amount")).to_contain_text(str(PRICE))
    last_four, whole = masked(login_id)
    await expect(page.locator("#account")).to_contain_text(last_four)
    await expect(page.locator("#account")).not_to_contain_text(whole)
    await expect(page.locator("#expiry")).to_contain_text(re.compile(r"expire", re.IGNORECASE))
    await expect(page.locator("#attempts")).to_have_text(re.compile(rf"^\s*{attempts} left\s*$"))
    code_action = await page.locator("form#code-form").get_attribute("action") or ""
    assert urlsplit(code_action).path == urlsplit(order.url).path, code_action
    await expect(page.locator("#confirm")).to_be_enabled()
    await expect(page.locator("#cancel")).to_be_enabled()
    cancel_action = await page.locator("form#cancel-form").get_attribute("action") or ""
    assert cancel_action.endswith(f"{urlsplit(order.url).path}/cancel"), cancel_action


async def type_code(page: Page, order: Order, code: str) -> None:
    """Type ``code`` and confirm: the answer is a 303 back to the order's page."""
    await page.locator("#code").fill(code)
    landed = await press(page, "#confirm")
    assert same_page(landed.url, order.url), landed.url


async def expect_continue(page: Page, order: Order, status: str) -> None:
    """``a#continue``: Alipay+'s result page (the order's paymentRedirectUrl) with ``status``; following
    it lands there, showing that status for this payment."""
    link = page.locator("a#continue")
    await expect(link).to_be_visible()
    href = await link.get_attribute("href") or ""
    assert same_page(href, order.redirect_url), (href, order.redirect_url)
    assert query(href) == {**query(order.redirect_url), "status": [status]}, href
    await link.click()
    await expect(page).to_have_url(href)
    await expect(page.locator("#status")).to_have_text(status)
    await expect(page.locator("#paymentRequestId")).to_have_text(order.request.payment_request_id)


async def test_pin_right(shop: Demo, page: Page, shot: Shot, axe: AxeCheck) -> None:
    paying = await place_order(shop, PIN_USER)
    await page.goto(paying.url)
    await expect_verify_page(page, paying, PIN_USER, "3 attempts")
    await expect(page.locator("label[for=code]")).to_contain_text("Payment PIN")
    await expect(page.locator("#notice")).to_have_count(0)
    await expect(page.locator("#resend")).to_have_count(0)  # no code to resend for a PIN
    await shot("1-verify")
    await axe("verify-pin")

    await type_code(page, paying, PIN)
    await expect_result(page, "success")
    await expect(page.locator("#reference")).to_have_text(paying.payment_id)
    await expect(page.locator("#time")).not_to_be_empty()
    await shot("2-paid")
    await axe("result-success")
    assert await final_state(shop, paying) == "S/SUCCESS"

    await page.reload()  # the result stays: a reload is a GET, never the PIN again
    await expect_result(page, "success")
    await expect_continue(page, paying, "success")
    await shot("3-alipayplus-result")


async def test_wrong_pin_then_right(shop: Demo, page: Page, shot: Shot, axe: AxeCheck) -> None:
    paying = await place_order(shop, PIN_USER)
    await page.goto(paying.url)
    await type_code(page, paying, WRONG_PIN)
    assert "notice" in query(page.url), page.url
    notice = page.locator("#notice")
    await expect(notice).to_have_attribute("role", "alert")
    await expect(notice).to_contain_text("Wrong PIN")
    await expect(page.locator("#attempts")).to_have_text(re.compile(r"^\s*2 attempts left\s*$"))
    await expect(page.locator("#code")).to_have_value("")  # a PIN is never put back in the page
    await shot("1-wrong-pin")
    await axe("verify-pin-wrong")

    await page.reload()  # no re-post: still two attempts
    await expect(page.locator("#attempts")).to_have_text(re.compile(r"^\s*2 attempts left\s*$"))

    await type_code(page, paying, PIN)
    await expect_result(page, "success")
    await expect(page.locator("#reference")).to_have_text(paying.payment_id)
    await shot("2-paid")
    assert await final_state(shop, paying) == "S/SUCCESS"
    await expect_continue(page, paying, "success")


async def test_three_wrong_pins(shop: Demo, page: Page, shot: Shot, axe: AxeCheck) -> None:
    paying = await place_order(shop, PIN_USER)
    await page.goto(paying.url)
    await type_code(page, paying, WRONG_PIN)
    await expect(page.locator("#attempts")).to_have_text(re.compile(r"^\s*2 attempts left\s*$"))
    await type_code(page, paying, WRONG_PIN)
    await expect(page.locator("#attempts")).to_have_text(re.compile(r"^\s*1 attempt left\s*$"))
    await expect(page.locator("#notice")).to_contain_text("Wrong PIN")
    await shot("1-last-attempt")

    await type_code(page, paying, WRONG_PIN)
    await expect_result(page, "fail")
    too_many = re.compile(r"too many wrong PINs|wrong PIN .*too many times", re.IGNORECASE)
    await expect(page.locator("#reason")).to_contain_text(too_many)
    await expect(page.locator("#code")).to_have_count(0)
    await shot("2-failed")
    await axe("result-fail")
    assert await final_state(shop, paying) == "F/USER_PAYMENT_VERIFICATION_FAILED"
    assert shop.postings(paying.request.payment_request_id) == 0
    await expect_continue(page, paying, "fail")


async def test_otp_one_resend_then_the_newest_code(
    shop: Demo, page: Page, shot: Shot, axe: AxeCheck, otp_phone: OtpPhone
) -> None:
    paying = await place_order(shop, OTP_USER)
    await otp_phone.next_code()  # the first code reaches the phone; the user asks for another
    await page.goto(paying.url)
    await expect_verify_page(page, paying, OTP_USER, "3 attempts")
    await expect(page.locator("label[for=code]")).to_contain_text(re.compile(r"code", re.IGNORECASE))
    await expect(page.locator("label[for=code]")).not_to_contain_text("PIN")
    await expect(page.locator("#code")).to_have_attribute("autocomplete", "one-time-code")
    resend_action = await page.locator("form#resend-form").get_attribute("action") or ""
    assert resend_action.endswith(f"{urlsplit(paying.url).path}/resend"), resend_action
    resends = await resends_left(page)
    await shot("1-verify")
    await axe("verify-otp")

    landed = await press(page, "#resend")
    assert same_page(landed.url, paying.url)
    newest = await otp_phone.next_code()
    notice = page.locator("#notice")
    await expect(notice).to_have_attribute("role", "status")
    await expect(notice).to_contain_text(re.compile(r"new code", re.IGNORECASE))
    assert await resends_left(page) == resends - 1
    await expect(page.locator("#attempts")).to_have_text(re.compile(r"^\s*3 attempts left\s*$"))  # none used
    await shot("2-resent")
    await axe("verify-otp-resent")

    await page.reload()  # no re-post: no third SMS
    await expect(page.locator('main[data-page="verify"]')).to_be_visible()
    assert otp_phone.inbox() == otp_phone.seen

    await type_code(page, paying, newest)
    await expect_result(page, "success")
    await expect(page.locator("#reference")).to_have_text(paying.payment_id)
    await shot("3-paid")
    assert await final_state(shop, paying) == "S/SUCCESS"
    await expect_continue(page, paying, "success")


async def test_otp_two_resends_older_codes_refused(shop: Demo, page: Page, shot: Shot, otp_phone: OtpPhone) -> None:
    paying = await place_order(shop, OTP_USER)
    first = await otp_phone.next_code()
    await page.goto(paying.url)
    resends = await resends_left(page)
    await press(page, "#resend")
    second = await otp_phone.next_code()
    await press(page, "#resend")
    newest = await otp_phone.next_code()
    assert await resends_left(page) == resends - 2
    await shot("1-resent-twice")

    await type_code(page, paying, first)
    await expect(page.locator("#notice")).to_contain_text("Wrong code")
    await expect(page.locator("#notice")).to_have_attribute("role", "alert")
    await expect(page.locator("#attempts")).to_have_text(re.compile(r"^\s*2 attempts left\s*$"))
    await type_code(page, paying, second)
    await expect(page.locator("#notice")).to_contain_text("Wrong code")
    await expect(page.locator("#attempts")).to_have_text(re.compile(r"^\s*1 attempt left\s*$"))
    await shot("2-older-codes-refused")

    await type_code(page, paying, newest)
    await expect_result(page, "success")
    await shot("3-paid")
    assert await final_state(shop, paying) == "S/SUCCESS"
    await expect_continue(page, paying, "success")


async def resends_left(page: Page) -> int:
    """``#resends``: how many new codes the user may still ask for."""
    text = await page.locator("#resends").inner_text()
    found = re.search(r"\d+", text)
    assert found, f"#resends says no number: {text!r}"
    return int(found.group())


async def test_expiry(shop: Demo, page: Page, shot: Shot, axe: AxeCheck) -> None:
    paying = await place_order(shop, PIN_USER, expires_in=timedelta(seconds=4))
    await page.goto(paying.url)
    await expect(page.locator('main[data-page="verify"]')).to_be_visible()
    await expect(page.locator("#expiry")).to_contain_text(re.compile(r"expire", re.IGNORECASE))
    await shot("1-verify")

    assert await final_state(shop, paying) == "F/ORDER_IS_CLOSED"  # paymentExpiryTime passed, unverified
    await page.locator("#code").fill(PIN)  # the page left open: the user types the PIN too late
    landed = await press(page, "#confirm")
    assert same_page(landed.url, paying.url)
    await expect_result(page, "expired")
    await expect(page.locator("#code")).to_have_count(0)
    await shot("2-expired")
    await axe("result-expired")
    await page.reload()
    await expect_result(page, "expired")
    assert shop.postings(paying.request.payment_request_id) == 0  # too late: nothing debited
    assert await final_state(shop, paying) == "F/ORDER_IS_CLOSED"
    await expect_continue(page, paying, "fail")


async def test_cancel(shop: Demo, page: Page, shot: Shot, axe: AxeCheck) -> None:
    paying = await place_order(shop, PIN_USER)
    await page.goto(paying.url)
    await expect(page.locator('main[data-page="verify"]')).to_be_visible()
    landed = await press(page, "#cancel")
    assert same_page(landed.url, paying.url)
    await expect_result(page, "cancelled")
    await shot("1-cancelled")
    await axe("result-cancelled")
    assert await final_state(shop, paying) == "F/ORDER_IS_CLOSED"
    assert shop.postings(paying.request.payment_request_id) == 0
    await expect_continue(page, paying, "fail")


async def test_invalid_link(shop: Demo, stack: DevStack, page: Page, shot: Shot, axe: AxeCheck) -> None:
    """A real paymentRequestId with a paymentId that is not its own: no payment behind the link."""
    paying = await place_order(shop, PIN_USER, expires_in=timedelta(seconds=30))
    path = urlsplit(paying.url).path.rsplit("/", 1)[0]
    response = await page.goto(f"{stack.api_url}{path}/{quote(uuid.uuid4().hex)}")
    assert response is not None and response.status == 404
    await expect(page.locator('main[data-page="message"]')).to_be_visible()
    await expect(page.locator("main h1")).to_contain_text(re.compile(r"not valid", re.IGNORECASE))
    await expect(page.locator("#code")).to_have_count(0)
    await shot("1-not-found")
    await axe("invalid-link")
