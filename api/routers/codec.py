"""The remote codec the Temporal Web UI calls to show operators decrypted payloads.

Served only by the operator listener (``api.main.create_ops_app``, ``mpp api --ops-port``),
never by the public app: it decrypts whatever payload it is sent, and encrypts whatever it is
given. Every route needs the operator's token (``Authorization: Bearer``). The UI posts
``{"payloads": [...]}`` in protobuf JSON; input that is not that, or that does not decrypt,
answers 400 with the reason, never 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload, Payloads

from wallet.codec import EncryptionCodec

from ..operators import require_operator, require_operator_in_path

log = logging.getLogger(__name__)
router = APIRouter(prefix="/codec", tags=["ops"], dependencies=[Depends(require_operator)])
# The same routes with the token as a path segment, for a Web UI that cannot send it as a header
# (the Temporal dev server's UI); only where MPP_OPS_TOKEN_IN_PATH turns it on.
router_with_token_in_path = APIRouter(
    prefix="/codec/{operator_token}", tags=["ops"], dependencies=[Depends(require_operator_in_path)]
)

Convert = Callable[[EncryptionCodec, Sequence[Payload]], Awaitable[list[Payload]]]


def _payloads(body: bytes) -> Payloads:
    if not body.strip():
        raise HTTPException(400, 'empty body: expected {"payloads": [...]} in protobuf JSON')
    try:
        return json_format.Parse(body.decode("utf-8"), Payloads())
    except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f'not {{"payloads": [...]}} in protobuf JSON: {exc}') from None


async def _convert(request: Request, convert: Convert, verb: str) -> Response:
    codec: EncryptionCodec = request.app.state.payload_codec
    payloads = _payloads(await request.body())  # bounded by the listener's BoundedRequests
    converted: list[Payload] = []
    for index, payload in enumerate(payloads.payloads):
        try:
            converted.extend(await convert(codec, [payload]))
        except InvalidTag:
            raise HTTPException(400, f"payloads[{index}]: cannot {verb}: wrong key or tampered data") from None
        except (ValueError, KeyError, UnicodeDecodeError, DecodeError) as exc:
            raise HTTPException(400, f"payloads[{index}]: cannot {verb}: {exc}") from None
    client = request.client.host if request.client else "?"
    log.info(
        "codec: %d payloads %sed for %s (namespace %s)",
        len(converted),
        verb,
        client,
        request.headers.get("x-namespace"),
    )
    return Response(json_format.MessageToJson(Payloads(payloads=converted)), media_type="application/json")


async def decode(request: Request) -> Response:
    return await _convert(request, lambda codec, payloads: codec.decode(payloads), "decrypt")


async def encode(request: Request) -> Response:
    return await _convert(request, lambda codec, payloads: codec.encode(payloads), "encrypt")


# The body is read raw (protobuf JSON, not a pydantic model): described here for the schema's readers.
_PAYLOADS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "payloads": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "metadata": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
                    "data": {"type": "string", "format": "byte"},
                },
            },
        }
    },
}
_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _PAYLOADS_SCHEMA}}},
}
_DETAIL = {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The payloads, decrypted or encrypted",
        "content": {"application/json": {"schema": _PAYLOADS_SCHEMA}},
    },
    400: {"description": "Not payloads in protobuf JSON, or a payload that does not decrypt", "content": _DETAIL},
    401: {"description": "Operator credential required", "content": _DETAIL},
}

for _router in (router, router_with_token_in_path):
    for _path, _endpoint in (("/decode", decode), ("/encode", encode)):
        _router.add_api_route(_path, _endpoint, methods=["POST"], responses=_RESPONSES, openapi_extra=_OPENAPI)
