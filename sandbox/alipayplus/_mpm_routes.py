"""The sandbox MPM over HTTP: the client SDK's endpoints, logos, and the merchant's local pages and controls."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from alipayplus.sdk import (
    CreateSessionRequest,
    CreateSessionResponse,
    DecodeRequest,
    DecodeResponse,
    FetchConfigRequest,
    FetchConfigResponse,
)
from sandbox._http import answer_sdk_call, local_only

from ._mpm_merchants import ACCEPTANCE_MARKS, NoExchangeRate, SandboxStore, logo_slug
from ._mpm_records import OrderCodeRequest

if TYPE_CHECKING:  # only annotated here; importing it at run time would be a cycle (mpm re-exports mpm_router)
    from .mpm import SandboxMpm


def mpm_router(mpm: SandboxMpm) -> APIRouter:
    """The client SDK's endpoints, the Alipay+ URL, logos, and the merchant's local controls."""
    router = APIRouter()

    @router.post(FetchConfigRequest.PATH)
    async def fetch_config(request: Request) -> Response:
        return await answer_sdk_call(
            request, FetchConfigRequest, mpm.fetch_config, lambda result: FetchConfigResponse(result=result)
        )

    @router.post(CreateSessionRequest.PATH)
    async def create_session(request: Request) -> Response:
        return await answer_sdk_call(
            request, CreateSessionRequest, mpm.create_session, lambda result: CreateSessionResponse(result=result)
        )

    @router.post(DecodeRequest.PATH)
    async def decode(request: Request) -> Response:
        return await answer_sdk_call(request, DecodeRequest, mpm.decode, lambda result: DecodeResponse(result=result))

    @router.get("/aplus/decode", response_class=HTMLResponse)
    async def alipayplus_url(codeValue: str = "") -> HTMLResponse:  # noqa: N803
        """Only a browser gets here: in the wallet the client SDK intercepts this address."""
        return _page(
            "Alipay+",
            "<p>Open this page in an Alipay+ wallet to pay.</p>"
            f"<p>Code: <code id=codeValue>{html.escape(codeValue)}</code></p>",
        )

    @router.get("/sandbox/logos/{slug}.svg")
    async def logo(slug: str) -> Response:
        names = {logo_slug(name): name for names in ACCEPTANCE_MARKS.values() for name in names}
        if slug not in names:
            raise HTTPException(status_code=404, detail="no such logo")
        return Response(content=_logo_svg(names[slug]), media_type="image/svg+xml")

    @router.get("/sandbox/mpm/payments", dependencies=[Depends(local_only)])
    async def payments(paymentRequestId: str | None = None) -> list[dict[str, Any]]:  # noqa: N803
        return [exchange.as_json() for exchange in mpm.payments(paymentRequestId)]

    router.include_router(_merchant_router(mpm))
    return router


def _merchant_router(mpm: SandboxMpm) -> APIRouter:
    router = APIRouter(prefix="/sandbox/merchant", dependencies=[Depends(local_only)])

    def store_or_404(store_id: str) -> SandboxStore:
        store = mpm.stores.get(store_id)
        if store is None:
            raise HTTPException(status_code=404, detail=f"no sandbox store {store_id!r}")
        return store

    @router.post("/orderCodes")
    async def create_order_code(body: OrderCodeRequest) -> dict[str, str]:
        store = store_or_404(body.store_id) if body.store_id else None
        try:
            order_code = mpm.create_order_code(
                body.amount,
                body.description,
                store=store,
                code_expires_in=timedelta(seconds=body.code_expires_in_seconds),
                payment_expires_in=timedelta(seconds=body.payment_expires_in_seconds),
                redirect_url=body.redirect_url,
            )
        except NoExchangeRate as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return {"codeValue": order_code.code_value, "referenceOrderId": order_code.reference_order_id}

    @router.get("/entryCodes")
    async def entry_codes() -> list[dict[str, str]]:
        return [
            {"codeValue": mpm.entry_code(store), "storeId": store.store_id, "currency": store.currency}
            for store in mpm.stores.values()
        ]

    @router.get("/cashier/{store_id}", response_class=HTMLResponse)
    async def cashier_page(store_id: str) -> HTMLResponse:
        return _cashier_page(store_or_404(store_id))

    @router.post("/cashier/{store_id}", response_model=None)
    async def cashier_pay(store_id: str, amount: str = Form("")) -> Response:
        store = store_or_404(store_id)
        try:
            order_code = mpm.cashier_order(store, amount)
        except ValueError as exc:  # an amount to fix, or no rate to quote it (NoExchangeRate)
            return _cashier_page(store, str(exc), status_code=422)
        return RedirectResponse(mpm.alipayplus_url(order_code.code_value), status_code=302)

    @router.get("/result", response_class=HTMLResponse)
    async def result_page(referenceOrderId: str = "") -> HTMLResponse:  # noqa: N803
        """The merchant's WAP result page the wallet sends the user back to (seed 003, step 7)."""
        order_code = mpm.order_by_reference(referenceOrderId)
        if order_code is None:
            return _page("Order not found", "<p id=status>unknown</p>", status_code=404)
        order = order_code.order
        return _page(
            f"{html.escape(order.order_description)}",
            f"<p>Order <code id=referenceOrderId>{html.escape(order.reference_order_id)}</code>: "
            f"<span id=amount>{html.escape(str(order.order_amount))}</span></p>"
            f"<p>Payment: <strong id=status>{mpm.order_status(order_code)}</strong></p>",
        )

    return router


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status_code,
    )


def _cashier_page(store: SandboxStore, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    problem = f"<p id=error role=alert>{html.escape(error)}</p>" if error else ""
    return _page(
        store.name,
        f'{problem}<form id=cashier method=post action="/sandbox/merchant/cashier/{html.escape(store.store_id)}">'
        f"<label>Amount ({store.currency}) <input name=amount inputmode=decimal required autofocus></label> "
        "<button type=submit>Pay with Alipay+</button></form>",
        status_code,
    )


def _logo_svg(name: str) -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="160" height="48" viewBox="0 0 160 48">'
        '<rect width="160" height="48" rx="8" fill="#1677ff"/>'
        '<text x="80" y="30" font-family="sans-serif" font-size="16" fill="#fff" text-anchor="middle">'
        f"{html.escape(name)}</text></svg>"
    )
