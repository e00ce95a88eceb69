"""Signatures exactly as Alipay+ specifies them (spec §1.3–1.5)."""

from __future__ import annotations

import pytest

from alipayplus import KeyRegistry, ResultCode, SignatureError, SignatureHeader, Signer, Verifier, content_to_sign, sign
from tests.conftest import FIXTURES

CLIENT_ID = "SANDBOX_5YC47N2ZQHJ004124"
PATH = "/aps/api/v1/payments/pay"
TIME = "2019-05-28T12:12:12+08:00"
BODY = b'{"paymentRequestId":"2023091819074101000930025674948","payToAmount":{"currency":"IDR","value":"50"}}'
# `openssl dgst -sha256 -sign tests/fixtures/test_mpp_private.pem` over the content below,
# Base64, then URL-encoded: an implementation independent of ours.
OPENSSL_SIGNATURE = (
    "mr90Mmbs9pF6QMwJB82mvBoHW8n1a7xLOWHiufDFk%2Bun2Y4IzPWNoKfkwCK3DKQCVBM2D56c3vqzFgBk4MAGvcxN7LHWjmuEJNDMc2n5WHSGB8JDPBFKA7e"
    "VRyTsVQ%2FwAh44U4VxDZXOZLRjnl6B53QQizAwNejydKnzdLJg%2BLeXfEQVX1%2BjdFpw3KRhWyMK%2BTllrFgjvrI8D1gmjQPEF2jhN1zEC7dKH%2BLDVY9"
    "VmFPDpWCLkXS%2BDBvelVLZ%2BW3DxFUXm0NuSDYRAkueOYhMlcvpoKWYgUFKXll4WUYAAYbS7tXqs%2BLnYHPVotD%2FoJneZdPox8Zlrrw3hLnuxP%2Foxg%3D%3D"
)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.from_pem(CLIENT_ID, (FIXTURES / "test_mpp_private.pem").read_bytes())


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    keys = KeyRegistry()
    keys.add_file(CLIENT_ID, "1", FIXTURES / "test_mpp_public.pem")
    return Verifier(CLIENT_ID, keys)


def test_content_to_sign_is_method_path_newline_client_time_body() -> None:
    assert content_to_sign("POST", PATH, CLIENT_ID, TIME, BODY) == (
        b"POST /aps/api/v1/payments/pay\nSANDBOX_5YC47N2ZQHJ004124.2019-05-28T12:12:12+08:00." + BODY
    )


def test_fixed_vector_matches_openssl(signer: Signer) -> None:
    assert sign(signer.private_key, content_to_sign("POST", PATH, CLIENT_ID, TIME, BODY)) == OPENSSL_SIGNATURE


def test_header_round_trip_and_tolerant_parsing() -> None:
    header = SignatureHeader(key_version="1", signature=OPENSSL_SIGNATURE)
    assert str(header) == f"algorithm=RSA256,keyVersion=1,signature={OPENSSL_SIGNATURE}"
    assert SignatureHeader.parse(f"algorithm=RSA256, keyVersion=1, signature={OPENSSL_SIGNATURE}") == header


@pytest.mark.parametrize("response", [False, True])
def test_round_trip(signer: Signer, verifier: Verifier, response: bool) -> None:
    headers = signer.headers(PATH, BODY, time=TIME, response=response)
    verifier.check(PATH, headers, BODY, response=response)  # raises if it does not verify


@pytest.mark.parametrize(
    "tamper,code",
    [
        (lambda h, p, b: (h, p, b.replace(b'"50"', b'"51"')), ResultCode.INVALID_SIGNATURE),
        (lambda h, p, b: (h, p, b + b" "), ResultCode.INVALID_SIGNATURE),  # whitespace matters: raw bytes
        (lambda h, p, b: (h, "/aps/api/v1/payments/refund", b), ResultCode.INVALID_SIGNATURE),
        (lambda h, p, b: ({**h, "Request-Time": "2019-05-28T12:12:13+08:00"}, p, b), ResultCode.INVALID_SIGNATURE),
        (lambda h, p, b: ({**h, "Client-Id": "SANDBOX_OTHER"}, p, b), ResultCode.INVALID_CLIENT),
        (
            lambda h, p, b: ({**h, "Signature": h["Signature"].replace("keyVersion=1", "keyVersion=2")}, p, b),
            ResultCode.KEY_NOT_FOUND,
        ),
        (lambda h, p, b: ({k: v for k, v in h.items() if k != "Signature"}, p, b), ResultCode.INVALID_SIGNATURE),
        (
            lambda h, p, b: ({**h, "Signature": "algorithm=RSA256,keyVersion=1,signature=%%%"}, p, b),
            ResultCode.INVALID_SIGNATURE,
        ),
    ],
    ids=["body", "whitespace", "path", "time", "client-id", "key-version", "missing", "garbage"],
)
def test_tampering_with_any_signed_part_fails(signer: Signer, verifier: Verifier, tamper, code: ResultCode) -> None:  # type: ignore[no-untyped-def]
    headers, path, body = tamper(signer.headers(PATH, BODY, time=TIME), PATH, BODY)
    with pytest.raises(SignatureError) as failure:
        verifier.check(path, headers, body)
    assert failure.value.code is code


def test_a_signature_from_another_key_fails(verifier: Verifier) -> None:
    other = Signer.from_pem(CLIENT_ID, (FIXTURES / "test_alipayplus_private.pem").read_bytes())
    with pytest.raises(SignatureError) as failure:
        verifier.check(PATH, other.headers(PATH, BODY, time=TIME), BODY)
    assert failure.value.code is ResultCode.INVALID_SIGNATURE
