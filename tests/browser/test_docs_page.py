"""``/docs`` renders Swagger UI from our own server: no CDN, no font or validator host (``api.routers.home``)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.async_api import ConsoleMessage, Page, Request, expect

from devstack.stack import DevStack

from .conftest import AxeCheck, Shot

pytestmark = pytest.mark.timeout(180)

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
INLINE_SCHEMES = {"data", "blob", "about"}  # no request leaves the page for these


async def test_docs_render_offline(stack: DevStack, page: Page, shot: Shot, axe: AxeCheck) -> None:
    requests: list[Request] = []
    console: list[ConsoleMessage] = []
    page.on("request", lambda request: requests.append(request))  # Playwright takes no built-in as a handler
    page.on("console", lambda message: console.append(message))

    response = await page.goto(f"{stack.api_url}/docs")
    assert response is not None and response.status == 200
    await expect(page.locator(".swagger-ui .info")).to_be_visible()
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("MPP")
    await expect(page.locator(".swagger-ui .opblock").first).to_be_visible()  # the spec loaded and rendered
    await page.wait_for_load_state("networkidle")
    await shot("1-swagger-ui")

    urls = [request.url for request in requests]
    assert any(urlsplit(url).path == "/openapi.json" for url in urls), urls
    away = [
        url for url in urls if urlsplit(url).scheme not in INLINE_SCHEMES and urlsplit(url).hostname not in LOCAL_HOSTS
    ]
    assert not away, f"/docs asked other hosts: {away}"
    refused = [message.text for message in console if "Content Security Policy" in message.text]
    assert not refused, refused  # the docs' CSP lets Swagger UI do all it needs, and nothing else

    # Swagger UI's own DOM is left out: its method badges and links fail colour contrast and its operation
    # headers nest buttons (nested-interactive), both Swagger UI's styles and markup, not ours to change.
    # The page around it (our HTML: lang, title, landmarks) is checked.
    await axe("docs", exclude=[[".swagger-ui"]])
