"""Fixtures for the sandbox Alipay+ tests: throwaway keys and the sandbox in process (no ports)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alipayplus import KeyRegistry, SignedClient, Signer, Verifier
from sandbox.alipayplus.app import create_app
from sandbox.alipayplus.peer import SandboxAlipayPlus
from sandbox.alipayplus.transport import TimeoutASGITransport

CLIENT_ID = "SANDBOX_TEST_CLIENT"
ALIPAYPLUS_URL = "http://alipayplus.test"


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes


@dataclass(frozen=True)
class Keys:
    mpp: KeyPair
    alipayplus: KeyPair


def _key_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(
        private_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        public_pem=key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(mpp=_key_pair(), alipayplus=_key_pair())


@pytest.fixture
def peer(keys: Keys) -> SandboxAlipayPlus:
    return SandboxAlipayPlus(CLIENT_ID, keys.alipayplus.private_pem, keys.mpp.public_pem, silence_seconds=1.0)


@pytest.fixture
def mpp_signer(keys: Keys) -> Signer:
    return Signer.from_pem(CLIENT_ID, keys.mpp.private_pem)


@pytest.fixture
def alipayplus_verifier(keys: Keys) -> Verifier:
    """What the MPP uses to check Alipay+'s answers."""
    registry = KeyRegistry()
    registry.add(CLIENT_ID, "1", keys.alipayplus.public_pem)
    return Verifier(CLIENT_ID, registry)


@pytest.fixture
async def http(peer: SandboxAlipayPlus) -> AsyncIterator[httpx.AsyncClient]:
    """Plain HTTP to the sandbox: control endpoints and hand-made (mis)signed requests."""
    async with httpx.AsyncClient(
        base_url=ALIPAYPLUS_URL, transport=TimeoutASGITransport(app=create_app(peer))
    ) as client:
        yield client


@pytest.fixture
async def mpp_client(
    peer: SandboxAlipayPlus, mpp_signer: Signer, alipayplus_verifier: Verifier
) -> AsyncIterator[Callable[..., SignedClient]]:
    """Factory for the MPP's signed client to the sandbox (signer and timeout overridable)."""
    made: list[SignedClient] = []

    def make(signer: Signer | None = None, timeout: float = 5.0) -> SignedClient:
        client = SignedClient(
            ALIPAYPLUS_URL,
            signer or mpp_signer,
            alipayplus_verifier,
            timeout=timeout,
            transport=TimeoutASGITransport(app=create_app(peer)),
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
