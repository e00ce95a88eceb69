"""Workflow payloads rest encrypted; rotated keys stay readable; the Web UI's codec endpoint decrypts."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from temporalio.api.common.v1 import Payload

from wallet.codec import ENCODING, EncryptionCodec

OLD, NEW = bytes(32), bytes(range(32))
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"userLoginId":"852-95303585"}')


async def test_round_trip_hides_the_data() -> None:
    codec = EncryptionCodec({"1": OLD}, "1")
    [sealed] = await codec.encode([PLAIN])
    assert sealed.metadata["encoding"] == ENCODING
    assert b"852-95303585" not in sealed.data
    assert await codec.decode([sealed]) == [PLAIN]


async def test_each_encryption_uses_a_fresh_nonce() -> None:
    codec = EncryptionCodec({"1": OLD}, "1")
    first, second = await codec.encode([PLAIN, PLAIN])
    assert first.data != second.data


async def test_rotated_keys_still_decrypt_older_payloads() -> None:
    [sealed] = await EncryptionCodec({"1": OLD}, "1").encode([PLAIN])
    rotated = EncryptionCodec({"1": OLD, "2": NEW}, "2")
    assert await rotated.decode([sealed]) == [PLAIN]
    assert (await rotated.encode([PLAIN]))[0].metadata["encryption-key-id"] == b"2"


async def test_tampering_and_unknown_keys_fail() -> None:
    codec = EncryptionCodec({"1": OLD}, "1")
    [sealed] = await codec.encode([PLAIN])
    tampered = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(InvalidTag):
        await codec.decode([tampered])
    with pytest.raises(ValueError, match="unknown key"):
        await EncryptionCodec({"2": NEW}, "2").decode([sealed])


async def test_unencrypted_payloads_pass_through() -> None:
    assert await EncryptionCodec({"1": OLD}, "1").decode([PLAIN]) == [PLAIN]
