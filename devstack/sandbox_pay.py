"""``mpp sandbox pay``: open an Easy Pay order on the running dev stack, for a person to pay by hand.

The sandbox Alipay+'s part, as ``devstack.demo`` plays it: pay #1 (evaluation), then pay #2 (the
order), both signed with the sandbox's key; the MPP answers pay #2 U with the paymentUrl of our
verification page, which this prints. No inquiry schedule is started: it would cancel the order
after two minutes, sooner than a newcomer may type the code; the sandbox learns the result from
notifyPayment.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.markup import escape

from alipayplus import Amount, AuthorizationInfo, PayResponse, TransportError
from sandbox.alipayplus.driver import AlipayPlusDriver
from sandbox.alipayplus.peer import SandboxAlipayPlus
from wallet.settings import Settings
from wallet.states import VerificationMethod
from wallet.users import DEMO_USERS, DemoUser

DEFAULT_LOGIN_ID = "852-11112222"  # the demo's PIN user (devstack.demo.PIN_USER)
DEFAULT_AMOUNT = 5000  # minor units: IDR 50.00, the demo's price
DEFAULT_CURRENCY = "IDR"
ONE_CLICK_CLIENT_ID = "2188120040699147"  # the merchant the demo's one-click consent names


class PayByHandError(Exception):
    """Why no paymentUrl can be shown; the message says what to do."""


@dataclass(frozen=True)
class OpenOrder:
    """An Easy Pay order waiting for its user on our verification page."""

    payment_request_id: str
    payment_url: str
    login_id: str
    amount: Amount
    demo_user: DemoUser | None  # None: a login the demo users do not have (the MPP refuses it)
    reference_agreement_id: str | None  # one-click consent: the agreement authNotify will name


def demo_user(login_id: str) -> DemoUser | None:
    return next((user for user in DEMO_USERS if user.login_id == login_id), None)


def sms_inbox_url(sandbox_url: str, phone: str) -> str:
    """The sandbox SMS gateway's inbox for ``phone`` (digits only: a ``+`` in a query is a space)."""
    return f"{sandbox_url}/sandbox/sms?to={''.join(filter(str.isdigit, phone))}"


def _refused(step: str, answer: PayResponse) -> PayByHandError:
    result = answer.result
    return PayByHandError(
        f"{step} answered {result.result_status}/{result.result_code}: {result.result_message or 'no message'}"
    )


async def open_order(
    driver: AlipayPlusDriver, settings: Settings, login_id: str, amount: Amount, *, one_click: bool = False
) -> OpenOrder:
    """Pay #1 then pay #2, as Alipay+ sends them; ``PayByHandError`` when either is refused."""
    run = uuid.uuid4().hex[:12]
    evaluation = driver.easy_pay_evaluation(f"hand{run}e", login_id, amount, settings.psp_id)
    checked = await driver.pay(evaluation)
    if not checked.result.is_success:
        raise _refused("pay #1 (evaluation)", checked)
    payment_request_id = f"hand{run}p"
    agreement = f"hand{run}a" if one_click else None
    order = driver.easy_pay_order(
        payment_request_id,
        login_id,
        amount,
        settings.psp_id,
        redirect_url=f"{settings.alipayplus_base_url}/sandbox/result?paymentRequestId={payment_request_id}",
        authorization=AuthorizationInfo(
            auth_client_id=ONE_CLICK_CLIENT_ID, auth_state=f"authStatus_{run}", reference_agreement_id=agreement
        )
        if agreement
        else None,
    )
    answer = await driver.pay(order)
    if answer.result.is_final or not answer.payment_url:  # an order waiting for its user is U with its page
        raise _refused("pay #2 (order)", answer)
    return OpenOrder(payment_request_id, answer.payment_url, login_id, amount, demo_user(login_id), agreement)


def sandbox_driver(settings: Settings, alipayplus_private_key_file: Path) -> AlipayPlusDriver:
    """The sandbox Alipay+'s driver with the keys the dev stack made; ``PayByHandError`` without them."""
    try:
        peer = SandboxAlipayPlus.from_settings(settings, alipayplus_private_key_file)
    except FileNotFoundError as exc:
        raise PayByHandError(
            f"no key at {exc.filename}: start the stack once with `make dev` (or pass its --var-dir)"
        ) from None
    return AlipayPlusDriver.for_peer(peer, settings.public_base_url)


def print_order(console: Console, order: OpenOrder, settings: Settings) -> None:
    user = order.demo_user
    console.print(f"[green]Easy Pay order open[/] for {escape(order.login_id)}: {order.amount}")
    console.print(f"  paymentRequestId  {order.payment_request_id}")
    if order.reference_agreement_id:
        console.print(f"  one-click consent referenceAgreementId {order.reference_agreement_id} (authNotify follows)")
    console.print("Open this paymentUrl in a browser (it expires in 10 minutes):")
    console.print(f"  {order.payment_url}", soft_wrap=True, highlight=False)  # whole, so it can be copied
    if user is not None and user.verification_method is VerificationMethod.OTP:
        inbox = sms_inbox_url(settings.alipayplus_base_url, user.phone)
        console.print(f"and type the 6-digit code texted to {user.phone}; read it in the sandbox SMS inbox:")
        console.print(f"  {inbox}", soft_wrap=True, highlight=False)
    elif user is not None and user.pin is not None:
        console.print(f"and type the PIN {user.pin}.")
    console.print(
        f"The page then leads on to the sandbox's result page; the Web UI shows pay/{order.payment_request_id}.",
        soft_wrap=True,
        highlight=False,
    )


async def pay_by_hand(
    settings: Settings,
    alipayplus_private_key_file: Path,
    console: Console,
    *,
    login_id: str = DEFAULT_LOGIN_ID,
    amount: Amount | None = None,
    one_click: bool = False,
) -> int:
    """Open an order against the stack ``settings`` describe and print its paymentUrl: the exit code."""
    try:
        async with sandbox_driver(settings, alipayplus_private_key_file) as driver:
            try:
                order = await open_order(
                    driver,
                    settings,
                    login_id,
                    amount or Amount(currency=DEFAULT_CURRENCY, value=DEFAULT_AMOUNT),
                    one_click=one_click,
                )
            except TransportError as exc:
                if isinstance(exc.__cause__, httpx.ConnectError):
                    raise PayByHandError(
                        f"nothing answers at {settings.public_base_url}: start the stack with `make dev` first"
                    ) from None
                raise PayByHandError(f"the MPP gave no usable answer: {exc}") from None
    except PayByHandError as exc:
        console.print(f"[red]no order:[/] {escape(str(exc))}", soft_wrap=True)
        return 1
    print_order(console, order, settings)
    return 0
