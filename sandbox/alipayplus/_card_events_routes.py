"""The acquirer's card events as local-only HTTP controls under ``/sandbox/card-events``."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from alipayplus import Amount, CamelModel
from sandbox._http import local_only

from ._card_events_rules import ConversionRules
from ._card_events_state import CardEventRefused, CardEventResult, UnknownAuthorization

if TYPE_CHECKING:  # only annotated here; importing it at run time would be a cycle (card_events re-exports the router)
    from .card_events import CardEventConverter


class ReversalEvent(CamelModel):
    authorization_id: str
    amount: Amount | None = None  # None: the whole authorization


class ClearingEvent(CamelModel):
    authorization_id: str
    amount: Amount


class ExpiryEvent(CamelModel):
    authorization_id: str


class MerchantRefundEvent(CamelModel):
    authorization_id: str
    amount: Amount


class UnlinkedRefundEvent(CamelModel):
    token_reference_id: str
    amount: Amount


def _json(model: BaseModel) -> dict[str, Any]:
    body: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return body


async def _answer(event: Awaitable[CardEventResult]) -> dict[str, Any]:
    try:
        return _json(await event)
    except UnknownAuthorization as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except CardEventRefused as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


def card_events_router(converter: CardEventConverter) -> APIRouter:
    """The acquirer's events as local-only controls under ``/sandbox/card-events``, so a demo can
    drive them: 404 for an unknown authorization, 409 for an event its state does not allow."""
    router = APIRouter(prefix="/sandbox/card-events", dependencies=[Depends(local_only)])

    @router.get("")
    async def listing() -> dict[str, Any]:
        return {
            "authorizations": [_json(state) for state in converter.authorizations.values()],
            "events": [_json(result) for result in converter.results],
        }

    @router.post("/reverse")
    async def reverse(body: ReversalEvent) -> dict[str, Any]:
        return await _answer(converter.reverse(body.authorization_id, body.amount))

    @router.post("/clear")
    async def clear(body: ClearingEvent) -> dict[str, Any]:
        return await _answer(converter.clear(body.authorization_id, body.amount))

    @router.post("/expire")
    async def expire(body: ExpiryEvent) -> dict[str, Any]:
        return await _answer(converter.expire(body.authorization_id))

    @router.post("/merchant-refund")
    async def merchant_refund(body: MerchantRefundEvent) -> dict[str, Any]:
        return await _answer(converter.merchant_refund(body.authorization_id, body.amount))

    @router.post("/unlinked-refund")
    async def unlinked_refund(body: UnlinkedRefundEvent) -> dict[str, Any]:
        return await _answer(converter.unlinked_refund(body.token_reference_id, body.amount))

    @router.get("/rules")
    async def rules() -> dict[str, Any]:
        return _json(converter.rules)

    @router.put("/rules")
    async def set_rules(body: ConversionRules) -> dict[str, Any]:
        converter.rules = body
        return _json(body)

    return router
