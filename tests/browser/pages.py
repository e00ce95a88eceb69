"""What the browser tests share about our pages: pressing a form's button, the result page."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Page, Response, expect


async def press(page: Page, button: str) -> Response:
    """Press a form's ``button`` as the user does; the POST must answer 303 (so a reload never
    re-posts). The page the browser lands on (after the redirect) is returned."""
    async with page.expect_navigation() as navigation:
        await page.locator(button).click()
    landed = await navigation.value
    assert landed is not None, f"pressing {button} loaded no page"
    posted = landed.request.redirected_from
    assert posted is not None and posted.method == "POST", f"pressing {button} was not a POST answered by a redirect"
    redirect = await posted.response()
    assert redirect is not None and redirect.status == 303, f"{posted.url} answered {redirect and redirect.status}"
    return landed


def same_page(url: str, page_url: str) -> bool:
    """``url`` is the page at ``page_url`` (whatever its query, e.g. a ``?notice=``)."""
    return urlsplit(url)[:3] == urlsplit(page_url)[:3]


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


async def expect_result(page: Page, outcome: str) -> None:
    """Our result page, for ``outcome`` (success, fail, cancelled, expired), with its heading."""
    await expect(page.locator(f'main[data-page="result"][data-outcome="{outcome}"]')).to_be_visible()
    await expect(page.locator("main h1")).to_be_visible()
    await expect(page.locator("main h1")).not_to_be_empty()
