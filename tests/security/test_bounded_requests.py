"""Issue 13, item 2: every request body on the public app is bounded before it is read.

The reproductions replayed: a 300 MB body to ``/app/v1/login`` (it grew the server by 830 MB), a
multipart POST to the verification page (spooled to a 158 MB temp file before the handler ran),
the NFC proxy reading its whole body before its 64 KiB check; and what they must get now: 413
after at most one chunk past the limit, 415 before a byte is read, 413 at once for an over-long
``Content-Length``, 400 for JSON nested too deep. The bodies are generators that would yield far
more than the limit; counting what they yielded shows how much the app took.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from temporalio.client import Client
from temporalio.worker import Worker

from api.limits import JsonDepth, read_bounded
from api.main import create_app
from sandbox.code_service import CodeService
from tests.api.conftest import code_service_transport
from wallet.ledger import Ledger
from wallet.settings import Settings

pytestmark = pytest.mark.timeout(60)

CHUNK = 1024
HUGE = 300 * 1024 * 1024  # what the reproduction sent
PIN_USER, PIN = "852-11112222", "246810"
VERIFY_PAGE = "/easypay/verify/api-bounded/0000000000"
MPM_PAGE = "/mpm/pay/api-bounded/0000000000"


@pytest.fixture(scope="module")
async def app(settings: Settings, client: Client, worker: Worker, database: Ledger) -> AsyncIterator[FastAPI]:
    application = create_app(settings, client, code_service_transport=code_service_transport(CodeService()))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def api(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url) as http:
        yield http


class Flood:
    """A request body that would yield ``total`` bytes in ``CHUNK``-sized pieces; counts what was taken."""

    def __init__(self, total: int = HUGE, piece: bytes = b"x" * CHUNK) -> None:
        self.total, self.piece, self.chunks = total, piece, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.total // len(self.piece)):
            self.chunks += 1
            yield self.piece

    @property
    def taken(self) -> int:
        return self.chunks * len(self.piece)


async def _session(api: httpx.AsyncClient) -> dict[str, str]:
    response = await api.post("/app/v1/login", json={"loginId": PIN_USER, "pin": PIN})
    assert response.status_code == 200, response.text
    api.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['sessionToken']}"}


def _too_large(limit: int) -> dict[str, str]:
    return {"detail": f"request body too large (limit {limit} bytes)"}


async def _asgi(app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int]:
    """One request straight into the ASGI app; the body is never sent. Returns (status, body, reads)."""
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    assert (b"connection", b"close") in start["headers"]
    return start["status"], body, reads


# --- size ----------------------------------------------------------------------------------------


async def test_a_300_mb_login_is_refused_after_the_limit_not_read_whole(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    body = Flood()
    response = await api.post("/app/v1/login", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json() == _too_large(settings.max_app_body_bytes)
    assert body.taken <= settings.max_app_body_bytes + CHUNK  # one chunk past the limit, of 300 MB


async def test_an_over_long_content_length_is_refused_at_once(app: FastAPI, settings: Settings) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(HUGE).encode())]
    status, body, reads = await _asgi(app, "POST", "/app/v1/login", headers)

    assert status == 413 and json.loads(body) == _too_large(settings.max_app_body_bytes)
    assert reads == 0  # not a byte of the body asked for


async def test_aps_keeps_its_one_mebibyte_limit_and_its_plain_413(
    api: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    body = Flood()
    streamed = await api.post("/aps/api/v1/payments/pay", content=body, headers={"content-type": "application/json"})
    declared, text, reads = await _asgi(
        app, "POST", "/aps/api/v1/payments/pay", [(b"content-length", str(settings.max_body_bytes + 1).encode())]
    )

    assert streamed.status_code == 413 and streamed.content == b"request body too large"
    assert settings.max_app_body_bytes < body.taken <= settings.max_body_bytes + CHUNK
    assert declared == 413 and text == b"request body too large" and reads == 0


async def test_each_route_has_its_own_limit(settings: Settings) -> None:
    own = settings.model_copy(update={"max_app_body_bytes": 10_000, "nfc_max_proxy_bytes": 100_000})
    app = create_app(own)  # the limits answer before any handler: no lifespan needed

    login = await _asgi(app, "POST", "/app/v1/login", [(b"content-length", b"10001")])
    proxy = await _asgi(app, "POST", "/app/v1/nfc/proxy", [(b"content-length", b"100001")])
    aps = await _asgi(app, "POST", "/aps/api/v1/payments/pay", [(b"content-length", str(10**9).encode())])

    assert login[:2] == (413, json.dumps(_too_large(10_000)).encode())
    assert proxy[:2] == (413, json.dumps(_too_large(100_000)).encode())
    assert aps[:2] == (413, b"request body too large")


async def test_the_nfc_proxy_over_its_limit_is_413_before_the_rest_is_read(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {**await _session(api), "content-type": "application/json"}
    body = Flood()

    response = await api.post("/app/v1/nfc/proxy", content=body, headers=headers)

    assert response.status_code == 413 and response.json() == _too_large(settings.nfc_max_proxy_bytes)
    assert body.taken <= settings.nfc_max_proxy_bytes + CHUNK


async def test_the_nfc_proxy_reads_no_more_than_its_limit_on_its_own() -> None:
    """Without the middleware too: the route's reader stops at the first chunk past the limit."""
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": True}

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)

    assert await read_bounded(request, 64 * 1024) is None
    assert reads == 64 + 1


