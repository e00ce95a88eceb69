"""What the demo's scenarios share: the ``Demo`` session (the stack, an HTTP client for the user, id
minting, the ledger read back), the demo users and price, and what a scenario is (``Scenario``, the
state it must end in, and the ``Outcome`` it reached).

Every scenario module imports this one; it imports none of them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select, update
from sqlmodel import col

from alipayplus import Amount, PayRequest, PayResponse, RefundResponse, Result
from api.pages import form_fields
from wallet.db import create_engine_for
from wallet.ledger import RETURNS, PostingKind
from wallet.nfc_tokens import NfcTokens
from wallet.records import Account, Entry, Posting, WalletUser
from wallet.states import AccountKind
from wallet.users import DEMO_USERS

from ..stack import DevStack

PIN_USER, OTP_USER, FROZEN_USER, POOR_USER = "852-11112222", "852-95303585", "852-33334444", "852-55556666"
PIN = "246810"
OTP_PHONE = "+85295303585"
PRICE = Amount(currency="IDR", value=5000)


@dataclass
class Outcome:
    workflow_id: str
    state: str


@dataclass(frozen=True)
class Scenario:
    """A demo scenario: a name, the state it must end in, and how to drive it."""

    name: str
    expected: str
    run: Callable[[Demo], Awaitable[Outcome]]


class Demo:
    """What the scenarios share: the stack, an HTTP client for the user, id minting."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        # a browser: every page post is answered 303 back to the page, which it then shows
        self.user = httpx.AsyncClient(timeout=10.0, follow_redirects=True)
        self._run = time.strftime("%Y%m%d%H%M%S")
        # One OTP user, one phone: OTP scenarios take turns so each reads its own code.
        self.otp_phone = asyncio.Lock()
        self._used_otps: set[str] = set()
        self.records = create_engine_for(stack.settings.database_url)

    async def aclose(self) -> None:
        await self.user.aclose()
        self.records.dispose()

    def new_id(self, tag: str) -> str:
        return f"demo{self._run}{tag}{uuid.uuid4().hex[:8]}"

    def order(self, login_id: str, *, amount: Amount = PRICE, **options: object) -> PayRequest:
        request_id = self.new_id("p")
        return self.stack.driver.easy_pay_order(
            request_id,
            login_id,
            amount,
            self.stack.settings.psp_id,
            redirect_url=f"{self.stack.sandbox_url}/sandbox/result?paymentRequestId={request_id}",
            **options,  # type: ignore[arg-type]
        )

    async def evaluate(self, login_id: str) -> Outcome:
        request = self.stack.driver.easy_pay_evaluation(self.new_id("e"), login_id, PRICE, self.stack.settings.psp_id)
        answer = await self.stack.driver.pay(request)
        return Outcome(f"none: pay #1 {request.payment_request_id} is a read the API answers", _result(answer))

    async def create(self, request: PayRequest) -> PayResponse:
        """Alipay+ sends pay #2; on an unknown result it starts its inquiry schedule, as it does."""
        answer = await self.stack.driver.pay(request)
        if not answer.result.is_final:
            await self.stack.inquiries(request)
        return answer

    async def inquiries_settled(self) -> str:
        """Wait for every inquiry schedule (each ends at its first final answer, ≤ 10 s later)."""
        schedules = self.stack.inquiries.schedules.values()
        outcomes = await asyncio.gather(*(schedule.result() for schedule in schedules))
        final = sum(outcome.final for outcome in outcomes)
        return f"{len(outcomes)} inquiry schedules, {final} ended with a final result"

    async def type_code(self, answer: PayResponse, code: str) -> httpx.Response:
        page = await self.user.get(answer.payment_url or "")
        page.raise_for_status()
        return await self.user.post(answer.payment_url or "", data={"code": code, **form_fields(page.text)})

    async def read_otp(self, payment_request_id: str, after: str | None = None) -> str:
        """The user reads the newest code on their phone (a new one, if ``after`` is given)."""
        for _ in range(100):
            code = self.stack.alipayplus.latest_otp(OTP_PHONE)
            if code and code != after and code not in self._used_otps:
                self._used_otps.add(code)
                return code
            await asyncio.sleep(0.05)
        raise AssertionError(f"no new OTP reached {OTP_PHONE} for {payment_request_id}")

    async def final(self, request: PayRequest) -> Outcome:
        """The payment's final state, as Alipay+ learns it by inquiryPayment."""
        for _ in range(200):
            answer = await self.stack.driver.inquire(request.payment_request_id)
            result = answer.payment_result
            if result is not None and result.is_final:
                return Outcome(f"pay/{request.payment_request_id}", f"{result.result_status}/{result.result_code}")
            await asyncio.sleep(0.1)
        return Outcome(f"pay/{request.payment_request_id}", "U/PAYMENT_IN_PROCESS")

    async def paid(self) -> tuple[PayRequest, str]:
        """A PIN payment of ``PRICE``, verified and final: (pay #2's request, its paymentId)."""
        request = self.order(PIN_USER)
        answer = await self.create(request)
        await self.type_code(answer, PIN)
        outcome = await self.final(request)
        if outcome.state != "S/SUCCESS" or not answer.payment_id:
            raise AssertionError(f"payment {request.payment_request_id} ended {outcome.state}")
        return request, answer.payment_id

    async def refund(self, payment: tuple[PayRequest, str], value: int, refund_request_id: str) -> RefundResponse:
        """Alipay+'s refund of ``value`` (minor units, the payment's currency) of a paid payment."""
        request, payment_id = payment
        amount = Amount(currency=request.payment_amount.currency, value=value)
        refund = self.stack.driver.refund_request(request, payment_id, refund_request_id, amount)
        return await self.stack.driver.refund(refund)

    async def cancel(self, request: PayRequest) -> Result:
        answer = await self.stack.driver.cancel(request.payment_request_id, request.acquirer_id, request.psp_id)
        return answer.result

    async def inquiry_result(self, request: PayRequest) -> str:
        answer = await self.stack.driver.inquire(request.payment_request_id, request.acquirer_id, request.psp_id)
        return _status(answer.payment_result) if answer.payment_result else _status(answer.result)

    def returned(self, payment_request_id: str, kinds: Sequence[PostingKind] = RETURNS) -> Amount:
        """What the payment's refunds and reversal gave back to its user, from the ledger (``kinds``
        ``(ADJUST_REFUND,)`` with an adjustRefund's refundRequestId: what that adjustRefund credited)."""
        query = (
            select(func.coalesce(func.sum(col(Entry.amount)), 0))
            .join(Posting, col(Posting.id) == col(Entry.posting_id))
            .join(Account, col(Account.id) == col(Entry.account_id))
            .where(
                col(Posting.reference) == payment_request_id,
                col(Posting.kind).in_(kinds),
                col(Account.kind) == AccountKind.USER,
            )
        )
        with self.records.connect() as connection:
            total = connection.execute(query).scalar_one()
        return Amount(currency=PRICE.currency, value=int(total))

    def postings(self, payment_request_id: str) -> int:
        with self.records.connect() as connection:
            query = select(func.count()).select_from(Posting).where(col(Posting.reference) == payment_request_id)
            return int(connection.execute(query).scalar_one())

    async def notified(self, request_id: str, count: int = 1) -> None:
        for _ in range(300):
            if len(self.stack.alipayplus.notifications(request_id)) >= count:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"notifyPayment for {request_id} arrived fewer than {count} times")


def _status(result: Result) -> str:
    return f"{result.result_status}/{result.result_code}"


def _result(answer: PayResponse | RefundResponse) -> str:
    return _status(answer.result)


def forget_earlier_runs(stack: DevStack) -> None:
    """The demo types wrong codes on purpose, activates new phones and pays many times a day; an
    earlier run's must not make this one wait, pass the device quota or the daily payment count
    (all counted in the database the dev stack keeps; the count limit of a user created by an older
    version is brought to today's)."""
    engine = create_engine_for(stack.settings.database_url)
    credentials = stack.settings.credentials(engine)
    nfc_tokens = NfcTokens(engine, stack.settings.nfc_max_devices)
    for user in DEMO_USERS:
        credentials.unlock(user.customer_id, "demo")
        nfc_tokens.release_devices(user.customer_id)
    credentials.unlock_address("127.0.0.1", "demo")
    with engine.begin() as db:
        for user in DEMO_USERS:
            db.execute(
                update(WalletUser)
                .where(col(WalletUser.customer_id) == user.customer_id)
                .values(daily_payment_count_limit=user.daily_payment_count_limit)
            )
    engine.dispose()
