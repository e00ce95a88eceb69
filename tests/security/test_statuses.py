"""Issue 13, item 9: honest statuses, checked by Schemathesis over the app's own OpenAPI schema.

Every wallet-app route (``/app/v1/...``), page route (``/easypay/verify/...``, ``/mpm/pay/...``),
``/healthz`` and every route of the operator listener (``create_ops_app``) is called with
Schemathesis' generated requests, valid and invalid, signed in (a bearer session of a user of this
test alone, the operator's token on the listener). Each answer must be no 5xx (a client error is
never a server error) and a status that operation declares in its OpenAPI ``responses``. The
``/aps/...`` routes are left out: they answer signed HTTP 200 by design and are tested elsewhere.

Generation is bounded and derandomized, so a run is reproducible; the requests are sent in process
(``httpx.ASGITransport`` on the session's event loop, where the Temporal client lives) while
Hypothesis drives the examples from a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import timedelta, timezone
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from fastapi import FastAPI, Response
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import status_code_conformance
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from alipayplus import Amount, KeyRegistry, PayRequest, Verifier
from api import pages
from api.main import APS_PREFIX, create_app, create_ops_app
from api.routers import mpm, verification
from api.services import Services
from sandbox.alipayplus.driver import easy_pay_order
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.code_service import CodeService
from tests.api.conftest import AlipayPlusCaller, code_service_transport, result_of
from tests.api.test_mpm import User, access_token, mpm_pay, ordered
from tests.conftest import new_user
from wallet.ledger import Ledger
from wallet.records import NfcDevice, WalletUser
from wallet.secrets import token_digest
from wallet.settings import Settings

pytestmark = pytest.mark.timeout(90)  # a run takes ~20 s on 2 cores

EXAMPLES = 25  # per operation signed in, valid and invalid requests drawn together
SIGNED_OUT_EXAMPLES = 8  # per operation without a credential: enough to meet its refusal
PIN = "246810"
OPS_TOKEN = "ops-statuses-token-" + "s" * 40
OPS_BASE_URL = "http://ops"
PRICE = Amount(currency="KRW", value=5000)
_UTC8 = timezone(timedelta(hours=8))
CALL_TIMEOUT = 30.0  # seconds for one request: far above any answer, below the module's timeout

# (method, path template, status) known to answer undeclared: reported as a warning, not failed. A listed
# case that is no longer found fails the test, so that the set only shrinks. Empty: keep it so.
PENDING_ROUTES: set[tuple[str, str, int]] = set()

# The page routes that are forms, and what each form's token is for.
PAGE_FORMS: dict[tuple[str, str], str] = {
    ("POST", f"{verification.PREFIX}/{{payment_request_id}}/{{payment_id}}"): verification.CODE_FORM,
    ("POST", f"{verification.PREFIX}/{{payment_request_id}}/{{payment_id}}/resend"): verification.RESEND_FORM,
    ("POST", f"{mpm.PREFIX}/{{payment_request_id}}/{{payment_id}}"): mpm.DECIDE_FORM,
}


@dataclass(frozen=True)
class Finding:
    """One check failure: what was called, what it answered, and a request that shows it."""

    method: str
    path: str
    status: int
    checks: str
    example: str

    @property
    def key(self) -> tuple[str, str, int]:
        return self.method, self.path, self.status

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status} ({self.checks}); e.g. {self.example}"


# --- the apps in process -------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def app(settings: Settings, client: Client, worker: Worker, database: Ledger) -> AsyncIterator[FastAPI]:
    application = create_app(settings, client, code_service_transport=code_service_transport(CodeService()))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
def ops_app(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    token_file = tmp_path_factory.mktemp("ops-statuses") / "ops.token"
    token_file.write_text(OPS_TOKEN + "\n")
    token_file.chmod(0o600)
    # The token-in-path routes too, so that every route the listener can serve is checked.
    return create_ops_app(settings.model_copy(update={"ops_token_file": token_file, "ops_token_in_path": True}))


@pytest.fixture(scope="module")
async def user(app: FastAPI, engine: Engine, database: Ledger, client: Client) -> AsyncIterator[User]:
    """A user of this test alone (KRW, for MPM's sample pay): the generated NFC activations must not use
    up a shared user's devices, nor the generated page posts a shared user's money or attempts."""
    services: Services = app.state.services
    customer_id = new_user(engine, database, 1_000_000, currency="KRW")
    with Session(engine) as session:
        wallet_user = session.get(WalletUser, customer_id)
        assert wallet_user is not None
        wallet_user.pin_digest = services.credentials.new_pin_verifier(customer_id, PIN)
        session.add(wallet_user)
        session.commit()
        login_id = wallet_user.login_id
    yield User(login_id, customer_id)
    await _stop_activations(client, engine, customer_id)


async def _stop_activations(client: Client, engine: Engine, customer_id: str) -> None:
    """End the activations the examples started with the user's right PIN. Their Mastercard step has
    no peer in this session, so they would retry for good, and a running activity holds the shared
    time-skipping server's clock: later tests waiting for a 3-minute expiry would wait in real time."""
    with Session(engine) as session:
        devices = session.exec(select(NfcDevice.device_id).where(col(NfcDevice.customer_id) == customer_id)).all()
    for device_id in devices:
        with contextlib.suppress(RPCError):  # never started (refused later on), or already over
            await client.get_workflow_handle(f"activation/{customer_id}/{device_id}").terminate("status test over")


@pytest.fixture(scope="module")
async def payments(
    app: FastAPI, settings: Settings, env: WorkflowEnvironment, alipayplus: SandboxAlipayPlus, user: User
) -> dict[str, dict[str, str]]:
    """A payment waiting behind each page (page prefix -> its path parameters), ordered as Alipay+ does."""
    keys = KeyRegistry()
    keys.add_file(settings.client_id, settings.key_version, settings.mpp_public_key_file)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url) as http:
        alipay = AlipayPlusCaller(http, alipayplus, Verifier(settings.client_id, keys))
        request = easy_pay_order(f"sts-{uuid.uuid4().hex}", user.login_id, PRICE, settings.psp_id)
        expiry = (await env.get_current_time() + timedelta(minutes=10)).astimezone(_UTC8).replace(microsecond=0)
        created = await alipay.call(
            PayRequest.PATH, request.model_copy(update={"payment_expiry_time": expiry}).to_wire()
        )
        assert result_of(created) == ("U", "PAYMENT_IN_PROCESS"), created
        token = await access_token(alipay, app.state.services, settings, user)
        order = await ordered(alipay, settings, mpm_pay(settings, token, user.customer_id))
    return {
        verification.PREFIX: {"payment_request_id": request.payment_request_id, "payment_id": created["paymentId"]},
        mpm.PREFIX: {"payment_request_id": order.payment_request_id, "payment_id": order.payment_id},
    }