async def test_bodies_within_the_limits_still_work(api: httpx.AsyncClient) -> None:
    login = await api.post("/app/v1/login", json={"loginId": PIN_USER, "pin": PIN})
    form = await api.post(VERIFY_PAGE, data={"code": "123456"})  # urlencoded, as the page posts it

    assert login.status_code == 200
    # the page itself answered (its form guard, or no such payment), in HTML: not the limits' JSON refusal
    assert form.status_code not in (400, 413, 415) and form.headers["content-type"].startswith("text/html")


# --- media types ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [VERIFY_PAGE, MPM_PAGE, "/app/v1/login"])
async def test_multipart_is_refused_before_anything_is_spooled(
    api: httpx.AsyncClient, page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import starlette.formparsers

    spooled: list[object] = []

    def spool(*args: object, **kwargs: object) -> None:
        spooled.append(args)

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", spool)
    body = Flood(piece=b"--b\r\nContent-Disposition: form-data; name=code; filename=x\r\n\r\n" + b"x" * 960)

    response = await api.post(page, content=body, headers={"content-type": "multipart/form-data; boundary=b"})

    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]
    assert body.chunks == 0 and spooled == []


# --- JSON nesting --------------------------------------------------------------------------------


async def test_json_nested_too_deep_is_400(api: httpx.AsyncClient, settings: Settings) -> None:
    depth = settings.max_json_depth
    too_deep = '{"loginId": ' + "[" * depth + "]" * depth + ', "pin": "1234"}'  # depth + 1 with the object
    just_deep_enough = '{"loginId": ' + "[" * (depth - 1) + "]" * (depth - 1) + ', "pin": "1234"}'
    in_strings = json.dumps({"loginId": '\\"[' * 200, "pin": "1234"})  # brackets inside a string do not count

    refused = await api.post("/app/v1/login", content=too_deep, headers={"content-type": "application/json"})
    allowed = await api.post("/app/v1/login", content=just_deep_enough, headers={"content-type": "application/json"})
    text = await api.post("/app/v1/login", content=in_strings, headers={"content-type": "application/json"})

    assert refused.status_code == 400
    assert refused.json() == {"detail": f"JSON nested deeper than {depth} levels"}
    assert allowed.status_code == 422  # parsed, then refused by the model: the nesting was fine
    assert text.status_code == 422  # loginId too long: nothing about nesting


async def test_deep_json_is_refused_while_streaming(api: httpx.AsyncClient) -> None:
    body = Flood(piece=b"[" * CHUNK)
    response = await api.post("/app/v1/login", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 400 and "nested" in response.json()["detail"]
    assert body.chunks == 1


@pytest.mark.parametrize(
    ("text", "deepest"),
    [
        (b"[[[]]]", 3),
        (b'{"a": "[[[[", "b": [{}]}', 3),
        (b'["\\"[[", ["\\\\", []]]', 3),  # an escaped quote, then an escaped backslash ending the string
        (b'"\\\\\\"[[["', 0),  # \\ then \" : still inside the string
    ],
)
def test_json_depth_is_counted_across_any_chunking(text: bytes, deepest: int) -> None:
    for size in (1, 2, 3, len(text)):
        fits, too_tight = JsonDepth(deepest), JsonDepth(deepest - 1) if deepest else None
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert all(fits.feed(chunk) for chunk in chunks), (text, size)
        if too_tight is not None:
            assert not all(too_tight.feed(chunk) for chunk in chunks), (text, size)


# --- OpenAPI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_openapi_can_be_switched_off(settings: Settings, path: str) -> None:
    switched_off = create_app(settings.model_copy(update={"openapi_enabled": False}))
    default = create_app(settings)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=switched_off), base_url="http://off") as off,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=default), base_url="http://on") as on,
    ):
        assert (await off.get(path)).status_code == 404
        assert (await on.get(path)).status_code == 200
