"""The signed client's answer deadline: a peer that trickles its answer is no answer.

httpx's timeout bounds each read, so a body sent one byte at a time never trips it; the
client's own deadline bounds the whole call, or the activity around it would hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from alipayplus import (
    KeyRegistry,
    NotifyPaymentRequest,
    NotifyPaymentResponse,
    Result,
    SignedClient,
    Signer,
    TransportError,
    Verifier,
)
from tests.conftest import FIXTURES

CLIENT_ID = "SANDBOX_5YC47N2ZQHJ004124"
NOTICE = NotifyPaymentRequest(payment_result=Result.success(), payment_request_id="2023091819074101000930025674948")
pytestmark = pytest.mark.timeout(20)


def client(transport: httpx.AsyncBaseTransport, timeout: float) -> SignedClient:
    signer = Signer.from_pem(CLIENT_ID, (FIXTURES / "test_mpp_private.pem").read_bytes())
    keys = KeyRegistry()
    keys.add_file(CLIENT_ID, "1", FIXTURES / "test_alipayplus_public.pem")
    return SignedClient(
        "http://alipayplus.test", signer, Verifier(CLIENT_ID, keys), timeout=timeout, transport=transport
    )


async def trickle(body: bytes, every: float) -> AsyncIterator[bytes]:
    for byte in body:
        await asyncio.sleep(every)
        yield bytes([byte])


async def test_an_answer_trickling_past_the_deadline_is_no_answer() -> None:
    body = NotifyPaymentResponse(result=Result.success()).to_wire()  # ~70 bytes at 0.1 s each: ~7 s in all
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=trickle(body, 0.1)))
    started = time.monotonic()
    async with client(transport, timeout=0.5) as mpp:
        with pytest.raises(TransportError, match="no complete answer within 0.5 s"):
            await mpp.call(NotifyPaymentRequest.PATH, NOTICE, NotifyPaymentResponse)
    assert time.monotonic() - started < 2.0  # each byte came well inside httpx's own read timeout


async def test_a_per_call_deadline_overrides_the_clients() -> None:
    body = NotifyPaymentResponse(result=Result.success()).to_wire()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=trickle(body, 0.05)))
    async with client(transport, timeout=10.0) as mpp:
        with pytest.raises(TransportError, match="within 0.3 s"):
            await mpp.call(NotifyPaymentRequest.PATH, NOTICE, NotifyPaymentResponse, timeout=0.3)
