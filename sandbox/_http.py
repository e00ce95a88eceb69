"""HTTP helpers every sandbox peer shares: local-only controls, SDK-style JSON answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from typing import TypeVar

from fastapi import HTTPException, Request, Response
from pydantic import ValidationError

from alipayplus import ErrorResponse, Message, Result, ResultCode, SignatureError, Signer, Verifier

RequestT = TypeVar("RequestT", bound=Message)


async def local_only(request: Request) -> None:
    # The controls are unsigned: refuse anyone but this machine.
    host = request.client.host if request.client else ""
    try:
        local = ip_address(host).is_loopback
    except ValueError:
        local = host in ("localhost", "testclient")
    if not local:
        raise HTTPException(status_code=403, detail="sandbox controls are local only")


async def answer_sdk_call(
    request: Request,
    request_type: type[RequestT],
    handle: Callable[[RequestT], Message | Awaitable[Message]],
    failed: Callable[[Result], Message],
) -> Response:
    """One call from an Alipay+ SDK: parse ``request_type``, let ``handle`` answer.

    Plain JSON, no signatures (the SDKs are Ant's libraries, not a signed API), and always HTTP
    200 with ``result``: a body that does not parse gets ``failed(F PARAM_ILLEGAL)`` naming the field.
    """
    try:
        message = request_type.from_wire(await request.body())
    except ValidationError as exc:
        return _sdk_answer(failed(Result.of(ResultCode.PARAM_ILLEGAL, first_error(exc))))
    answer = handle(message)
    return _sdk_answer(answer if isinstance(answer, Message) else await answer)


async def answer_signed_call(
    request: Request,
    signer: Signer,
    verifier: Verifier,
    request_type: type[RequestT],
    handle: Callable[[RequestT, bytes], Awaitable[Message]],
) -> Response:
    """One signed Alipay+ API call: check the caller's signature, parse ``request_type``, sign the answer.

    The signature is checked over the raw body and the path as received (never a re-built one), as
    Alipay+ does; a bad signature or a body that does not parse is answered, signed, with
    ``ErrorResponse`` (INVALID_SIGNATURE & co., or PARAM_ILLEGAL naming the field). ``handle`` gets the
    message and the raw body (for recording it as sent).
    """
    path = request.url.path
    body = await request.body()
    try:
        verifier.check(path, request.headers, body)
    except SignatureError as exc:
        return signed_answer(signer, path, ErrorResponse(result=Result.of(exc.code, exc.message)))
    try:
        message = request_type.from_wire(body)
    except ValidationError as exc:
        return signed_answer(signer, path, ErrorResponse(result=Result.of(ResultCode.PARAM_ILLEGAL, first_error(exc))))
    return signed_answer(signer, path, await handle(message, body))


def signed_answer(signer: Signer, path: str, message: Message) -> Response:
    """``message`` signed with ``signer``; always HTTP 200: Alipay+ reports failures in result, never
    in the status line."""
    body = message.to_wire()
    return Response(content=body, status_code=200, headers=signer.headers(path, body, response=True))


def _sdk_answer(message: Message) -> Response:
    return Response(content=message.to_wire(), status_code=200, media_type="application/json")


def first_error(exc: ValidationError) -> str:
    """``field.path: reason`` for the first problem, as Alipay+'s PARAM_ILLEGAL messages name the field."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"[:256]
