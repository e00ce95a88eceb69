"""A signed httpx client: signs each request and verifies each response's signature."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import httpx
from pydantic import ValidationError

from ._base import Message
from ._signing import SignatureError, Signer, Verifier

ResponseT = TypeVar("ResponseT", bound=Message)


class TransportError(Exception):
    """No usable answer: network failure, timeout, a slow answer, non-200, or an unparsable body.

    Alipay+ treats all of these as "no result received": retry with the same body.
    """


class SignedClient:
    """Calls a peer's Alipay+ endpoints. The same class serves the MPP and the sandbox Alipay+."""

    def __init__(
        self,
        base_url: str,
        signer: Signer,
        verifier: Verifier,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._signer = signer
        self._verifier = verifier
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def call(
        self, path: str, request: Message, response_type: type[ResponseT], *, timeout: float | None = None
    ) -> ResponseT:
        """One signed call, answered in full within ``timeout`` seconds (the client's by default)."""
        body = request.to_wire()
        deadline = timeout if timeout is not None else self._timeout
        try:
            # httpx's timeout bounds each read, not the whole answer: a peer trickling bytes would
            # hold the call (and the activity around it) open forever without this deadline
            async with asyncio.timeout(deadline):
                response = await self._http.post(
                    path, content=body, headers=self._signer.headers(path, body), timeout=deadline
                )
        except httpx.HTTPError as exc:
            raise TransportError(f"POST {path}: {type(exc).__name__}: {exc}") from exc
        except TimeoutError:
            raise TransportError(f"POST {path}: no complete answer within {deadline} s") from None
        if response.status_code != 200:
            raise TransportError(f"POST {path}: HTTP {response.status_code}")
        try:
            self._verifier.check(path, response.headers, response.content, response=True)
        except SignatureError as exc:
            raise TransportError(f"POST {path}: response {exc.code}: {exc.message}") from exc
        try:
            return response_type.from_wire(response.content)
        except ValidationError as exc:
            raise TransportError(f"POST {path}: unparsable response: {exc}") from exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> SignedClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
