"""Landing pages (``/`` on both listeners) and the API documentation, served without any CDN.

``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) load their scripts, styles and favicon from the
``fastapi-offline`` wheel's ``static`` folder, mounted at ``/static/docs``: opening the docs asks no
other host for anything (no CDN, no Google fonts, no spec validator), and works offline. FastAPI's own
docs routes (which load from jsDelivr) stay off; ``add_docs`` adds these only where OpenAPI is on.

ReDoc's script is the wheel's but for one URL: its always-on Redocly logo, from their CDN.

Every page here carries the pages' security headers (``api.pages.secure``); the docs pages a CSP of
their own, as narrow as Swagger UI and ReDoc allow (``_docs_csp``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.staticfiles import PathLike
from starlette.types import Scope

from .. import pages

TITLE = "Alipay+ MPP wallet"
DOCS_PATH, REDOC_PATH = "/docs", "/redoc"
OAUTH2_REDIRECT_PATH = DOCS_PATH + "/oauth2-redirect"  # FastAPI's default, kept with its docs
STATIC_PATH = "/static/docs"
# The wheel's own copy of Swagger UI and ReDoc: shipped in requirements.lock, checked at start-up
# (StaticFiles raises if the folder is missing).
ASSETS = Path(fastapi_offline.__file__).parent / "static"

templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
router = APIRouter()  # the public app's landing
ops_router = APIRouter()  # the operator listener's landing

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)  # attribute-less: inline, not src=


def _docs_csp(script_sources: list[str], *, redoc: bool = False) -> str:
    """Our own scripts plus the page's inline ones by hash; fetches (the spec, "Try it out") to us only.

    Swagger UI renders with our own stylesheet alone. ReDoc does not: styled-components injects
    ``<style>`` at run time, which no hash can name, so its page alone allows inline styles (it stops
    at "Something went wrong" without them); it also builds its search worker from a blob: URL.
    """
    directives = [
        "default-src 'none'",
        "script-src " + " ".join(["'self'", *script_sources]),
        "style-src 'self'" + (" 'unsafe-inline'" if redoc else ""),
        "img-src 'self' data:",  # Swagger UI's icons are data: SVGs in its CSS
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ]
    if redoc:
        directives.append("worker-src blob:")
    return "; ".join(directives)


def _inline_script_hashes(page: bytes) -> list[str]:
    """CSP sources for the page's inline ``<script>`` blocks, hashed as served (the openapi URL in
    Swagger UI's depends on the root path, so they are hashed per answer, not once)."""
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    ]


def _root(request: Request) -> str:
    """The prefix a proxy serves us under (``--root-path``), for links and asset URLs."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _page(response: HTMLResponse, *, redoc: bool = False) -> Response:
    # FastAPI's pages open with a bare <html>: say the language, as our pages do (read aloud right; axe)
    body = bytes(response.body).replace(b"<html>", b'<html lang="en">', 1)
    page = HTMLResponse(body, response.status_code)
    return pages.secure(page, _docs_csp(_inline_script_hashes(body), redoc=redoc))


class _Assets(StaticFiles):
    """The docs' scripts and styles, never sniffed as anything else."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


# ReDoc 2's side menu always shows Redocly's logo from their CDN; "data:," is no image, so the logo's
# onError hides it (the "API docs by Redocly" text stays) and the page asks no other host.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


@cache
def _redoc_script() -> bytes:
    return (ASSETS / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, b"data:,")


def add_docs(app: FastAPI, openapi_url: str) -> None:
    """Swagger UI at ``/docs`` (and its OAuth2 redirect page), ReDoc at ``/redoc``, their assets."""

    @app.get(f"{STATIC_PATH}/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:  # before the mount, which would serve the file as shipped
        response = Response(_redoc_script(), media_type="text/javascript")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    app.mount(STATIC_PATH, _Assets(directory=ASSETS), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> Response:
        root = _root(request)
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
            swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_PATH}/favicon.png",
            # No badge from validator.swagger.io: nothing leaves for another host.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )
        return _page(page)

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> Response:
        return _page(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> Response:
        root = _root(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_PATH}/favicon.png",
            with_google_fonts=False,
        )
        return _page(page, redoc=True)


@router.get("/", include_in_schema=False)
async def home(request: Request) -> Response:
    """Where to go from here: the docs (when OpenAPI is on) and the health check."""
    root, openapi_url = _root(request), request.app.openapi_url
    links = [(root + "/healthz", "Health check", "Liveness for load balancers: answers ok")]
    if openapi_url:
        links[:0] = [
            (root + DOCS_PATH, "API documentation (Swagger UI)", "Browse the API and try its calls"),
            (root + REDOC_PATH, "API reference (ReDoc)", "The same API as a readable reference"),
            (root + openapi_url, "OpenAPI schema", "The machine-readable description (JSON)"),
        ]
    page = templates.TemplateResponse(request, "home.html", {"title": TITLE, "links": links, "operations": None})
    return pages.secure(page, pages.content_security_policy())


# What the operator listener's operations do, by their path's last segment (the codec's schema
# summaries are only "Decode" and "Encode").
_OPERATIONS = {
    "decode": "Decrypt workflow payloads: the Temporal Web UI's codec",
    "encode": "Encrypt payloads: the Temporal Web UI's codec",
}


# Public on the operator listener although its operations need the token: it lists only their
# methods and paths (no payload, no token, nothing not in the source), and a browser opening the
# listener cannot send a bearer header, so behind the token it would only ever show a 401.
@ops_router.get("/", include_in_schema=False)
async def ops_home(request: Request) -> Response:
    """The operator listener's operations (each behind the operator's token), as its schema has them."""
    root, schema = _root(request), request.app.openapi()  # built even though the listener serves none
    operations = [
        (method.upper(), root + path, _OPERATIONS.get(path.rsplit("/", 1)[-1]) or operation.get("summary", ""))
        for path, item in schema.get("paths", {}).items()
        for method, operation in item.items()
    ]
    context = {"title": f"{TITLE}: operator listener", "links": [], "operations": operations}
    page = templates.TemplateResponse(request, "home.html", context)
    return pages.secure(page, pages.content_security_policy())
