"""Issue 17: ``mpp_nfc_credentials_replenished`` counts the single-use credentials a replenish issued
through the NFC proxy: each credential once, a retried request (the same requestId, which the Ant
server answers with the same credentials) not again, a refused replenish or another API not at all."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from alipayplus import Result, ResultCode
from alipayplus.nfc import SdkProxyResponse
from alipayplus.nfc_sdk import Credential, QueryTokenData, ReplenishAnswer, ReplenishData
from wallet.nfc_proxy import NfcProxy, SdkCall

pytestmark = pytest.mark.timeout(30)


class FakeAnt:
    """Alipay+'s sdkProxy with the Ant server behind it: answers every request with ``code``."""

    def __init__(self, code: str = "SUCCESS", credentials: int = 3) -> None:
        self.code, self.credentials = code, credentials

    async def call(self, path: str, request: Any, response_type: type, timeout: float) -> SdkProxyResponse:
        header = json.loads(request.sdk_request_header) | {"code": self.code}
        answer = ReplenishAnswer(
            credentials=[Credential(atc=atc, single_use_key="00" * 16) for atc in range(self.credentials)]
        )
        return SdkProxyResponse(
            result=Result.of(ResultCode.SUCCESS),
            sdk_response_header=json.dumps(header),
            sdk_response_data=json.dumps(answer.model_dump(mode="json")),
        )


def replenished() -> float:
    return REGISTRY.get_sample_value("mpp_nfc_credentials_replenished_total") or 0.0


def proxy(ant: FakeAnt) -> NfcProxy:
    return NfcProxy(ant, httpx.AsyncClient())  # type: ignore[arg-type]


async def test_issued_credentials_count_once_per_request() -> None:
    nfc = proxy(FakeAnt(credentials=3))
    before = replenished()
    call = SdkCall.of("metrics-nfc-user", ReplenishData(token_reference_id="tok-1", count=3), request_id="r-1")

    await nfc.forward(call)
    await nfc.forward(call)  # the same requestId again: the same credentials, not issued twice
    await nfc.forward(SdkCall.of("metrics-nfc-user", ReplenishData(token_reference_id="tok-1", count=3)))

    assert replenished() == before + 6


async def test_a_refused_replenish_or_another_api_counts_nothing() -> None:
    before = replenished()

    await proxy(FakeAnt(code="TOKEN_NOT_ACTIVE")).forward(
        SdkCall.of("metrics-nfc-user", ReplenishData(token_reference_id="tok-2", count=3))
    )
    await proxy(FakeAnt()).forward(SdkCall.of("metrics-nfc-user", QueryTokenData(token_request_id="tr-1")))

    assert replenished() == before
