"""Browser tests: Debian's Chromium, driven by Playwright, on our pages served by the embedded stack.

* ``stack``: the embedded dev stack (``devstack.stack``) on free ports, one for the package, as
  the end-to-end tests start it; ``shop`` creates Easy Pay orders and asks Alipay+'s inquiry where a
  payment ended, as ``make demo`` does (``devstack.demo.Demo``).
* ``browser``: one ``/usr/bin/chromium`` for the package (the ``chromium`` package, which ``make test``
  installs when it is missing); never a browser Playwright downloads. Without it the tests fail and say so.
* ``context`` / ``page``: a fresh phone per test (390x844, touch, a mobile user agent: Android's unless a
  test parametrizes ``user_agent``), with our pages' CSP in force (axe is injected over CDP, which
  CSP does not govern).
* ``shot`` saves a full-page screenshot per step, ``axe`` checks the page (no serious or critical
  violation): both under ``test-artifacts/`` (kept by CI, ignored by git). A failed test's page is
  saved as ``<test>-failed.png`` as well.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright, expect

from devstack.demo import OTP_PHONE, Demo, forget_earlier_runs
from devstack.stack import DevStack, Ports, dev_stack

CHROMIUM = Path("/usr/bin/chromium")
# Chromium's own traffic off (the machines running the tests may have no internet): no QUIC, no
# component or safe-browsing updates, no sync, no first-run pings. --no-sandbox: CI runs as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = ViewportSize(width=390, height=844)
# The wallet app's web views: the MPM page reads the OS from the user agent (``api.routers.mpm``).
ANDROID_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A.240205.004; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/150.0.0.0 Mobile Safari/537.36 MppWallet/1.0"
)
IOS_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 MppWallet/1.0"
)
SERIOUS = frozenset({"serious", "critical"})
AXE = Axe()

expect.set_options(timeout=15_000)  # a page waits on a workflow update: generous on a loaded CI machine


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test, so ``page`` can save a failed test's screen."""
    report = yield
    setattr(item, f"report_{call.when}", report)
    return report


# --- where the artefacts go ------------------------------------------------------------------


@pytest.fixture(scope="session")
def artifacts(request: pytest.FixtureRequest) -> Path:
    root = request.config.rootpath / "test-artifacts"
    for folder in ("screenshots", "axe"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


@pytest.fixture
def test_name(request: pytest.FixtureRequest) -> str:
    """The test, as its artefacts are named: ``easy_pay_page.test_cancel`` (two modules have a test_cancel)."""
    module = Path(str(request.node.path)).stem.removeprefix("test_")
    return _file_name(f"{module}.{request.node.name}")


# --- the stack -------------------------------------------------------------------------------


@pytest.fixture(scope="package")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    async with dev_stack(var_dir=tmp_path_factory.mktemp("browser_stack"), ports=Ports.free(), web_ui=False) as stack:
        yield stack


@pytest.fixture(scope="package")
async def shop(stack: DevStack) -> AsyncIterator[Demo]:
    demo = Demo(stack)
    try:
        yield demo
    finally:
        await demo.aclose()


@pytest.fixture
def unlocked(stack: DevStack) -> None:
    """The demo users' and 127.0.0.1's wrong-code counters cleared: one test's wrong PINs never
    make the next one wait (tests/security/test_guessing.py checks the limits themselves)."""
    forget_earlier_runs(stack)


@dataclass
class OtpPhone:
    """The OTP demo user's phone: each new SMS in the sandbox inbox, read as it arrives."""

    stack: DevStack
    seen: int = 0

    def __post_init__(self) -> None:
        self.seen = len(self.stack.alipayplus.sms(OTP_PHONE))

    async def next_code(self) -> str:
        """The code in the next SMS the phone receives (waits for it)."""
        for _ in range(200):
            messages = self.stack.alipayplus.sms(OTP_PHONE)
            if len(messages) > self.seen:
                self.seen = len(messages)
                code = self.stack.alipayplus.latest_otp(OTP_PHONE)
                assert code, f"the newest SMS to {OTP_PHONE} has no code: {messages[-1].text!r}"
                return code
            await asyncio.sleep(0.05)
        raise AssertionError(f"no new SMS reached {OTP_PHONE}")

    def inbox(self) -> int:
        return len(self.stack.alipayplus.sms(OTP_PHONE))


@pytest.fixture
def otp_phone(stack: DevStack) -> OtpPhone:
    return OtpPhone(stack)


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="package")  # closed before the rest of the suite runs
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. `make test` installs it "
            "(apt-get install --no-install-recommends chromium); Playwright's own browser downloads are not used.",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def user_agent() -> str:
    return ANDROID_UA


@pytest.fixture
async def context(browser: Browser, user_agent: str) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(
        viewport=PHONE,
        screen=PHONE,
        user_agent=user_agent,
        is_mobile=True,
        has_touch=True,
        locale="en-US",
    )
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def page(
    context: BrowserContext, request: pytest.FixtureRequest, artifacts: Path, test_name: str
) -> AsyncIterator[Page]:
    for earlier in (artifacts / "screenshots").glob(f"{test_name}-*.png"):  # an earlier run's, e.g. its failure
        earlier.unlink()
    page = await context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and not page.is_closed():
        path = artifacts / "screenshots" / f"{test_name}-failed.png"
        await page.screenshot(path=path, full_page=True)


class Shot(Protocol):
    def __call__(self, step: str) -> Awaitable[Path]: ...


@pytest.fixture
def shot(page: Page, artifacts: Path, test_name: str) -> Shot:
    """``await shot("step")``: the page as the user sees it now, in ``screenshots/<test>-<step>.png``."""

    async def take(step: str) -> Path:
        path = artifacts / "screenshots" / f"{test_name}-{_file_name(step)}.png"
        await page.screenshot(path=path, full_page=True)
        return path

    return take


class AxeCheck(Protocol):
    def __call__(self, name: str, *, exclude: list[list[str]] | None = None) -> Awaitable[dict[str, Any]]: ...


@pytest.fixture
def axe(page: Page, artifacts: Path) -> AxeCheck:
    """``await axe("page-name")``: axe-core on the page as it is; its results in ``axe/<page-name>.json``;
    fails on any serious or critical violation. ``exclude``: selectors axe leaves out (say why)."""

    async def check(name: str, *, exclude: list[list[str]] | None = None) -> dict[str, Any]:
        context: dict[str, Any] | None = {"exclude": exclude} if exclude else None
        results = await AXE.run(page, context=context)
        report: dict[str, Any] = results.response
        (artifacts / "axe" / f"{_file_name(name)}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        serious = [violation for violation in report["violations"] if violation.get("impact") in SERIOUS]
        assert not serious, f"axe on {name} ({page.url}):\n" + "\n".join(
            f"{v['id']} ({v['impact']}): {v['help']} — {[node['target'] for node in v['nodes']]}" for v in serious
        )
        return report

    return check
