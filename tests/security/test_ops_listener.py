"""Issue 13, item 3 and part of 9: the codec moves to the operator listener, behind a token.

The reproduction replayed: anyone who reached the API could decrypt workflow payloads and forge
encrypted ones at ``/codec``, and bad input there was a 500. Now the public app has no ``/codec``;
the operator listener (``create_ops_app``, ``mpp api --ops-port``) answers 401 without the token or
with a wrong one, round-trips payloads with it, and answers garbage with 400. The real ``mpp api``
is started as a process: both listeners, no ``server`` header, an over-long ``Content-Length``
refused at once, SIGTERM ending both with exit code 0; without a token file it does not start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from api.main import create_app, create_ops_app
from api.operators import OpsConfigError
from devstack.stack import Ports, _serving, dev_settings, ui_codec_endpoint
from sandbox.code_service import CodeService, code_service_router
from wallet.codec import EncryptionCodec
from wallet.keys import ensure_dev_keys, ensure_ops_token
from wallet.ledger import Ledger
from wallet.settings import Settings

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ops-test-token-" + "k" * 40
UI_ORIGIN = "http://127.0.0.1:8233"
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"loginId": "852-11112222"}')


def _wire(*payloads: Payload) -> dict[str, Any]:
    """Payloads as the Web UI posts them: protobuf JSON, bytes in base64."""
    return {
        "payloads": [
            {
                "metadata": {key: base64.b64encode(value).decode() for key, value in payload.metadata.items()},
                "data": base64.b64encode(payload.data).decode(),
            }
            for payload in payloads
        ]
    }


def _unwire(answer: dict[str, Any]) -> list[Payload]:
    return [
        Payload(
            metadata={key: base64.b64decode(value) for key, value in payload.get("metadata", {}).items()},
            data=base64.b64decode(payload.get("data", "")),
        )
        for payload in answer["payloads"]
    ]


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ops") / "ops.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def ops_settings(settings: Settings, token_file: Path) -> Settings:
    return settings.model_copy(
        update={"ops_token_file": token_file, "codec_cors_origins": [UI_ORIGIN], "key_file_mode_check": False}
    )


@pytest.fixture(scope="module")
async def ops(ops_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_ops_app(ops_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops") as http:
        yield http


async def _sealed(settings: Settings, payload: Payload = PLAIN) -> Payload:
    [sealed] = await settings.payload_codec.encode([payload])
    return sealed


# --- the public app ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/codec/decode", "/codec/encode", f"/codec/{TOKEN}/decode"])
async def test_the_public_app_has_no_codec(ops_settings: Settings, path: str) -> None:
    public = create_app(ops_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=public), base_url="http://api") as api:
        posted = await api.post(path, json=_wire(await _sealed(ops_settings)), headers=_bearer())
        preflight = await api.options(path, headers={"Origin": UI_ORIGIN, "Access-Control-Request-Method": "POST"})

    assert posted.status_code == 404
    assert "access-control-allow-origin" not in preflight.headers  # no CORS for the UI on the public app


# --- the operator credential ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        _bearer("wrong-token-" + "k" * 43),
        _bearer(TOKEN[:-1]),
        _bearer(TOKEN + "k"),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "prefix", "longer", "basic scheme", "no scheme"],
)
@pytest.mark.parametrize("verb", ["decode", "encode"])
async def test_the_ops_listener_refuses_without_the_token(
    ops: httpx.AsyncClient, ops_settings: Settings, headers: dict[str, str], verb: str
) -> None:
    response = await ops.post(f"/codec/{verb}", json=_wire(await _sealed(ops_settings)), headers=headers)

    assert response.status_code == 401
    assert response.json() == {"detail": "operator credential required"}
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_ops_listener_round_trips_with_the_token(ops: httpx.AsyncClient, ops_settings: Settings) -> None:
    encoded = await ops.post("/codec/encode", json=_wire(PLAIN), headers=_bearer())
    [sealed] = _unwire(encoded.json())
    decoded = await ops.post("/codec/decode", json=encoded.json(), headers=_bearer())
    from_a_worker = await ops.post("/codec/decode", json=_wire(await _sealed(ops_settings)), headers=_bearer())

    assert encoded.status_code == decoded.status_code == from_a_worker.status_code == 200
    assert sealed.metadata["encoding"] == b"binary/encrypted" and PLAIN.data not in sealed.data
    assert _unwire(decoded.json()) == [PLAIN]
    assert _unwire(from_a_worker.json()) == [PLAIN]  # what the workers wrote, as the Web UI shows it


async def test_the_web_ui_origin_may_call_it_with_the_token(ops: httpx.AsyncClient, ops_settings: Settings) -> None:
    preflight = await ops.options(
        "/codec/decode",
        headers={
            "Origin": UI_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    decoded = await ops.post(
        "/codec/decode",
        json=_wire(await _sealed(ops_settings)),
        headers={**_bearer(), "Origin": UI_ORIGIN, "X-Namespace": "default"},
    )
    refused = await ops.post("/codec/decode", json=_wire(PLAIN), headers={"Origin": UI_ORIGIN})
    stranger = await ops.options(
        "/codec/decode", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )

    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert decoded.status_code == 200 and decoded.headers["access-control-allow-origin"] == UI_ORIGIN
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "access-control-allow-origin" not in stranger.headers


async def test_the_token_in_the_path_only_when_turned_on(ops: httpx.AsyncClient, ops_settings: Settings) -> None:
    body = _wire(await _sealed(ops_settings))
    turned_on = create_ops_app(ops_settings.model_copy(update={"ops_token_in_path": True}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=turned_on), base_url="http://ops") as on:
        right = await on.post(f"/codec/{TOKEN}/decode", json=body)
        wrong = await on.post(f"/codec/{TOKEN[:-1]}x/decode", json=body)
        odd = await on.post("/codec/%C3%A9%ED%A0%80%00/decode", json=body)
        header_still = await on.post("/codec/decode", json=body, headers=_bearer())

    assert (await ops.post(f"/codec/{TOKEN}/decode", json=body)).status_code == 404  # off by default
    assert right.status_code == 200 and _unwire(right.json()) == [PLAIN]
    assert wrong.status_code == odd.status_code == 401
    assert header_still.status_code == 200


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'{"payloads": 5}',
        b'{"payloads": [{"data": "!!! not base64 !!!"}]}',
        b'{"payloads": [{"metadata": {"encoding": 7}}]}',
        b'{"somethingElse": []}',
    ],
    ids=["empty", "not json", "not utf-8", "a list", "payloads not a list", "bad base64", "bad metadata", "unknown"],
)
@pytest.mark.parametrize("verb", ["decode", "encode"])
async def test_garbage_to_the_codec_is_400(ops: httpx.AsyncClient, content: bytes, verb: str) -> None:
    response = await ops.post(
        f"/codec/{verb}", content=content, headers={**_bearer(), "content-type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert response.json()["detail"]


async def test_payloads_that_do_not_decrypt_are_400(ops: httpx.AsyncClient, ops_settings: Settings) -> None:
    sealed = await _sealed(ops_settings)
    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    unknown_key = Payload(metadata={**sealed.metadata, "encryption-key-id": b"99"}, data=sealed.data)
    no_key_id = Payload(metadata={"encoding": b"binary/encrypted"}, data=sealed.data)
    other_key = await EncryptionCodec({"1": os.urandom(32)}, "1").encode([PLAIN])

    answers = [
        await ops.post("/codec/decode", json=_wire(payload), headers=_bearer())
        for payload in (tampered, unknown_key, no_key_id, *other_key)
    ]
    second = await ops.post("/codec/decode", json=_wire(sealed, tampered), headers=_bearer())

    assert [answer.status_code for answer in answers] == [400, 400, 400, 400]
    assert "wrong key or tampered" in answers[0].json()["detail"]
    assert "unknown key '99'" in answers[1].json()["detail"]
    assert second.status_code == 400 and second.json()["detail"].startswith("payloads[1]")


async def test_the_codec_body_is_bounded_too(ops: httpx.AsyncClient, ops_settings: Settings) -> None:
    too_large = await ops.post(
        "/codec/decode",
        content=b" " * (ops_settings.ops_max_body_bytes + 1),
        headers={**_bearer(), "content-type": "application/json"},
    )
    assert too_large.status_code == 413


# --- start-up ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "mode"),
    [(None, 0o600), ("", 0o600), ("short", 0o600), ("has a space" + "k" * 40, 0o600), (TOKEN, 0o644)],
    ids=["missing", "empty", "short", "spaces", "readable by others"],
)
def test_the_ops_listener_does_not_start_without_a_usable_token(
    settings: Settings, tmp_path: Path, content: str | None, mode: int
) -> None:
    path = tmp_path / "ops.token"
    if content is not None:
        path.write_text(content)
        path.chmod(mode)

    with pytest.raises(OpsConfigError):
        create_ops_app(settings.model_copy(update={"ops_token_file": path, "key_file_mode_check": True}))


def test_the_dev_token_is_made_once_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ops.token"

    first, again = ensure_ops_token(path), ensure_ops_token(path)

    assert first == again and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_the_dev_stack_points_the_web_ui_at_the_ops_listener(tmp_path: Path) -> None:
    ports = Ports.free()
    settings = dev_settings(tmp_path, ports)
    ensure_dev_keys(tmp_path / "keys")
    ensure_ops_token(settings.ops_token_file)
    endpoint = ui_codec_endpoint(settings)  # what --ui-codec-endpoint is given
    [sealed] = await settings.payload_codec.encode([PLAIN])
    origin = f"http://127.0.0.1:{ports.web_ui}"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_ops_app(settings))) as browser:
        # the UI appends /decode and sends no header of ours, from its own origin
        decoded = await browser.post(
            endpoint.replace(f"127.0.0.1:{ports.ops}", "ops") + "/decode",
            json=_wire(sealed),
            headers={"Origin": origin},
        )

    assert endpoint.startswith(f"http://127.0.0.1:{ports.ops}/codec/")
    assert len(set(ports.__dict__.values())) == 6  # the ops and metrics ports are ports of their own
    assert decoded.status_code == 200 and _unwire(decoded.json()) == [PLAIN]
    assert decoded.headers["access-control-allow-origin"] == origin


# --- the real `mpp api --ops-port` ---------------------------------------------------------------


def _child_env(settings: Settings, client: Client, **extra: str) -> dict[str, str]:
    inherited = {
        key: value for key, value in os.environ.items() if not key.startswith("MPP_") and key != "DATABASE_URL"
    }
    return {
        **inherited,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": settings.database_url,
        "MPP_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "MPP_TEMPORAL_NAMESPACE": client.namespace,
        "MPP_MPP_PRIVATE_KEY_FILE": str(settings.mpp_private_key_file),
        "MPP_MPP_PUBLIC_KEY_FILE": str(settings.mpp_public_key_file),
        "MPP_ALIPAYPLUS_PUBLIC_KEY_FILE": str(settings.alipayplus_public_key_file),
        "MPP_SECRET_KEY_FILE": str(settings.secret_key_file),
        "MPP_PAYLOAD_KEY_FILE": str(settings.payload_key_file),
        "MPP_KEY_FILE_MODE_CHECK": "false",  # the test keys are committed to git, which stores them 0644
        **extra,
    }


async def _spawn(env: dict[str, str], cwd: Path, *args: str) -> asyncio.subprocess.Process:
    with (cwd / "mpp-api.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.cli", "api", *args, cwd=cwd, env=env, stdout=log, stderr=log
        )


async def _until_up(process: asyncio.subprocess.Process, url: str, log: Path) -> None:
    async with httpx.AsyncClient(timeout=1.0) as http:
        for _ in range(400):
            if process.returncode is not None:
                pytest.fail(f"mpp api exited {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                await http.get(url)
                return
            await asyncio.sleep(0.1)
    pytest.fail(f"mpp api did not come up:\n{log.read_text()}")


async def _raw(port: int, request: bytes) -> bytes:
    """Send ``request`` (headers only, no body) and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


