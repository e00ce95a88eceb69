"""``mpp sandbox pay`` against the embedded stack on free ports: the paymentUrl it prints opens our
verification page for the order's amount; an OTP user's code arrives in the SMS inbox it names;
a refusal or a stack that is not running ends with a message and exit code 1.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from alipayplus import Amount
from api.pages import form_fields
from devstack.sandbox_pay import pay_by_hand
from devstack.stack import DevStack, Ports, dev_stack

pytestmark = pytest.mark.timeout(120)

PIN_USER, OTP_USER, FROZEN_USER = "852-11112222", "852-95303585", "852-33334444"
URL = re.compile(r"^\s+(http://\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    async with dev_stack(var_dir=tmp_path_factory.mktemp("sandbox_pay"), ports=Ports.free(), web_ui=False) as running:
        yield running


def private_key(stack: DevStack) -> Path:
    return stack.settings.mpp_private_key_file.parent / "alipayplus_private.pem"


async def run_command(stack: DevStack, login_id: str, amount: Amount, *, one_click: bool = False) -> tuple[int, str]:
    """The command's implementation, as `mpp sandbox pay` calls it: (exit code, what it printed)."""
    output = io.StringIO()
    console = Console(file=output, width=100, color_system=None)
    code = await pay_by_hand(
        stack.settings, private_key(stack), console, login_id=login_id, amount=amount, one_click=one_click
    )
    return code, output.getvalue()


async def test_the_printed_payment_url_opens_the_verification_page_for_the_amount(stack: DevStack) -> None:
    code, printed = await run_command(stack, PIN_USER, Amount(currency="IDR", value=1234))

    assert code == 0, printed
    urls = URL.findall(printed)
    assert len(urls) == 1 and urls[0].startswith(f"{stack.api_url}/"), printed
    assert "PIN 246810" in printed
    async with httpx.AsyncClient() as browser:
        page = await browser.get(urls[0])
    assert page.status_code == 200
    assert "IDR 12.34" in page.text
    assert 'name="code"' in page.text  # the form that takes the PIN


async def test_an_otp_users_code_arrives_in_the_printed_sms_inbox(stack: DevStack) -> None:
    code, printed = await run_command(stack, OTP_USER, Amount(currency="IDR", value=2500))

    assert code == 0, printed
    payment_url, inbox_url = URL.findall(printed)
    assert inbox_url.startswith(f"{stack.sandbox_url}/sandbox/sms?to=")
    async with httpx.AsyncClient() as browser:
        page = await browser.get(payment_url)
        messages = (await browser.get(inbox_url)).json()
    assert page.status_code == 200 and "IDR 25.00" in page.text
    assert messages and re.match(r"\d{6} is your code to pay IDR 25\.00", messages[-1]["text"])


async def test_one_click_consent_paid_by_hand_notifies_the_printed_agreement(stack: DevStack) -> None:
    code, printed = await run_command(stack, PIN_USER, Amount(currency="IDR", value=700), one_click=True)

    assert code == 0, printed
    agreement = re.search(r"referenceAgreementId (\S+)", printed)
    assert agreement is not None, printed
    (payment_url,) = URL.findall(printed)
    async with httpx.AsyncClient() as browser:  # the person: opens the page, types the PIN it printed
        page = await browser.get(payment_url)
        await browser.post(payment_url, data={"code": "246810", **form_fields(page.text)})
    for _ in range(100):  # the token, issued on payment, reaches the sandbox by authNotify
        if stack.alipayplus.auth_notifications(agreement.group(1)):
            break
        await asyncio.sleep(0.1)
    assert stack.alipayplus.auth_notifications(agreement.group(1)), "no authNotify for the printed agreement"


async def test_a_refused_payer_gets_no_url_and_exit_code_1(stack: DevStack) -> None:
    code, printed = await run_command(stack, FROZEN_USER, Amount(currency="IDR", value=1000))

    assert code == 1
    assert "pay #1 (evaluation) answered F/USER_STATUS_ABNORMAL" in printed
    assert not URL.findall(printed)


async def test_without_a_running_stack_it_says_to_start_one(stack: DevStack) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: the connection is refused
        nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}"
        settings = stack.settings.model_copy(update={"public_base_url": nowhere})
        output = io.StringIO()
        code = await pay_by_hand(settings, private_key(stack), Console(file=output, width=200), login_id=PIN_USER)

    assert code == 1
    assert f"nothing answers at {nowhere}: start the stack with `make dev` first" in output.getvalue()
