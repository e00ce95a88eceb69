"""Serving Alipay+'s signed calls: size limit, signature, parsing, then a signed answer.

Every answer, failures included, is HTTP 200 with a signed body and ``Response-Time``;
only a body over the limit gets 413 (``api.limits.BoundedRequests`` refuses it before the
body is read; ``read_bounded`` here holds the limit too, should the app be served without it).
Nothing reaches a handler unless its signature verifies over the raw body and the path as
received.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from opentelemetry import trace
from pydantic import ValidationError

from alipayplus import ErrorResponse, Message, Result, ResultCode, SignatureError
from wallet.telemetry.logs import bind_payment_request_id
from wallet.telemetry.metrics import ALIPAYPLUS_RESULTS, SIGNATURE_FAILURES

from .limits import read_bounded
from .services import Services, ServicesDep

log = logging.getLogger(__name__)
RequestT = TypeVar("RequestT", bound=Message)
Handler = Callable[[RequestT, Services], Awaitable[Message]]


class Rejection(Exception):
    """A request refused with a specific result code; answered signed, nothing changed."""

    def __init__(self, code: ResultCode, message: str | None = None) -> None:
        super().__init__(message or code)
        self.result = Result.of(code, message)


def identify(message: object) -> None:
    """Name the call's business ids on the rest of its log lines and on its span: the
    paymentRequestId (refundRequestId, …) of a verified message, never anything else of it."""
    ids = {
        name: value
        for name in ("payment_request_id", "refund_request_id")
        if isinstance(value := getattr(message, name, None), str)
    }
    bind_payment_request_id(ids.get("payment_request_id"))
    span = trace.get_current_span()
    for name, value in ids.items():
        span.set_attribute(f"alipayplus.{name}", value)


def self_contained(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined: in OpenAPI a ``#/$defs/…`` reference is
    resolved against the document's root, where there are none (Swagger UI and ReDoc fail on it)."""
    definitions: dict[str, Any] = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                rest = {key: value for key, value in node.items() if key != "$ref"}
                return inline({**definitions[reference.removeprefix("#/$defs/")], **rest})
            return {key: inline(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


def describe(error: ValidationError) -> str:
    """``paymentAmount.value: must be a string of digits`` — the field Alipay+ got wrong."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    message = first["msg"].removeprefix("Value error, ")
    return f"{field}: {message}"


def signed(services: Services, path: str, message: Message) -> Response:
    body = message.to_wire()
    return Response(content=body, headers=services.settings.signer.headers(path, body, response=True))


def count_result(api: str, message: Message) -> None:
    """One more answer to Alipay+'s ``api`` (the route's path, never the path as received) by its result."""
    result = getattr(message, "result", None)
    if isinstance(result, Result):
        ALIPAYPLUS_RESULTS.labels(
            api=api, result_status=result.result_status.value, result_code=result.result_code
        ).inc()
    else:  # every answer carries a result; should one not, it is still counted
        ALIPAYPLUS_RESULTS.labels(api=api, result_status="none", result_code="none").inc()


def inbound(
    router: APIRouter, path: str, request_type: type[RequestT]
) -> Callable[[Handler[RequestT]], Handler[RequestT]]:
    """Register ``handler`` as the Alipay+ endpoint ``POST path``."""

    def register(handler: Handler[RequestT]) -> Handler[RequestT]:
        async def endpoint(request: Request, services: ServicesDep) -> Response:
            received_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            body = await read_bounded(request, services.settings.max_body_bytes)
            if body is None:
                return Response(status_code=413, content=b"request body too large")
            try:
                services.settings.verifier.check(received_path, request.headers, body)
                message = request_type.from_wire(body, inbound=True)
                identify(message)
                if getattr(message, "psp_id", services.settings.psp_id) != services.settings.psp_id:
                    raise Rejection(ResultCode.PARAM_ILLEGAL, "pspId: is not this MPP's pspId")
                answer = await handler(message, services)
            except SignatureError as exc:
                SIGNATURE_FAILURES.labels(reason=exc.reason.value).inc()
                answer = ErrorResponse(result=Result.of(exc.code, exc.message))
            except ValidationError as exc:
                answer = ErrorResponse(result=Result.of(ResultCode.PARAM_ILLEGAL, describe(exc)))
            except Rejection as exc:
                answer = ErrorResponse(result=exc.result)
            except Exception:  # never a 500 or a stack trace to Alipay+; U makes it retry
                log.exception("%s failed", path)
                answer = ErrorResponse(result=Result.of(ResultCode.UNKNOWN_EXCEPTION))
            response = signed(services, received_path, answer)
            count_result(path, answer)
            return response

        endpoint.__name__ = handler.__name__
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            summary=(handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else None,
            openapi_extra={
                "requestBody": {
                    "content": {
                        "application/json": {"schema": self_contained(request_type.model_json_schema(by_alias=True))}
                    }
                }
            },
        )
        return handler

    return register
