"""The soak's load: Easy Pay payments, refunds and cancels driven as Alipay+ and a user would,
while a killer SIGKILLs the worker or the API and restarts it at once.

Callers behave as the real parties do: a signed call that gets no signed answer (connection
refused while the API is down, a timeout, a 5xx) is sent again with the same body until one
arrives; a pay answered U without a paymentUrl, or an unknown result, is followed by
inquiryPayment; a refund or cancel answered U is sent again; the user's page is opened (for its
form's token) and the PIN POST retried until our page answers. Every plan (what each payment
does) comes from the seeded generator.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import httpx

from alipayplus import (
    Amount,
    AuthorizationInfo,
    CancelPaymentResponse,
    PayRequest,
    RefundResponse,
    ResultStatus,
    TransportError,
)
from api.pages import form_fields, link
from devstack.processes import Service
from sandbox.alipayplus.driver import AlipayPlusDriver

T = TypeVar("T")

PIN_USER, PIN = "852-11112222", "246810"
AMOUNT = Amount(currency="IDR", value=100)  # far below every limit, whatever the count
REFUND_SHARE = 0.3  # a partial refund: 30 of 100
AUTH_CLIENT_ID = "2188120040699147"


def _page_outcome(page: str) -> str:
    """What our payment page shows: the result page's Continue to Alipay+ (success | fail), or the
    page itself (the form again after a wrong code, or a payment that ended elsewhere)."""
    onward = link(page, "continue") or ""
    if "status=" in onward:
        return "success" if "status=success" in onward else "fail"
    return "page"


class FlowError(Exception):
    """A flow could not get a final answer before its deadline."""


@dataclass
class Plan:
    """What one payment does, decided up front from the seed."""

    one_click: bool
    cancel_before_pin: bool
    pin_after_cancel: bool
    refund: bool
    cancel_after_success: bool
    think: float  # seconds the user takes before typing the PIN

    @classmethod
    def draw(cls, rng: random.Random, think: float) -> Plan:
        cancel_before_pin = rng.random() < 0.08
        return cls(
            one_click=rng.random() < 0.2,
            cancel_before_pin=cancel_before_pin,
            pin_after_cancel=cancel_before_pin and rng.random() < 0.5,
            refund=rng.random() < 0.3,
            cancel_after_success=rng.random() < 0.12,
            think=rng.uniform(0, think),
        )


@dataclass
class Flow:
    index: int
    request: PayRequest
    plan: Plan
    agreement: str | None
    payment_id: str | None = None
    payment_url: str | None = None
    pin_redirect: str | None = None  # success | fail | page (our page, no redirect)
    final: str | None = None  # the payment's final result as inquiryPayment gave it: "S/SUCCESS"
    refund_request_id: str | None = None
    refund_result: str | None = None
    cancel_before_result: str | None = None
    cancel_after_result: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def payment_request_id(self) -> str:
        return self.request.payment_request_id


@dataclass
class LoadStats:
    flows_done: int = 0
    transport_retries: int = 0  # signed calls sent again after no signed answer
    pin_retries: int = 0
    pay_unknown: int = 0  # pay answered U without a paymentUrl
    retried_u: Counter[str] = field(default_factory=Counter)  # refund/cancel answered U, sent again


@dataclass
class Kill:
    service: str
    at: float  # time.monotonic() of the SIGKILL
    restart_seconds: float


def plan_flows(
    count: int, rng: random.Random, run_id: str, psp_id: str, result_url: str, expiry: timedelta, think: float
) -> list[Flow]:
    flows = []
    for index in range(count):
        plan = Plan.draw(rng, think)
        request_id = f"soak{run_id}p{index:05d}{rng.getrandbits(32):08x}"
        agreement = f"soak{run_id}a{index:05d}" if plan.one_click else None
        authorization = (
            AuthorizationInfo(auth_client_id=AUTH_CLIENT_ID, auth_state=f"st{index}", reference_agreement_id=agreement)
            if agreement
            else None
        )
        request = AlipayPlusDriver.easy_pay_order(
            request_id,
            PIN_USER,
            AMOUNT,
            psp_id,
            expires_in=expiry,
            redirect_url=f"{result_url}?paymentRequestId={request_id}",
            authorization=authorization,
        )
        flows.append(Flow(index, request, plan, agreement))
    return flows


def _result(status: ResultStatus | str, code: str) -> str:
    return f"{status}/{code}"


@dataclass
class Load:
    driver: AlipayPlusDriver
    user: httpx.AsyncClient
    flow_timeout: float
    stats: LoadStats = field(default_factory=LoadStats)

    async def run(self, flows: list[Flow], concurrency: int) -> None:
        queue = list(reversed(flows))

        async def lane() -> None:
            while queue:
                flow = queue.pop()
                started = time.monotonic()
                try:
                    await self.flow(flow, started + self.flow_timeout)
                except FlowError as exc:
                    flow.error = str(exc)
                except Exception as exc:  # a harness bug must not stop the other lanes
                    flow.error = f"{type(exc).__name__}: {exc}"
                flow.seconds = time.monotonic() - started
                self.stats.flows_done += 1

        await asyncio.gather(*(lane() for _ in range(concurrency)))

    # --- one payment ------------------------------------------------------------------------

    async def flow(self, flow: Flow, deadline: float) -> None:
        request = flow.request
        if not await self._create(flow, deadline):
            flow.final = await self._final(flow, deadline)
            return
        await asyncio.sleep(flow.plan.think)  # the user reads the page
        if flow.plan.cancel_before_pin:
            flow.cancel_before_result = await self._cancel(flow, deadline)
            if flow.plan.pin_after_cancel:
                flow.pin_redirect = await self._pin(flow, deadline)
            flow.final = await self._final(flow, deadline)
            return
        flow.pin_redirect = await self._pin(flow, deadline)
        flow.final = await self._final(flow, deadline)
        if flow.final != "S/SUCCESS":
            return
        if flow.plan.refund:
            flow.refund_request_id = f"{request.payment_request_id[:40]}r"
            flow.refund_result = await self._refund(flow, deadline)
        if flow.plan.cancel_after_success:
            flow.cancel_after_result = await self._cancel(flow, deadline)

    async def _signed(self, what: str, call: Callable[[], Awaitable[T]], deadline: float) -> T:
        """The call, sent again with the same body until a signed answer arrives."""
        while True:
            try:
                return await call()
            except TransportError as exc:
                if time.monotonic() > deadline:
                    raise FlowError(f"{what}: no signed answer before the flow's deadline ({exc})") from None
                self.stats.transport_retries += 1
                await asyncio.sleep(random.uniform(0.2, 0.6))

    async def _create(self, flow: Flow, deadline: float) -> bool:
        """pay #2 until it gives a paymentUrl (True) or the payment turns out final (False)."""
        request = flow.request
        while True:
            answer = await self._signed("pay", lambda: self.driver.pay(request), deadline)
            if answer.result.result_status is not ResultStatus.UNKNOWN:
                return False  # final already (e.g. closed): inquiry tells the final result
            if answer.payment_url:
                flow.payment_id, flow.payment_url = answer.payment_id, answer.payment_url
                return True
            self.stats.pay_unknown += 1  # U without a page: ask, then send the same pay again
            inquiry = await self._signed(
                "inquiryPayment", lambda: self.driver.inquire(request.payment_request_id), deadline
            )
            result = inquiry.payment_result
            if inquiry.result.is_success and result is not None and result.result_status is not ResultStatus.UNKNOWN:
                return False
            if time.monotonic() > deadline:
                raise FlowError("pay: never answered with a paymentUrl")
            await asyncio.sleep(1.0)

    async def _pin(self, flow: Flow, deadline: float) -> str:
        """The user's PIN POST, retried until our page answers: success | fail (redirect) or page."""
        assert flow.payment_url is not None
        last = ""
        form: dict[str, str] = {}  # the page's form (its token), once the page has been shown
        while time.monotonic() < deadline:
            try:
                if not form:  # the page first, as the user's browser shows it: its form carries the token
                    response = await self.user.get(flow.payment_url)
                    form = form_fields(response.text) if response.status_code == 200 else {}
                    if response.status_code == 200 and not form and "<h1>We are busy</h1>" not in response.text:
                        return _page_outcome(response.text)  # no form: the payment is final already
                if form:
                    response = await self.user.post(flow.payment_url, data={"code": PIN, **form})
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            else:
                # Every post is answered 303 back to the page (a notice in its query): "busy" means try
                # again; else the page shown now is the result page (Continue to status=…) or the form
                # again after a wrong code.
                location = response.headers.get("location", "")
                if response.status_code == 303 and "notice=busy" not in location:
                    try:
                        shown = await self.user.get(httpx.URL(flow.payment_url).join(location))
                    except httpx.HTTPError as exc:
                        last = f"result page: {type(exc).__name__}"
                    else:
                        if shown.status_code == 200 and "<h1>We are busy</h1>" not in shown.text:
                            return _page_outcome(shown.text)
                        last = f"result page: HTTP {shown.status_code}"
                else:
                    last = f"HTTP {response.status_code} {location}"
            self.stats.pin_retries += 1
            await asyncio.sleep(random.uniform(0.3, 0.8))
        raise FlowError(f"PIN POST never answered before the flow's deadline (last: {last})")

    async def _final(self, flow: Flow, deadline: float) -> str:
        """inquiryPayment until the payment's result is final."""
        payment_request_id = flow.payment_request_id
        while True:
            inquiry = await self._signed("inquiryPayment", lambda: self.driver.inquire(payment_request_id), deadline)
            result = inquiry.payment_result
            if inquiry.result.is_success and result is not None and result.result_status is not ResultStatus.UNKNOWN:
                return _result(result.result_status, result.result_code)
            if time.monotonic() > deadline:
                state = _result(result.result_status, result.result_code) if result else str(inquiry.result.result_code)
                raise FlowError(f"inquiryPayment: still {state} at the flow's deadline")
            await asyncio.sleep(1.0)

    async def _refund(self, flow: Flow, deadline: float) -> str:
        assert flow.refund_request_id is not None and flow.payment_id is not None
        refund = self.driver.refund_request(
            flow.request,
            flow.payment_id,
            flow.refund_request_id,
            Amount(currency=AMOUNT.currency, value=int(AMOUNT.value * REFUND_SHARE)),
        )
        return await self._until_final("refund", lambda: self.driver.refund(refund), deadline)

    async def _cancel(self, flow: Flow, deadline: float) -> str:
        request = flow.request
        return await self._until_final(
            "cancelPayment",
            lambda: self.driver.cancel(request.payment_request_id, request.acquirer_id, request.psp_id),
            deadline,
        )

    async def _until_final(
        self, api: str, call: Callable[[], Awaitable[RefundResponse | CancelPaymentResponse]], deadline: float
    ) -> str:
        """Alipay+ resends the same refund or cancel on U until the answer is final."""
        while True:
            answer = await self._signed(api, call, deadline)
            if answer.result.result_status is not ResultStatus.UNKNOWN:
                return _result(answer.result.result_status, answer.result.result_code)
            if time.monotonic() > deadline:
                raise FlowError(f"{api}: still {answer.result.result_code} at the flow's deadline")
            self.stats.retried_u[api] += 1
            await asyncio.sleep(1.0)


async def killer(
    targets: list[Service], rng: random.Random, interval: tuple[float, float], stop: asyncio.Event, kills: list[Kill]
) -> None:
    """Every ``interval`` seconds (random within it) SIGKILL one of ``targets`` and restart it at once.

    A target found dead that was not killed here (a crash; the checks report it) is restarted too,
    so the load goes on. A restart that fails raises ``StartupError``, which ends the run.
    """
    while True:
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(*interval))
            return
        except TimeoutError:
            pass
        for crashed in (target for target in targets if not target.running):
            await crashed.start()
        target = rng.choice(targets)
        killed_at = time.monotonic()
        await target.kill()
        await target.start()
        kills.append(Kill(target.name, killed_at, time.monotonic() - killed_at))
