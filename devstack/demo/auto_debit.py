"""``make demo``'s Auto Debit scenarios (spec §§2, 7, 8, 9.5): a merchant binds a wallet user, then
charges them with the agreement's access token, no page and no code, the final S or F within pay.

Alipay+ is the sandbox driver (prepare, applyToken, pay with ``isAgreementPayment``, refund,
cancelPayment, cancelToken, sendOtp/verifyOtp); the user is a signed-in wallet user on our consent
page (``sandbox.alipayplus.consent``) and in the app (``/app/v1/agreements``), reading the risk
challenge's code from the sandbox SMS inbox. Each scenario binds its own agreement; they start once
the stack has finished its first payment and run two at a time (``_taking_turns``). Money moved is
read from the ledger, per payment. The consultUnbinding scenario switches the stack's
``consult_unbinding`` setting on for its unbinding (``_consult_unbinding``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from alipayplus import Amount, AuthorizationNotifyType, PayRequest, PayResponse
from sandbox.alipayplus.driver import AUTO_DEBIT_CLIENT_ID
from wallet.ledger import PostingKind
from wallet.records import Account, Entry, Posting
from wallet.states import AccountKind

from .session import PIN, PIN_USER, POOR_USER, PRICE, Demo, Outcome, Scenario, _result, _status

WARM_UP_LIMIT = 20.0  # seconds an Auto Debit scenario waits at most for the stack's first finished payment
AT_ONCE = 2  # Auto Debit scenarios running together
REFUSING_CLIENT_ID = "2188120040699999"  # a merchant that does not let the user unbind from our side
POOR_PHONE = "+85255556666"  # POOR_USER's phone: the risk challenge's SMS goes there


@dataclass(frozen=True)
class Binding:
    """An Auto Debit agreement, bound: what the merchant (through Alipay+) holds, and its ids."""

    reference_agreement_id: str
    agreement_id: str  # ours: the consent page's last path segment
    auth_client_id: str
    access_token: str
    refresh_token: str
    customer_id: str
    login_id: str
    steps: str  # how the binding went, for the bind scenario's state


class BindingFailed(AssertionError):
    pass


async def _after_the_first_orders(demo: Demo) -> None:
    """Until the stack has finished a payment (Alipay+ got its first notifyPayment), at most
    ``WARM_UP_LIMIT`` s."""
    for _ in range(int(WARM_UP_LIMIT / 0.1)):
        if demo.stack.alipayplus.notifications():
            return
        await asyncio.sleep(0.1)


_TURNS: weakref.WeakKeyDictionary[Demo, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _taking_turns(run: Callable[[Demo], Awaitable[Outcome]]) -> Callable[[Demo], Awaitable[Outcome]]:
    """A scenario that starts once the stack has finished its first payment, ``AT_ONCE`` of them at
    a time. Every demo scenario starts together; on a small machine ten bindings more in that
    burst (logins, first workflow tasks) pushed Easy Pay's first answers past Alipay+'s 8 s pay
    deadline. Auto Debit has no deadline of its own at stake here, so it goes second, a few at a time."""

    @functools.wraps(run)
    async def in_turn(demo: Demo) -> Outcome:
        await _after_the_first_orders(demo)
        async with _TURNS.setdefault(demo, asyncio.Semaphore(AT_ONCE)):
            return await run(demo)

    return in_turn


async def _auth_notices(demo: Demo, reference_agreement_id: str, kind: AuthorizationNotifyType) -> int:
    """How many authNotify of ``kind`` the sandbox received for the agreement, once at least one came."""
    for _ in range(150):
        notices = demo.stack.alipayplus.auth_notifications(reference_agreement_id, kind)
        if notices:
            return len(notices)
        await asyncio.sleep(0.1)
    return 0


async def bind(demo: Demo, login_id: str = PIN_USER, auth_client_id: str = AUTO_DEBIT_CLIENT_ID) -> Binding:
    """prepare → the user agrees on our consent page → AUTHCODE_CREATED → applyToken."""
    driver = demo.stack.driver
    reference = demo.new_id("ag")
    redirect_url = f"{demo.stack.sandbox_url}/sandbox/result?referenceAgreementId={reference}"
    prepare = driver.prepare_request(
        reference, redirect_url, auth_client_id=auth_client_id, psp_id=demo.stack.settings.psp_id
    )
    prepared = await driver.prepare(prepare)
    if not prepared.result.is_success or not prepared.auth_url:
        raise BindingFailed(f"prepare {_status(prepared.result)}")
    decision = await driver.follow_consent(prepared.auth_url, login_id, PIN)
    if not decision.agreed or decision.auth_code is None:
        raise BindingFailed(f"consent answered HTTP {decision.status_code}, no authCode")
    notices = await _auth_notices(demo, reference, AuthorizationNotifyType.AUTHCODE_CREATED)
    notified = demo.stack.alipayplus.auth_code(reference)
    if notices == 0 or notified != decision.auth_code:
        raise BindingFailed("AUTHCODE_CREATED did not carry the redirect's authCode")
    token = await driver.apply_token(
        driver.agreement_apply_token(
            auth_code=decision.auth_code, auth_client_id=auth_client_id, psp_id=demo.stack.settings.psp_id
        )
    )
    if not token.result.is_success or not token.access_token or not token.refresh_token or not token.customer_id:
        raise BindingFailed(f"applyToken {_status(token.result)}")
    same_state = decision.auth_state == prepare.auth_state
    steps = (
        f"prepare {_status(prepared.result)} → consent 303{' with authState' if same_state else ''}"
        f" → AUTHCODE_CREATED → applyToken {_status(token.result)}"
    )
    return Binding(
        reference_agreement_id=reference,
        agreement_id=prepared.auth_url.rstrip("/").rsplit("/", 1)[-1],
        auth_client_id=auth_client_id,
        access_token=token.access_token,
        refresh_token=token.refresh_token,
        customer_id=token.customer_id,
        login_id=login_id,
        steps=steps,
    )


def _pay_request(demo: Demo, binding: Binding, *, evaluation: bool = False, value: int | None = None) -> PayRequest:
    amount = PRICE if value is None else PRICE.model_copy(update={"value": value})
    return demo.stack.driver.auto_debit_pay(
        demo.new_id("e" if evaluation else "p"),
        binding.access_token,
        amount,
        psp_id=demo.stack.settings.psp_id,
        evaluation=evaluation,
    )


async def _pay(demo: Demo, binding: Binding, **options: object) -> tuple[PayRequest, PayResponse]:
    request = _pay_request(demo, binding, **options)  # type: ignore[arg-type]
    return request, await demo.stack.driver.pay(request)


def _debited(demo: Demo, payment_request_id: str) -> Amount:
    """What the payment took from its user, from the ledger (its debit's user leg)."""
    query = (
        select(func.coalesce(func.sum(col(Entry.amount)), 0))
        .join(Posting, col(Posting.id) == col(Entry.posting_id))
        .join(Account, col(Account.id) == col(Entry.account_id))
        .where(
            col(Posting.reference) == payment_request_id,
            col(Posting.kind) == PostingKind.PAYMENT_DEBIT,
            col(Account.kind) == AccountKind.USER,
        )
    )
    with demo.records.connect() as connection:
        taken = -int(connection.execute(query).scalar_one())
    return Amount(currency=PRICE.currency, value=max(taken, 0))


def _moved(demo: Demo, payment_request_id: str) -> str:
    return "nothing moved" if demo.postings(payment_request_id) == 0 else "MONEY MOVED"


async def _paid(demo: Demo, binding: Binding) -> tuple[PayRequest, str]:
    """An Auto Debit payment of ``PRICE``, S within the call: (its request, its paymentId)."""
    request, answer = await _pay(demo, binding)
    if not answer.result.is_success or not answer.payment_id:
        raise AssertionError(f"Auto Debit payment {request.payment_request_id} answered {_result(answer)}")
    return request, answer.payment_id


class _App:
    """The user in the wallet app: their agreements, and unbinding one."""

    def __init__(self, demo: Demo) -> None:
        self._demo = demo
        self._http = httpx.AsyncClient(base_url=demo.stack.api_url, timeout=15.0)

    async def login(self, login_id: str) -> None:
        response = await self._http.post("/app/v1/login", json={"loginId": login_id, "pin": PIN})
        response.raise_for_status()
        self._http.headers["Authorization"] = f"Bearer {response.json()['sessionToken']}"

    async def agreement_ids(self) -> set[str]:
        response = await self._http.get("/app/v1/agreements")
        response.raise_for_status()
        return {str(item["agreementId"]) for item in response.json()}

    async def unbind(self, agreement_id: str) -> str:
        response = await self._http.delete(f"/app/v1/agreements/{agreement_id}")
        if response.status_code not in (200, 202):
            return f"HTTP {response.status_code}"
        return str(response.json()["outcome"])

    async def aclose(self) -> None:
        await self._http.aclose()


@contextlib.asynccontextmanager
async def _in_app(demo: Demo, login_id: str) -> AsyncIterator[_App]:
    app = _App(demo)
    try:
        await app.login(login_id)
        yield app
    finally:
        await app.aclose()


_consulting = 0  # scenarios that need the MPP to ask consultUnbinding first, right now


@contextlib.contextmanager
def _consult_unbinding(demo: Demo) -> Iterator[None]:
    """Turn the stack's ``consult_unbinding`` setting on (it is read per unbinding), and back off
    when no scenario needs it. The sandbox allows every other merchant's unbinding, so an unbinding
    that consults meanwhile still ends UNBOUND."""
    global _consulting
    settings = demo.stack.settings
    before = settings.consult_unbinding
    _consulting += 1
    settings.consult_unbinding = True
    try:
        yield
    finally:
        _consulting -= 1
        if _consulting == 0:
            settings.consult_unbinding = before


# --- the scenarios --------------------------------------------------------------------------


async def bind_merchant(demo: Demo) -> Outcome:
    binding = await bind(demo)
    async with _in_app(demo, binding.login_id) as app:
        listed = "listed in the app" if binding.agreement_id in await app.agreement_ids() else "NOT LISTED"
    return Outcome(f"auth/{binding.agreement_id}/AUTHCODE_CREATED", f"{binding.steps}, {listed}")


async def evaluation(demo: Demo) -> Outcome:
    binding = await bind(demo)
    request, answer = await _pay(demo, binding, evaluation=True)
    return Outcome(
        f"none: evaluation {request.payment_request_id}",
        f"{_result(answer)}, {_moved(demo, request.payment_request_id)}",
    )


async def paid_at_once(demo: Demo) -> Outcome:
    binding = await bind(demo)
    request, answer = await _pay(demo, binding)
    await demo.notified(request.payment_request_id)
    return Outcome(
        f"pay/{request.payment_request_id}",
        f"{_result(answer)}, debited {_debited(demo, request.payment_request_id)}, "
        f"inquiry {await demo.inquiry_result(request)}, notified",
    )


async def balance_too_low(demo: Demo) -> Outcome:
    binding = await bind(demo, POOR_USER)
    request, answer = await _pay(demo, binding)
    return Outcome(
        f"pay/{request.payment_request_id}", f"{_result(answer)}, {_moved(demo, request.payment_request_id)}"
    )


async def refunded(demo: Demo) -> Outcome:
    binding = await bind(demo)
    payment = await _paid(demo, binding)
    refund_request_id = demo.new_id("r")
    answer = await demo.refund(payment, PRICE.value, refund_request_id)
    credited = demo.returned(payment[0].payment_request_id)
    return Outcome(f"refund/{refund_request_id}", f"{_result(answer)}, credited {credited}")


async def cancelled(demo: Demo) -> Outcome:
    binding = await bind(demo)
    request, _ = await _paid(demo, binding)
    answer = await demo.cancel(request)
    returned = demo.returned(request.payment_request_id)
    return Outcome(
        f"cancel/{request.payment_request_id}",
        f"{_status(answer)}, returned {returned}, then {await demo.inquiry_result(request)}",
    )


async def token_cancelled(demo: Demo) -> Outcome:
    binding = await bind(demo)
    driver = demo.stack.driver
    answer = await driver.cancel_token(driver.cancel_token_request(binding.access_token, demo.stack.settings.psp_id))
    request, late = await _pay(demo, binding)
    return Outcome(
        f"pay/{request.payment_request_id}",
        f"{_status(answer.result)}, then pay {_result(late)}, {_moved(demo, request.payment_request_id)}",
    )


async def unbound_in_app(demo: Demo) -> Outcome:
    binding = await bind(demo)
    async with _in_app(demo, binding.login_id) as app:
        outcome = await app.unbind(binding.agreement_id)
        gone = "gone from the app" if binding.agreement_id not in await app.agreement_ids() else "STILL LISTED"
    notices = await _auth_notices(demo, binding.reference_agreement_id, AuthorizationNotifyType.TOKEN_CANCELED)
    request, late = await _pay(demo, binding)
    return Outcome(
        f"unbind/{binding.agreement_id}",
        f"{outcome}, {gone}, TOKEN_CANCELED {'received' if notices else 'NOT RECEIVED'}, then pay {_result(late)}",
    )


async def unbinding_refused(demo: Demo) -> Outcome:
    """With consultUnbinding on, the merchant says no: nothing changes, the token still pays."""
    demo.stack.alipayplus.allow_unbinding(False, REFUSING_CLIENT_ID)
    binding = await bind(demo, auth_client_id=REFUSING_CLIENT_ID)
    async with _in_app(demo, binding.login_id) as app:
        with _consult_unbinding(demo):
            outcome = await app.unbind(binding.agreement_id)
        kept = "still listed" if binding.agreement_id in await app.agreement_ids() else "GONE"
    asked = demo.stack.alipayplus.consultations(REFUSING_CLIENT_ID)
    named = any(received.body.get("accessToken") == binding.access_token for received in asked)
    request, answer = await _pay(demo, binding)
    return Outcome(
        f"unbind/{binding.agreement_id}",
        f"consultUnbinding {'named the token' if named else 'DID NOT NAME THE TOKEN'}, {outcome}, {kept},"
        f" then pay {_result(answer)}",
    )


async def risk_challenge(demo: Demo) -> Outcome:
    """sendOtp texts the token's user; a wrong code is refused, the code from the SMS verifies."""
    binding = await bind(demo, POOR_USER)
    driver, psp_id = demo.stack.driver, demo.stack.settings.psp_id
    sent = await driver.send_otp(driver.send_otp_request(binding.access_token, psp_id))
    if not sent.result.is_success or not sent.verify_request_id:
        return Outcome("—", f"sendOtp {_status(sent.result)}")
    code = None
    for _ in range(100):
        code = demo.stack.alipayplus.latest_otp(POOR_PHONE)
        if code:
            break
        await asyncio.sleep(0.05)
    if code is None:
        return Outcome("—", "no SMS reached the user")
    wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
    wrong = await driver.verify_otp(
        driver.verify_otp_request(binding.access_token, sent.verify_request_id, wrong_code, psp_id)
    )
    right = await driver.verify_otp(
        driver.verify_otp_request(binding.access_token, sent.verify_request_id, code, psp_id)
    )
    return Outcome(
        f"none: verifyRequestId {sent.verify_request_id}",
        f"sendOtp {_status(sent.result)}, wrong code {_status(wrong.result)}, SMS code {_status(right.result)}",
    )


def _scenario(name: str, expected: str, run: Callable[[Demo], Awaitable[Outcome]]) -> Scenario:
    return Scenario(name, expected, _taking_turns(run))


AUTO_DEBIT_SCENARIOS = [
    _scenario(
        "Auto Debit: merchant bound",
        "prepare S/SUCCESS → consent 303 with authState → AUTHCODE_CREATED → applyToken S/SUCCESS, listed in the app",
        bind_merchant,
    ),
    _scenario("Auto Debit: evaluation", "S/SUCCESS, nothing moved", evaluation),
    _scenario(
        "Auto Debit: paid within the call", "S/SUCCESS, debited IDR 50.00, inquiry S/SUCCESS, notified", paid_at_once
    ),
    _scenario("Auto Debit: balance too low", "F/USER_BALANCE_NOT_ENOUGH, nothing moved", balance_too_low),
    _scenario("Auto Debit: refund in full", "S/SUCCESS, credited IDR 50.00", refunded),
    _scenario(
        "Auto Debit: cancelPayment after success", "S/SUCCESS, returned IDR 50.00, then F/ORDER_IS_CLOSED", cancelled
    ),
    _scenario(
        "Auto Debit: cancelToken, then pay", "S/SUCCESS, then pay F/INVALID_TOKEN, nothing moved", token_cancelled
    ),
    _scenario(
        "Auto Debit: user unbinds in the app",
        "UNBOUND, gone from the app, TOKEN_CANCELED received, then pay F/INVALID_TOKEN",
        unbound_in_app,
    ),
    _scenario(
        "Auto Debit: unbinding refused (consultUnbinding)",
        "consultUnbinding named the token, REFUSED, still listed, then pay S/SUCCESS",
        unbinding_refused,
    ),
    _scenario(
        "Auto Debit: risk challenge (sendOtp, verifyOtp)",
        "sendOtp S/SUCCESS, wrong code F/USER_PAYMENT_VERIFICATION_FAILED, SMS code S/SUCCESS",
        risk_challenge,
    ),
]
