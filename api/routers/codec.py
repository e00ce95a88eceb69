"""The remote codec the Temporal Web UI calls to show operators decrypted payloads.

Serve it only where operators reach it (the ops ingress, behind their login): it decrypts
whatever payload it is sent. The UI posts ``{"payloads": [...]}`` in protobuf JSON.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from ..services import ServicesDep

router = APIRouter(prefix="/codec", tags=["ops"])


@router.post("/decode")
async def decode(request: Request, services: ServicesDep) -> Response:
    payloads = json_format.Parse(await request.body(), Payloads())
    decoded = await services.settings.payload_codec.decode(payloads.payloads)
    return Response(json_format.MessageToJson(Payloads(payloads=decoded)), media_type="application/json")


@router.post("/encode")
async def encode(request: Request, services: ServicesDep) -> Response:
    payloads = json_format.Parse(await request.body(), Payloads())
    encoded = await services.settings.payload_codec.encode(payloads.payloads)
    return Response(json_format.MessageToJson(Payloads(payloads=encoded)), media_type="application/json")