# --- calling an operation with Schemathesis' cases ------------------------------------------------

Send = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


@dataclass(frozen=True)
class Target:
    """Where the cases go (an app in process, on the loop its clients live on) and with which credential."""

    send: Send
    loop: asyncio.AbstractEventLoop
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pinned:
    """Cases about a real thing besides the generated ones: its path parameters and, on a page's form
    post, the form's token (without them every case ends at 404, 401 or 403)."""

    path_parameters: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)


def _sender(app: FastAPI) -> Send:
    """Sends one request to ``app`` in process; an unhandled exception is answered 500, as a server would."""

    async def send(request: httpx.Request) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport) as http:  # no cookies kept between cases
            return await http.send(request)

    return send


def _request(case: Case, target: Target, form: dict[str, str]) -> httpx.Request:
    """The case as requests would send it (Schemathesis serializes for requests), handed to httpx;
    ``form`` fields are added to a form body (or make one)."""
    kwargs = case.as_transport_kwargs(base_url=target.base_url, headers=target.headers)
    data = kwargs.get("data")
    if form and (data is None or isinstance(data, dict)):
        data = {**(data or {}), **form}
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        cookies=kwargs.get("cookies"),
        data=data,
        json=kwargs.get("json"),
        files=kwargs.get("files"),
    ).prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    headers = {name: value if isinstance(value, str) else value.decode() for name, value in prepared.headers.items()}
    content = body if isinstance(body, bytes) else None  # requests prepares str, bytes or nothing
    return httpx.Request(prepared.method or case.method, prepared.url or "", headers=headers, content=content)


def _fuzz(operation: APIOperation, target: Target, examples: int, pinned: Pinned | None = None) -> list[Finding]:
    """Runs ``examples`` cases of ``operation`` (in this thread) and returns what the checks refused.

    Failures are collected rather than raised, so Hypothesis does not shrink them (bounded time) and
    every distinct (status, check) is reported with the first request that showed it.
    """
    found: dict[tuple[int, str], Finding] = {}
    strategies = [
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]
    if pinned is not None:
        strategies.append(operation.as_strategy(path_parameters=pinned.path_parameters))

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same cases every run
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=st.one_of(strategies))
    def call(case: Case) -> None:
        on_pinned = pinned is not None and case.path_parameters == pinned.path_parameters
        request = _request(case, target, pinned.form if pinned is not None and on_pinned else {})
        response = asyncio.run_coroutine_threadsafe(target.send(request), target.loop).result(CALL_TIMEOUT)
        try:
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
        except FailureGroup as failures:
            names = ", ".join(sorted({type(failure).__name__ for failure in failures.exceptions}))
            example = f"{request.method} {request.url} body={request.content[:200]!r} -> {response.text[:200]!r}"
            finding = Finding(operation.method.upper(), operation.path, response.status_code, names, example)
            found.setdefault((response.status_code, names), finding)

    call()
    return list(found.values())


def _operations(schema: schemathesis.BaseSchema) -> list[APIOperation]:
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == len(list(schema.get_all_operations())), "an operation Schemathesis cannot read"
    return [operation for operation in operations if not operation.path.startswith(APS_PREFIX)]