@pytest.fixture
async def code_service_url() -> AsyncIterator[str]:
    """Alipay+'s server SDK, which the API initialises before it starts."""
    peer = FastAPI()
    peer.include_router(code_service_router(CodeService()))
    port = Ports.free().sandbox
    async with _serving(peer, port):
        yield f"http://127.0.0.1:{port}"


async def test_mpp_api_serves_both_listeners_and_stops_on_sigterm_with_0(
    settings: Settings, client: Client, database: Ledger, token_file: Path, code_service_url: str, tmp_path: Path
) -> None:
    ports = Ports.free()
    env = _child_env(
        settings,
        client,
        MPP_API_PORT=str(ports.api),
        MPP_CODE_SERVICE_URL=code_service_url,
        MPP_OPS_TOKEN_FILE=str(token_file),
    )
    process = await _spawn(env, tmp_path, "--ops-port", str(ports.ops))
    api, ops_url = f"http://127.0.0.1:{ports.api}", f"http://127.0.0.1:{ports.ops}"
    try:
        await _until_up(process, f"{api}/healthz", tmp_path / "mpp-api.log")
        await _until_up(process, f"{ops_url}/codec/decode", tmp_path / "mpp-api.log")
        async with httpx.AsyncClient(timeout=5.0) as http:
            health = await http.get(f"{api}/healthz")
            public_codec = await http.post(f"{api}/codec/decode", json=_wire(await _sealed(settings)))
            anonymous = await http.post(f"{ops_url}/codec/decode", json=_wire(await _sealed(settings)))
            encoded = await http.post(f"{ops_url}/codec/encode", json=_wire(PLAIN), headers=_bearer())
            decoded = await http.post(f"{ops_url}/codec/decode", json=encoded.json(), headers=_bearer())
        declared = await _raw(
            ports.api,
            b"POST /app/v1/login HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            b"Content-Length: 314572800\r\n\r\n",
        )

        assert health.status_code == 200 and "server" not in health.headers
        assert public_codec.status_code == 404 and "server" not in public_codec.headers
        assert anonymous.status_code == 401 and "server" not in anonymous.headers
        assert encoded.status_code == 200 and decoded.status_code == 200
        assert _unwire(decoded.json()) == [PLAIN]
        head, _, body = declared.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")  # answered with the headers alone, then closed
        assert b"\r\nserver:" not in head.lower()
        assert json.loads(body) == {"detail": f"request body too large (limit {settings.max_app_body_bytes} bytes)"}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=30)

    assert code == 0, (tmp_path / "mpp-api.log").read_text()
    assert await _refused(ports.api) and await _refused(ports.ops)  # SIGTERM stopped both


async def test_mpp_api_does_not_start_without_the_ops_token(settings: Settings, client: Client, tmp_path: Path) -> None:
    ports = Ports.free()
    env = _child_env(settings, client, MPP_API_PORT=str(ports.api), MPP_OPS_TOKEN_FILE=str(tmp_path / "missing"))

    process = await _spawn(env, tmp_path, "--ops-port", str(ports.ops))
    code = await asyncio.wait_for(process.wait(), timeout=30)

    assert code == 1
    assert "operator listener refused to start" in (tmp_path / "mpp-api.log").read_text()
    assert await _refused(ports.api) and await _refused(ports.ops)
