"""Issue 14, item 4: Swagger UI and ReDoc from the fastapi-offline wheel, landing pages at ``/``.

The docs pages load only our own ``/static/docs/...`` assets (no CDN, no Google fonts) under a CSP
that names their inline scripts by hash; the assets are the wheel's files. ``/`` links the docs and
the health check with the payment pages' headers; with OpenAPI off there are no docs at all. The
operator listener's ``/`` lists its operations without the token, which they still require.

The apps are built without their lifespan: none of these routes uses the Temporal client, the
records or Alipay+'s server SDK.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import fastapi_offline
import httpx
import pytest

from api import pages
from api.main import create_app, create_ops_app
from api.routers import home
from wallet.settings import Settings

pytestmark = pytest.mark.timeout(60)

WHEEL_ASSETS = Path(fastapi_offline.__file__).parent / "static"
OPS_TOKEN = "ops-docs-token-" + "d" * 40
SECURITY_HEADERS = {"x-frame-options": "DENY", "x-content-type-options": "nosniff"}


class _Page(HTMLParser):
    """What a browser would fetch for a page (script src, link href, img src), its links and headings."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.lang: str | None = None
        self.viewport: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.tags.append(tag)
        if tag == "html":
            self.lang = values.get("lang")
        elif tag == "meta" and values.get("name") == "viewport":
            self.viewport = values.get("content")
        elif tag in ("script", "img") and "src" in values:
            self.fetched.append(values["src"])
        elif tag == "link" and "href" in values:
            self.fetched.append(values["href"])
        elif tag == "a" and "href" in values:
            self.links.append(values["href"])


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _sha256_sources(text: str, tag: str) -> list[str]:
    """CSP sources for the page's inline (attribute-less) ``<tag>`` blocks."""
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'"
        for block in re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    ]


def _directives(csp: str) -> dict[str, list[str]]:
    return {name: sources for name, *sources in (part.split() for part in csp.split(";") if part.strip())}


@pytest.fixture(scope="module")
async def public(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url) as http:
        yield http