def _judge(findings: list[Finding], checked: set[tuple[str, str]]) -> None:
    """Fails on any finding not pending, and on a pending case that no longer shows (to be removed)."""
    unexpected = [finding for finding in findings if finding.key not in PENDING_ROUTES]
    pending_seen = {finding.key for finding in findings} & PENDING_ROUTES
    fixed = {key for key in PENDING_ROUTES if key[:2] in checked} - pending_seen
    pending = [str(finding) for finding in findings if finding.key in PENDING_ROUTES]
    if pending:
        warnings.warn("PENDING_ROUTES still found:\n" + "\n".join(pending), stacklevel=2)
    assert not unexpected, "server errors or undocumented statuses:\n" + "\n".join(map(str, unexpected))
    assert not fixed, f"no longer found, remove from PENDING_ROUTES: {sorted(fixed)}"


async def _login(target: Target, login_id: str) -> str:
    login = httpx.Request("POST", f"{target.base_url}/app/v1/login", json={"loginId": login_id, "pin": PIN})
    response = await target.send(login)
    assert response.status_code == 200, response.text
    token: str = response.json()["sessionToken"]
    return token


def _on_a_page(
    operation: APIOperation, payments: dict[str, dict[str, str]], secret_key: bytes, session: str
) -> Pinned | None:
    """The page's real payment; on a form post with its token (MPM's bound to the session too)."""
    prefix = next((prefix for prefix in payments if operation.path.startswith(prefix + "/")), None)
    if prefix is None:
        return None
    ids = payments[prefix]
    form = PAGE_FORMS.get((operation.method.upper(), operation.path))
    if form is None:
        return Pinned(ids)
    bound = token_digest(session) if prefix == mpm.PREFIX else ""
    token = pages.form_token(secret_key, form, ids["payment_request_id"], ids["payment_id"], bound)
    return Pinned(ids, {pages.CSRF_FIELD: token})


# --- the tests ------------------------------------------------------------------------------------


async def test_public_routes_answer_only_documented_client_statuses(
    app: FastAPI, settings: Settings, user: User, payments: dict[str, dict[str, str]]
) -> None:
    schema = schemathesis.openapi.from_dict(app.openapi())
    signed_out = Target(_sender(app), asyncio.get_running_loop(), settings.public_base_url)
    operations = _operations(schema)
    assert {(operation.method.upper(), operation.path) for operation in operations} >= set(PAGE_FORMS)
    assert any(operation.path.startswith("/app/v1/nfc/") for operation in operations)

    findings: list[Finding] = []
    for operation in operations:
        findings += await asyncio.to_thread(_fuzz, operation, signed_out, SIGNED_OUT_EXAMPLES)
        session = await _login(signed_out, user.login_id)  # a session per operation: logout ends it
        signed_in = replace(signed_out, headers={"Authorization": f"Bearer {session}"})
        pinned = _on_a_page(operation, payments, settings.secret_key, session)
        findings += await asyncio.to_thread(_fuzz, operation, signed_in, EXAMPLES, pinned)

    _judge(findings, {(operation.method.upper(), operation.path) for operation in operations})


async def test_operator_routes_answer_only_documented_client_statuses(ops_app: FastAPI) -> None:
    schema = schemathesis.openapi.from_dict(ops_app.openapi())
    without_token = Target(_sender(ops_app), asyncio.get_running_loop(), OPS_BASE_URL)
    with_token = replace(without_token, headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    operations = _operations(schema)
    assert {operation.path for operation in operations} >= {"/codec/decode", "/codec/encode"}

    findings: list[Finding] = []
    for operation in operations:
        # The token-in-path routes get the right token in their path too, to reach past 401.
        in_path = Pinned({"operator_token": OPS_TOKEN}) if "{operator_token}" in operation.path else None
        findings += await asyncio.to_thread(_fuzz, operation, without_token, SIGNED_OUT_EXAMPLES)
        findings += await asyncio.to_thread(_fuzz, operation, with_token, EXAMPLES, in_path)

    _judge(findings, {(operation.method.upper(), operation.path) for operation in operations})


async def test_the_checks_catch_a_server_error_and_an_undocumented_status() -> None:
    """The harness itself: a 500 and an undeclared 418 are found, a declared answer is not."""
    probe = FastAPI()

    @probe.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @probe.get("/teapot", responses={404: {"description": "declared"}})
    async def teapot() -> Response:
        return Response(status_code=418)

    @probe.get("/fine", responses={404: {"description": "declared"}})
    async def fine() -> Response:
        return Response(status_code=404)

    schema = schemathesis.openapi.from_dict(probe.openapi())
    target = Target(_sender(probe), asyncio.get_running_loop(), "http://probe")
    findings: list[Finding] = []
    for operation in _operations(schema):
        findings += await asyncio.to_thread(_fuzz, operation, target, 3)

    assert {finding.key for finding in findings} == {("GET", "/boom", 500), ("GET", "/teapot", 418)}
    assert all("ServerError" in finding.checks for finding in findings if finding.status == 500)
    assert all("UndefinedStatusCode" in finding.checks for finding in findings)
