"""An in-process ASGI transport that honours httpx's read timeout.

``httpx.ASGITransport`` ignores timeouts (they live in the network layer it bypasses), so a
silent peer would simply make the caller wait. In-process tests of timeouts need this instead.
"""

from __future__ import annotations

import asyncio

import httpx


class TimeoutASGITransport(httpx.ASGITransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read")
        try:
            return await asyncio.wait_for(super().handle_async_request(request), timeout)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {timeout} s", request=request) from None
