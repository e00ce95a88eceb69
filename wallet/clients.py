"""The HTTP clients every process builds the same way from the settings: the signed Alipay+ client
and Mastercard's digitization service (the NFC SDK proxy's second destination)."""

from __future__ import annotations

import httpx

from alipayplus import SignedClient

from .settings import Settings


def alipayplus_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> SignedClient:
    """The MPP's signed client to Alipay+: our key signs, Alipay+'s key checks the answers."""
    return SignedClient(
        settings.alipayplus_base_url, settings.signer, settings.verifier, timeout=5.0, transport=transport
    )


def mastercard_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """Mastercard's digitization service, for the SDK requests the proxy sends there."""
    return httpx.AsyncClient(base_url=settings.mastercard_base_url, timeout=10.0, transport=transport)
