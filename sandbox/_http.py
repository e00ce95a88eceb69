"""HTTP helpers every sandbox peer shares: local-only controls, SDK-style JSON answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from typing import TypeVar

from fastapi import HTTPException, Request, Response
from pydantic import ValidationError

from alipayplus import Message, Result, ResultCode

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


def _sdk_answer(message: Message) -> Response:
    return Response(content=message.to_wire(), status_code=200, media_type="application/json")


def first_error(exc: ValidationError) -> str:
    """``field.path: reason`` for the first problem, as Alipay+'s PARAM_ILLEGAL messages name the field."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"[:256]
