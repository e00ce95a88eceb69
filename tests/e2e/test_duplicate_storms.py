"""Duplicate storms on the real Temporal dev server: Alipay+'s retries and a user's double clicks,
all at once, still get one payment, one debit and signed answers.

A storm of updates to one workflow fills the server's per-workflow limit of in-flight updates (10
on the dev server), which refuses the excess with RESOURCE_EXHAUSTED or aborts it (UNAVAILABLE).
Each storm runs against two APIs on the same stack: the stack's own, whose Temporal client (the
SDK's default) retries those refusals itself for up to 10 s, and a second API whose client gives
up at once: what the API sees once the SDK has given up, which ``api.workflow_calls`` must absorb.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RetryConfig

from alipayplus import Amount, PayRequest, PayResponse, RefundResponse, ResultCode, ResultStatus
from api.main import create_app
from api.pages import form_fields, link
from devstack.stack import DevStack, Ports, _serving, dev_stack
from sandbox.alipayplus.driver import AlipayPlusDriver
from wallet.db import create_engine_for
from wallet.ledger import Ledger
from wallet.records import Posting
from wallet.temporal import data_converter
from wallet.users import DEMO_PIN, DEMO_USERS

pytestmark = pytest.mark.timeout(300)

PIN_USER = next(user for user in DEMO_USERS if user.login_id == "852-11112222")
PAY_STORM, PIN_STORM, REFUND_STORM = 50, 20, 16
# The SDK's client retries a refused call with a back-off growing to seconds, for up to 10 s:
# this one does not retry (one attempt, no time to retry in), so the refusals reach our code.
NO_RETRIES = RetryConfig(initial_interval_millis=1, max_elapsed_time_millis=1, max_retries=0)
# idle connections dropped before uvicorn's 5 s keep-alive timeout closes them, or a request racing
# that close fails with a ReadError (a client artefact, as in bench/easy_pay.py)
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=3.0)
T = TypeVar("T")


@dataclass(frozen=True)
class Api:
    """One MPP API on the stack, as Alipay+ and the user reach it."""

    name: str
    driver: AlipayPlusDriver
    base_url: str


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    async with dev_stack(var_dir=tmp_path_factory.mktemp("storms"), ports=Ports.free(), web_ui=False) as stack:
        yield stack


@pytest.fixture(scope="module")
async def apis(stack: DevStack) -> AsyncIterator[dict[str, Api]]:
    settings = stack.settings
    eager = await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        retry_config=NO_RETRIES,
    )
    port = Ports.free().api
    url = f"http://127.0.0.1:{port}"
    async with (
        _serving(create_app(settings, eager), port),
        _driver(stack, stack.api_url) as stack_driver,
        _driver(stack, url) as eager_driver,
    ):
        yield {
            "sdk-retries": Api("the stack's API", stack_driver, stack.api_url),
            "no-sdk-retries": Api("an API whose Temporal client does not retry", eager_driver, url),
        }


@pytest.fixture(params=["sdk-retries", "no-sdk-retries"])
def api(request: pytest.FixtureRequest, apis: dict[str, Api]) -> Api:
    return apis[request.param]


@pytest.fixture(scope="module")
def records(stack: DevStack) -> Iterator[Engine]:
    engine = create_engine_for(stack.settings.database_url)
    yield engine
    engine.dispose()


def _driver(stack: DevStack, base_url: str) -> AlipayPlusDriver:
    """Alipay+ with a connection pool wide enough for a storm."""
    return AlipayPlusDriver.for_peer(stack.alipayplus, base_url, transport=httpx.AsyncHTTPTransport(limits=LIMITS))


async def _storm(count: int, call: Callable[[], Awaitable[T]]) -> tuple[list[T], str]:
    """``count`` calls at once, none failing (for Alipay+'s calls a TransportError: unsigned, non-200
    or no answer); the answers, and how long they took."""

    async def timed() -> tuple[T, float]:
        started = time.perf_counter()
        return await call(), time.perf_counter() - started

    outcomes = await asyncio.gather(*(timed() for _ in range(count)), return_exceptions=True)
    failures = Counter(f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException))
    assert not failures, f"{sum(failures.values())} of {count} calls got no answer: {dict(failures)}"
    answered = [o for o in outcomes if not isinstance(o, BaseException)]
    seconds = sorted(took for _, took in answered)
    return [answer for answer, _ in answered], f"median {seconds[len(seconds) // 2]:.2f} s, slowest {seconds[-1]:.2f} s"


def _order(stack: DevStack, amount: int) -> PayRequest:
    request_id = f"storm{uuid.uuid4().hex[:20]}"
    return AlipayPlusDriver.easy_pay_order(
        request_id,
        PIN_USER.login_id,
        Amount(currency=PIN_USER.currency, value=amount),
        stack.settings.psp_id,
        redirect_url=f"https://ac.alipay.com/result?order={request_id}",  # Alipay+'s result page (allow-listed)
    )


async def _ordered(api: Api, request: PayRequest) -> PayResponse:
    answer = await api.driver.pay(request)
    assert _code(answer) == ("U", ResultCode.PAYMENT_IN_PROCESS) and answer.payment_url, answer
    return answer


async def _paid(api: Api, request: PayRequest) -> None:
    """Until inquiryPayment says the payment succeeded (debited and final)."""
    for _ in range(100):
        inquiry = await api.driver.inquire(request.payment_request_id, psp_id=request.psp_id)
        if inquiry.payment_result and inquiry.payment_result.result_status is not ResultStatus.UNKNOWN:
            assert inquiry.payment_result.result_status is ResultStatus.SUCCESS, inquiry
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{request.payment_request_id} never became final")


def _code(answer: PayResponse | RefundResponse) -> tuple[str, str]:
    return answer.result.result_status.value, answer.result.result_code


def _page_url(api: Api, payment_url: str) -> str:
    """The verification page on ``api`` (the paymentUrl names the stack's public address)."""
    return api.base_url + urlsplit(payment_url).path


def _shown(response: httpx.Response) -> str:
    """What a page answer showed: the status and the redirect, or the page's message or heading."""
    if response.is_redirect:
        return f"{response.status_code} {response.headers['location']}"
    shown = re.search(r'role="status">([^<]*)<', response.text) or re.search(
        r"<h1>([^<]*)</h1>(?:<p>([^<]*))?", response.text
    )
    text = ": ".join(part for part in shown.groups() if part) if shown else response.text[:80]
    return f"{response.status_code} {text}"


def _balance(records: Engine) -> int:
    return Ledger(records).balance(Ledger.user_account_id(PIN_USER.customer_id))


async def test_identical_pays_get_the_same_signed_answer(stack: DevStack, api: Api) -> None:
    request = _order(stack, 100)

    answers, took = await _storm(PAY_STORM, lambda: api.driver.pay(request))

    codes = Counter(_code(answer) for answer in answers)
    assert codes == {("U", ResultCode.PAYMENT_IN_PROCESS): PAY_STORM}, codes
    full = {answer.model_dump_json() for answer in answers if answer.payment_url}
    assert len(full) == 1, f"different answers: {full}"  # one order's, and at least one answer carries it
    late = [answer for answer in answers if not answer.payment_url]
    assert all(answer.payment_id is None for answer in late)  # past the deadline: a bare U, nothing else
    runs = [run async for run in stack.client.list_workflows(f'WorkflowId = "pay/{request.payment_request_id}"')]
    assert len(runs) == 1, runs
    print(f"\n{api.name}: {PAY_STORM - len(late)} full answers, {len(late)} bare U (deadline passed); {took}")


async def test_concurrent_pin_posts_debit_once(stack: DevStack, api: Api, records: Engine) -> None:
    request = _order(stack, 700)
    answer = await _ordered(api, request)
    before = _balance(records)
    page = _page_url(api, answer.payment_url or "")

    async with httpx.AsyncClient(timeout=30.0, limits=LIMITS) as user:
        form = form_fields((await user.get(page)).text)  # one page open, its form posted many times
        responses, took = await _storm(PIN_STORM, lambda: user.post(page, data={"code": DEMO_PIN, **form}))

        await _paid(api, request)
        result = await user.get(page)  # where every one of those posts sent the browser back to

    back = urlsplit(page).path
    seen = Counter(_shown(response) for response in responses)
    # each post is answered 303 back to the page: plain, or asking to try again if the server was busy
    assert all(shown in (f"303 {back}", f"303 {back}?notice=busy") for shown in seen), seen
    paid = f"https://ac.alipay.com/result?order={request.payment_request_id}&status=success"
    assert 'data-outcome="success"' in result.text and link(result.text, "continue") == paid
    assert before - _balance(records) == 700
    key = f"pay/{request.payment_request_id}/debit"
    with Session(records) as session:
        debits = session.exec(select(func.count()).select_from(Posting).where(col(Posting.idempotency_key) == key))
        assert debits.one() == 1
    assert Ledger(records).check().ok
    print(f"\n{api.name}: {dict(seen)}; {took}")


async def test_concurrent_refunds_never_exceed_the_payment(stack: DevStack, api: Api, records: Engine) -> None:
    paid_amount = Amount(currency=PIN_USER.currency, value=1000)  # 30 % is 300 minor units, exactly
    request = _order(stack, paid_amount.value)
    answer = await _ordered(api, request)
    async with httpx.AsyncClient(timeout=30.0) as user:
        page = _page_url(api, answer.payment_url or "")
        form = form_fields((await user.get(page)).text)
        pin = await user.post(page, data={"code": DEMO_PIN, **form})
        shown = await user.get(page)
    assert pin.status_code == 303 and "status=success" in (link(shown.text, "continue") or ""), pin
    await _paid(api, request)
    after_payment = _balance(records)
    share = Amount(currency=paid_amount.currency, value=paid_amount.value * 30 // 100)

    async def refund() -> RefundResponse:
        """One refund, repeated while it answers U, as Alipay+ does."""
        refund_request = AlipayPlusDriver.refund_request(
            request, answer.payment_id or "", f"refund{uuid.uuid4().hex[:20]}", share
        )
        for _ in range(10):
            refunded = await api.driver.refund(refund_request)
            if refunded.result.result_status is not ResultStatus.UNKNOWN:
                return refunded
        return refunded

    answers, took = await _storm(REFUND_STORM, refund)

    codes = Counter(_code(answer) for answer in answers)
    assert codes[("S", ResultCode.SUCCESS)] == 3, codes
    assert all(status == "F" for status, code in codes if code != ResultCode.SUCCESS), codes  # refused for good
    assert _balance(records) - after_payment == 3 * share.value == paid_amount.value * 90 // 100
    assert Ledger(records).check().ok
    print(f"\n{api.name}: {dict(codes)}; {took}")
