"""``make bench-nfc``: NFC token activation, end to end on the embedded stack.

Each activation is a new phone (``hce_device.nfc_sdk.AlipayPlusNfcSdk`` with an in-memory secure
store) of the PIN user 852-11112222: login, then ``apply`` (confirmed with the wallet PIN) until
status 2 — the activation workflow's 11 steps (public key from the sandbox Mastercard;
applyNfcToken, queryToken, provision, notifyProvisionResult, queryNTUResult and replenish through
our proxy and Alipay+'s signed sdkProxy to the sandbox Ant server) and the phone's three device steps.

The sandbox approves at the first queryToken and reports the NTU at the first queryNTUResult,
so no poll waits for an interval: the figures are the machinery's cost, not Mastercard's. The
server's poll interval is the dev stack's (printed); the phone reads its progress every 0.2 s,
which bounds how soon it sees each device step. Printed: the wall time of single activations
one after another, and activations per second with 10 phones at once. Exits non-zero if any
activation did not reach status 2.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from devstack.demo.nfc import APDU_SERVICE, PIN, PIN_USER, Fingerprint, WalletPin
from devstack.stack import DevStack, Ports, dev_stack
from hce_device.nfc_sdk import AlipayPlusNfcSdk, NfcDevice, TokenStatus
from hce_device.secure_store import DeviceKeystore, SecureStore
from workers.cli import _exit

SINGLE_RUNS = 5
CONCURRENT_PHONES = 10
CONCURRENT_ROUNDS = 3
PHONE_POLL_SECONDS = 0.2


async def activate(stack: DevStack, http: httpx.AsyncClient) -> float:
    """One new phone activated to status 2; its wall time in seconds (login included)."""
    started = time.perf_counter()
    login = await http.post(f"{stack.api_url}/app/v1/login", json={"loginId": PIN_USER, "pin": PIN})
    login.raise_for_status()
    sdk = AlipayPlusNfcSdk(
        stack.api_url,
        device=NfcDevice(nfc_enabled=True, default_payment_app=True, online=True),
        fingerprint_service=Fingerprint(),
        store=SecureStore(DeviceKeystore()),
        pin_pad=WalletPin(),  # the manual activation is confirmed with the wallet PIN
        poll_interval=PHONE_POLL_SECONDS,
    )
    try:
        sdk.init()
        sdk.connect(login.json()["sessionToken"])
        result = await sdk.apply_card(1, APDU_SERVICE)
    finally:
        await sdk.aclose()
    if result.status != TokenStatus.PAYMENT_ALLOWED:
        raise RuntimeError(f"activation ended at status {result.status}: {result.failure}")
    return time.perf_counter() - started


async def run(console: Console) -> int:
    with tempfile.TemporaryDirectory(prefix="mpp-bench-nfc-") as var_dir:
        console.print("Starting the embedded stack (Temporal dev server, worker, API, sandbox peers) …")
        async with dev_stack(Path(var_dir), Ports.free(), web_ui=False) as stack, httpx.AsyncClient() as http:
            stack.ant_nfc.approve_after_polls = 0  # approved at the first queryToken
            stack.ant_nfc.ntu_after_polls = 0  # NTU reported at the first queryNTUResult
            await activate(stack, http)  # warm-up: connections, worker caches
            singles = [await activate(stack, http) for _ in range(SINGLE_RUNS)]
            started = time.perf_counter()
            concurrent: list[float] = []
            for _ in range(CONCURRENT_ROUNDS):
                concurrent += await asyncio.gather(*(activate(stack, http) for _ in range(CONCURRENT_PHONES)))
            elapsed = time.perf_counter() - started
            interval = stack.settings.nfc_poll_interval.total_seconds()
    table = Table(title="NFC activation (to status 2), embedded stack")
    for column in ("load", "activations", "p50 s", "max s", "activations/s"):
        table.add_column(column)
    table.add_row(
        "one phone at a time", str(len(singles)), f"{statistics.median(singles):.2f}", f"{max(singles):.2f}", "—"
    )
    table.add_row(
        f"{CONCURRENT_PHONES} phones at once",
        str(len(concurrent)),
        f"{statistics.median(concurrent):.2f}",
        f"{max(concurrent):.2f}",
        f"{len(concurrent) / elapsed:.1f}",
    )
    console.print(table)
    console.print(
        f"Server poll interval {interval:.1f} s (approval and NTU at the first poll); phone progress poll "
        f"{PHONE_POLL_SECONDS} s."
    )
    return 0


async def main() -> int:
    console = Console()
    try:
        return await run(console)
    except Exception:
        console.print_exception()
        return 1


if __name__ == "__main__":
    _exit(main)
