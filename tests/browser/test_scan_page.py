"""The scan page's acceptance marks, and the merchant's cashier page an entry code opens (seed 003).

The wallet's Scan page is the app's own screen: it shows the logos Alipay+'s client SDK got from
fetchConfig for where the phone is (``WalletApp.scan_page_logos``). No server renders that screen, so
the test renders those logos as the app does, by their URLs on the sandbox Alipay+, and checks in
Chromium that each is a visible image that loads. The cashier page is the sandbox merchant's.
"""

from __future__ import annotations

import html
import re

import pytest
from playwright.async_api import Page, Response, expect

from alipayplus import Amount
from alipayplus.sdk import AcceptanceMarkLogo
from devstack.demo import PIN, PIN_USER
from devstack.stack import DevStack
from hce_device.alipayplus_client_sdk import DeviceInfo
from hce_device.wallet_app import WalletApp
from sandbox.alipayplus.mpm import ACCEPTANCE_MARKS

from .conftest import ANDROID_UA, AxeCheck, Shot

pytestmark = pytest.mark.timeout(180)

SINGAPORE = DeviceInfo(os="Android", mcc="525", user_agent=ANDROID_UA)  # the carrier says where the phone is


def scan_page(logos: list[AcceptanceMarkLogo]) -> str:
    """The app's Scan page: the camera view's caption and the marks of the wallets accepted here."""
    marks = "".join(
        f'<li><img src="{html.escape(logo.logo_url)}" alt="{html.escape(logo.name)}" height="48"></li>'
        for logo in logos
    )
    shown = f'<ul id="marks">{marks}</ul>' if logos else '<p id="no-marks">Alipay+ is not available here.</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Scan</title>'
        "<style>ul{list-style:none;display:flex;flex-wrap:wrap;gap:8px;padding:0}</style></head>"
        f"<body><main><h1>Scan to pay</h1><p>Pay where you see:</p>{shown}</main></body></html>"
    )


async def show(page: Page, logos: list[AcceptanceMarkLogo]) -> None:
    """Put the Scan page on the screen (returns once every image has loaded)."""
    await page.set_content(scan_page(logos), wait_until="load")


async def expect_marks(page: Page, logos: list[AcceptanceMarkLogo], loaded: dict[str, Response]) -> None:
    """Each logo a visible image, loaded (an SVG the sandbox served) and drawn at its size."""
    images = page.locator("#marks img")
    await expect(images).to_have_count(len(logos))
    for logo in logos:
        image = page.get_by_role("img", name=logo.name, exact=True)
        await expect(image).to_be_visible()
        size = await image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
        assert size[0] and size[1] > 0 and size[2] > 0, f"{logo.name}'s logo did not load: {size}"
    for logo in logos:
        response = loaded.get(logo.logo_url)
        assert response is not None and response.status == 200, f"{logo.logo_url}: {response and response.status}"
        assert response.headers.get("content-type", "").startswith("image/svg+xml")


async def test_scan_page_marks(stack: DevStack, page: Page, shot: Shot, axe: AxeCheck) -> None:
    loaded: dict[str, Response] = {}
    page.on("response", lambda response: loaded.update({response.url: response}))
    async with WalletApp(stack.api_url, stack.sandbox_url, stack.settings.psp_id, SINGAPORE) as app:
        await app.login(PIN_USER, PIN)
        here = await app.scan_page_logos()  # Singapore, by the carrier
        korea = await app.scan_page_logos("KR")
        elsewhere = await app.scan_page_logos("US")

    assert [logo.name for logo in here] == list(ACCEPTANCE_MARKS["SG"])
    await show(page, here)
    await expect_marks(page, here, loaded)
    await shot("1-singapore")
    await axe("scan-page")

    assert [logo.name for logo in korea] == list(ACCEPTANCE_MARKS["KR"])
    await show(page, korea)
    await expect_marks(page, korea, loaded)
    await shot("2-korea")

    assert elsewhere == []
    await show(page, elsewhere)
    await expect(page.locator("#marks img")).to_have_count(0)
    await expect(page.locator("#no-marks")).to_be_visible()
    await shot("3-no-alipayplus")


async def test_cashier_page_from_an_entry_code(stack: DevStack, page: Page, shot: Shot) -> None:
    """An entry code opens the store's cashier page; the amount typed there becomes an order code,
    sent on to the Alipay+ URL the client SDK intercepts. A wrong amount is said, not sent."""
    store = stack.mpm.stores["SG-KOPI-01"]
    await page.goto(stack.mpm.cashier_url(store.store_id))
    await expect(page.locator("h1")).to_have_text(store.name)
    amount = page.get_by_label(re.compile(rf"Amount \({store.currency}\)"))
    await expect(amount).to_be_visible()
    await shot("1-cashier")
    # The cashier page is the sandbox merchant's, not ours: no axe check here (it has no lang attribute).

    await amount.fill("4.205")
    await page.get_by_role("button", name="Pay with Alipay+").click()
    await expect(page.locator("#error")).to_contain_text("at most 2 decimals")
    await shot("2-wrong-amount")

    await page.get_by_label(re.compile(r"Amount")).fill("4.20")
    await page.get_by_role("button", name="Pay with Alipay+").click()
    await expect(page).to_have_url(re.compile(r"/aplus/decode\?codeValue="))
    code_value = await page.locator("#codeValue").inner_text()
    order_code = stack.mpm.order_codes[code_value]
    assert order_code.order.order_amount == Amount(currency="SGD", value=420)
    assert order_code.redirect_url == stack.mpm.result_url(order_code.reference_order_id)
    await shot("3-alipayplus-url")
