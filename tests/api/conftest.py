"""The MPP's HTTP API in process (no ports): signed calls as Alipay+ makes them, answers checked.

``api`` is ``create_app(settings, client)`` behind ``httpx.ASGITransport``, with the app's
lifespan entered by hand (ASGITransport does not run it). ``AlipayPlusCaller`` signs with the
sandbox Alipay+'s key and checks every answer's signature with the MPP's public key.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.worker import Worker

from alipayplus import KeyRegistry, Verifier
from api.main import create_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.code_service import CodeService, code_service_router
from wallet.ledger import Ledger
from wallet.settings import Settings


@pytest.fixture(scope="module")
def code_service() -> CodeService:
    """Alipay+'s server SDK (code identification) as the sandbox plays it; tests script its answers."""
    return CodeService()


def code_service_transport(service: CodeService) -> httpx.ASGITransport:
    peer = FastAPI()
    peer.include_router(code_service_router(service))
    return httpx.ASGITransport(app=peer)


@pytest.fixture(scope="module")
async def app(
    settings: Settings, client: Client, worker: Worker, database: Ledger, code_service: CodeService
) -> AsyncIterator[FastAPI]:
    """The API with its lifespan running; ``worker`` so the workflows it starts make progress."""
    application = create_app(settings, client, code_service_transport=code_service_transport(code_service))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def api(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url) as http:
        yield http


@pytest.fixture(scope="module")
def mpp_verifier(settings: Settings) -> Verifier:
    """Checks the MPP's answers with the MPP's public key (tests/fixtures/test_mpp_public.pem)."""
    keys = KeyRegistry()
    keys.add_file(settings.client_id, settings.key_version, settings.mpp_public_key_file)
    return Verifier(settings.client_id, keys)


@dataclass
class AlipayPlusCaller:
    """Alipay+ calling the MPP: raw bodies, signed (or deliberately mis-signed) headers."""

    http: httpx.AsyncClient
    peer: SandboxAlipayPlus
    verifier: Verifier

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST ``body``; ``headers`` default to a correct Alipay+ signature over ``path``."""
        return await self.http.post(
            path, content=body, headers=self.peer.signer.headers(path, body) if headers is None else headers
        )

    def check(self, path: str, response: httpx.Response) -> dict[str, Any]:
        """HTTP 200, ``Response-Time`` and a ``Signature`` that verifies over the raw answer."""
        assert response.status_code == 200, response.text
        assert response.headers.get("Response-Time")
        assert response.headers.get("Client-Id") == self.verifier.client_id
        assert response.headers.get("Signature")
        self.verifier.check(path, response.headers, response.content, response=True)  # raises if not
        answer: dict[str, Any] = response.json()
        return answer

    async def call(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return self.check(path, await self.post(path, body, headers))


@pytest.fixture(scope="module")
def alipay(api: httpx.AsyncClient, alipayplus: SandboxAlipayPlus, mpp_verifier: Verifier) -> AlipayPlusCaller:
    return AlipayPlusCaller(api, alipayplus, mpp_verifier)


def result_of(answer: dict[str, Any], key: str = "result") -> tuple[str, str]:
    """``(resultStatus, resultCode)`` of an answer's ``result`` (or of another result object in it)."""
    return answer[key]["resultStatus"], answer[key]["resultCode"]


def new_id(tag: str) -> str:
    """A fresh request id that says which test made it."""
    return f"api-{tag}-{uuid.uuid4().hex}"


BodyEdit = Callable[[dict[str, Any]], None]


def set_at(*path_and_value: Any) -> BodyEdit:
    """An edit of a wire body: the field at ``path`` (keys, outermost first) set to the last argument."""
    *path, value = path_and_value

    def change(body: dict[str, Any]) -> None:
        _parent(body, path)[path[-1]] = value

    return change


def drop_at(*path: str) -> BodyEdit:
    """An edit of a wire body: the field at ``path`` removed."""

    def change(body: dict[str, Any]) -> None:
        _parent(body, path).pop(path[-1])

    return change


def _parent(body: dict[str, Any], path: Sequence[str]) -> dict[str, Any]:
    for key in path[:-1]:
        body = body[key]
    return body
