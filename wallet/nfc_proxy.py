"""The NFC request proxy (spec §4): an SDK request on to Mastercard or, through Alipay+'s
``sdkProxy``, to the Ant server. Payloads pass through unchanged and are never logged.

Used by the activation workflow's activity (``activities.nfc_proxy``) and by the API's proxy endpoint alike.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import httpx
from pydantic import BaseModel
from temporalio.exceptions import (
    ApplicationError,  # a refusal no retry can change: the workflow and the API both read its type
)

from alipayplus import ResultStatus, SignedClient
from alipayplus.nfc import SDK_SUCCESS, SdkProxyRequest, SdkProxyResponse
from alipayplus.nfc_sdk import ReplenishAnswer, SdkData, SdkRequestData, SdkRequestHeader, SdkResponseHeader

from .telemetry.metrics import NFC_CREDENTIALS_REPLENISHED

log = logging.getLogger(__name__)

SDK_VERSION = "1.0.0"
ANT_TIMEOUT_SECONDS = 15.0  # Alipay+ gives sdkProxy 10 s: ours must be longer (spec §4.1)
AnswerT = TypeVar("AnswerT", bound=SdkData)
COUNTED_REQUESTS = 10_000  # replenish request ids remembered, so that a retried one is not counted again


class Destination(StrEnum):
    MASTERCARD = "MASTERCARD"
    ANT = "ANT"


# Seed 000: only the public key comes from Mastercard; everything else goes through the Ant server.
DESTINATIONS: dict[str, Destination] = {
    "getPublicKey": Destination.MASTERCARD,
    "applyNfcToken": Destination.ANT,
    "queryToken": Destination.ANT,
    "provision": Destination.ANT,
    "notifyProvisionResult": Destination.ANT,
    "queryNTUResult": Destination.ANT,
    "replenish": Destination.ANT,
    "lockToken": Destination.ANT,
    "unlockToken": Destination.ANT,
    "deleteToken": Destination.ANT,
}
# The Mastercard paths we forward to; anything else is refused, never forwarded.
MASTERCARD_PATHS: dict[str, str] = {"getPublicKey": "/mdes/digitization/1/0/getPublicKey"}


class ProxyRefused(Exception):
    """A request the proxy will not forward (unknown API, not allow-listed)."""


class SdkCall(BaseModel):
    """One SDK request, as the SDK emits it: a header and a data string, both opaque JSON."""

    customer_id: str
    sdk_request_header: str
    sdk_request_data: str = ""

    @classmethod
    def of(cls, customer_id: str, data: SdkRequestData, request_id: str | None = None) -> SdkCall:
        """The SDK's request ``data`` (its ``API`` in the header), as the SDK writes it (``json.dumps``)."""
        header = SdkRequestHeader(api=data.API, request_id=request_id or uuid.uuid4().hex, sdk_version=SDK_VERSION)
        return cls(
            customer_id=customer_id,
            sdk_request_header=json.dumps(header.model_dump(exclude_none=True)),
            sdk_request_data=json.dumps(data.model_dump(mode="json", exclude_none=True)),
        )

    @property
    def api(self) -> str:
        try:
            header = json.loads(self.sdk_request_header)
        except ValueError:
            raise ProxyRefused("sdkRequestHeader: not JSON") from None
        api = header.get("api") if isinstance(header, dict) else None
        if not isinstance(api, str) or api not in DESTINATIONS:
            raise ProxyRefused(f"sdkRequestHeader.api: {api!r} is not an SDK request we forward")
        return api


class SdkAnswer(BaseModel):
    sdk_response_header: str
    sdk_response_data: str

    @property
    def code(self) -> str:
        return SdkResponseHeader.model_validate_json(self.sdk_response_header).code

    @property
    def succeeded(self) -> bool:
        return self.code == SDK_SUCCESS

    def data(self, answer_type: type[AnswerT]) -> AnswerT:
        """The answer's payload as ``answer_type``; raises ``pydantic.ValidationError`` naming the bad field."""
        return answer_type.model_validate_json(self.sdk_response_data or "{}")


@dataclass
class NfcProxy:
    alipayplus: SignedClient  # signs sdkProxy with our key, checks Alipay+'s answer
    mastercard: httpx.AsyncClient  # base URL of Mastercard's digitization service
    # (customer, requestId) of the replenishes already counted: the Ant server answers a repeat
    # with the same credentials, which are not issued twice
    _counted: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict, init=False, repr=False)

    async def forward(self, call: SdkCall) -> SdkAnswer:
        """Raises ``ProxyRefused`` for what we never forward; upstream failures raise httpx /
        transport errors (retryable) or ``ApplicationError`` for an F answer (not retryable)."""
        api = call.api
        log.info("sdk proxy: %s for %s", api, call.customer_id)  # ids only, never the payload
        if DESTINATIONS[api] is Destination.MASTERCARD:
            return await self._to_mastercard(api, call)
        answer = await self._to_ant(call)
        if api == "replenish":
            self._count_replenished(call, answer)
        return answer

    def _count_replenished(self, call: SdkCall, answer: SdkAnswer) -> None:
        """The single-use credentials a successful replenish issued (how many, never what)."""
        try:
            if not answer.succeeded:
                return
            issued = len(answer.data(ReplenishAnswer).credentials)
            request_id = json.loads(call.sdk_request_header).get("requestId")
        except ValueError:  # not credentials (pydantic's ValidationError is a ValueError): none issued
            return
        if isinstance(request_id, str) and request_id:
            key = (call.customer_id, request_id)
            if key in self._counted:
                return
            self._counted[key] = None
            if len(self._counted) > COUNTED_REQUESTS:
                self._counted.popitem(last=False)
        if issued:
            NFC_CREDENTIALS_REPLENISHED.inc(issued)

    async def _to_ant(self, call: SdkCall) -> SdkAnswer:
        request = SdkProxyRequest(
            customer_id=call.customer_id,
            sdk_request_header=call.sdk_request_header,
            sdk_request_data=call.sdk_request_data,
        )
        answer = await self.alipayplus.call(
            SdkProxyRequest.PATH, request, SdkProxyResponse, timeout=ANT_TIMEOUT_SECONDS
        )
        if not answer.result.is_success or answer.sdk_response_header is None:
            raise ApplicationError(
                f"sdkProxy answered {answer.result.result_status}/{answer.result.result_code}",
                type="SdkProxyRefused",
                non_retryable=answer.result.result_status is not ResultStatus.UNKNOWN,
            )
        return SdkAnswer(
            sdk_response_header=answer.sdk_response_header, sdk_response_data=answer.sdk_response_data or ""
        )

    async def _to_mastercard(self, api: str, call: SdkCall) -> SdkAnswer:
        path = MASTERCARD_PATHS.get(api)
        if path is None:
            raise ProxyRefused(f"{api}: not an allow-listed Mastercard endpoint")
        response = await self.mastercard.post(
            path, content=call.sdk_request_data or "{}", headers={"Content-Type": "application/json"}
        )
        response.raise_for_status()
        header = json.loads(call.sdk_request_header) | {"code": SDK_SUCCESS}
        return SdkAnswer(sdk_response_header=json.dumps(header), sdk_response_data=response.text)