@pytest.fixture(scope="module")
async def ops(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    token_file = tmp_path_factory.mktemp("ops-docs") / "ops.token"
    token_file.write_text(OPS_TOKEN + "\n")
    token_file.chmod(0o600)
    app = create_ops_app(settings.model_copy(update={"ops_token_file": token_file, "ops_token_in_path": True}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops") as http:
        yield http


async def test_the_landing_page_links_the_docs_and_health(public: httpx.AsyncClient) -> None:
    response = await public.get("/")
    page = _parse(response.text)
    csp = response.headers["content-security-policy"]

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert f"<title>{home.TITLE}</title>" in response.text
    assert {"/docs", "/redoc", "/openapi.json", "/healthz"} <= set(page.links)
    assert page.lang == "en" and page.viewport == "width=device-width, initial-scale=1"
    assert page.tags.count("h1") == 1 and page.tags.count("main") == 1
    assert page.fetched == []  # nothing to load but the page itself
    assert {name: response.headers[name] for name in SECURITY_HEADERS} == SECURITY_HEADERS
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == pages.REFERRER_POLICY
    assert csp == pages.content_security_policy()
    styles = _sha256_sources(response.text, "style")  # the pages' shared look, then the landing's own
    assert len(styles) == 2 and set(styles) <= set(_directives(csp)["style-src"])  # the browser applies both
    assert _directives(csp)["script-src"] == ["'none'"]


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_docs_load_only_our_own_assets(public: httpx.AsyncClient, path: str) -> None:
    response = await public.get(path)
    page = _parse(response.text)

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert page.fetched and all(url.startswith(home.STATIC_PATH + "/") for url in page.fetched), page.fetched
    assert all(not urlsplit(url).scheme and not urlsplit(url).netloc for url in page.fetched + page.links)
    for off_host in ("http://", "https://", "cdn.jsdelivr", "fonts.googleapis", "unpkg.com", "cdn.redoc.ly"):
        assert off_host not in response.text
    assert {name: response.headers[name] for name in SECURITY_HEADERS} == SECURITY_HEADERS


@pytest.mark.parametrize("path", ["/docs", "/docs/oauth2-redirect", "/redoc"])
async def test_the_docs_csp_allows_only_our_scripts_and_the_pages_inline_ones(
    public: httpx.AsyncClient, path: str
) -> None:
    response = await public.get(path)
    directives = _directives(response.headers["content-security-policy"])
    inline = _sha256_sources(response.text, "script")

    assert response.status_code == 200
    assert inline or path == "/redoc"  # Swagger UI's pages start it from an inline script
    assert directives["script-src"] == ["'self'", *inline]  # no 'unsafe-inline', no 'unsafe-eval', no host
    assert directives["default-src"] == ["'none'"]
    assert directives["connect-src"] == ["'self'"]  # the spec and "Try it out": this API only
    assert directives["frame-ancestors"] == ["'none'"]
    assert not any(source.startswith("http") for sources in directives.values() for source in sources)
    assert ("worker-src" in directives) == (path == "/redoc")  # ReDoc's search worker
    # Inline styles only where ReDoc's styled-components need them.
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"] if path == "/redoc" else ["'self'"]


@pytest.mark.parametrize(
    ("asset", "media_type", "at_least"),
    [
        ("swagger-ui-bundle.js", "javascript", 500_000),
        ("swagger-ui.css", "text/css", 50_000),
        ("favicon.png", "image/png", 1_000),
    ],
)
async def test_the_assets_are_the_wheels_own(
    public: httpx.AsyncClient, asset: str, media_type: str, at_least: int
) -> None:
    response = await public.get(f"{home.STATIC_PATH}/{asset}")

    assert response.status_code == 200
    assert media_type in response.headers["content-type"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert len(response.content) >= at_least
    assert response.content == (WHEEL_ASSETS / asset).read_bytes()


async def test_redoc_is_the_wheels_without_the_remote_logo(public: httpx.AsyncClient) -> None:
    response = await public.get(f"{home.STATIC_PATH}/redoc.standalone.js")
    shipped = (WHEEL_ASSETS / "redoc.standalone.js").read_bytes()

    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert home.REDOC_LOGO in shipped and home.REDOC_LOGO not in response.content
    assert response.content == shipped.replace(home.REDOC_LOGO, b"data:,")
    assert len(response.content) > 500_000


@pytest.mark.parametrize(
    "path", ["/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", f"{home.STATIC_PATH}/swagger-ui-bundle.js"]
)
async def test_no_docs_with_openapi_off(settings: Settings, path: str) -> None:
    app = create_app(settings.model_copy(update={"openapi_enabled": False}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://off") as off:
        gone = await off.get(path)
        landing = await off.get("/")

    assert gone.status_code == 404
    assert landing.status_code == 200
    assert _parse(landing.text).links == ["/healthz"]  # no link to docs that are not there


async def test_the_operator_landing_lists_its_operations_without_the_token(ops: httpx.AsyncClient) -> None:
    response = await ops.get("/")
    refused = await ops.post("/codec/decode", json={"payloads": []})
    text = re.sub(r"\s+", " ", response.text)

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for path in ("/codec/decode", "/codec/encode", "/codec/{operator_token}/decode", "/codec/{operator_token}/encode"):
        assert f"POST</span> <code>{path}</code>" in text
    assert OPS_TOKEN not in response.text
    assert _parse(response.text).tags.count("h1") == 1
    assert {name: response.headers[name] for name in SECURITY_HEADERS} == SECURITY_HEADERS
    assert response.headers["content-security-policy"] == pages.content_security_policy()
    assert refused.status_code == 401  # the operations themselves still need the token


async def test_every_schema_reference_resolves_in_the_document(settings: Settings) -> None:
    """Swagger UI and ReDoc resolve ``$ref`` against the document: a model's own ``#/$defs/…`` broke them."""
    document = create_app(settings).openapi()
    references = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(document)))
    schemas = document["components"]["schemas"]
    assert references and all(ref.startswith("#/components/schemas/") for ref in references), references
    assert {ref.removeprefix("#/components/schemas/") for ref in references} <= set(schemas)
    pay = document["paths"]["/aps/api/v1/payments/pay"]["post"]["requestBody"]["content"]["application/json"]
    assert pay["schema"]["properties"]["paymentAmount"]["properties"]["value"]  # inlined, not a dangling $ref
