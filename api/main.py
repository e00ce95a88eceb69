"""The HTTP API: Alipay+'s signed calls, the wallet app's calls, our payment pages, operations.

The Temporal client, the records engine and the code-identification client are created
once, in the lifespan; the API does not start unless Alipay+'s server SDK initialises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from temporalio.client import Client

from activities.db import create_engine_for
from activities.nfc_proxy import NfcProxy
from activities.oauth import AppSessions, Authorizations, TokenLifetimes
from workers.settings import Settings
from workers.temporal import connect
from workers.worker import alipayplus_client, mastercard_client

from .code_identification import CodeIdentification
from .routers import authorizations, codec, mpm, nfc, ops, payments, refunds, tokens, verification, wallet_app
from .services import Services


def create_app(
    settings: Settings | None = None,
    temporal: Client | None = None,
    *,
    code_service_transport: httpx.AsyncBaseTransport | None = None,
    nfc_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.load_keys()
        async with (
            httpx.AsyncClient(timeout=5.0, transport=code_service_transport) as http,
            alipayplus_client(settings, nfc_transport) as to_alipayplus,
            mastercard_client(settings, nfc_transport) as to_mastercard,
        ):
            codes = CodeIdentification(settings, http)
            await codes.init()  # raises, and so stops start-up, unless Alipay+'s server SDK is ready
            records = create_engine_for(settings.database_url)
            app.state.services = Services(
                settings=settings,
                temporal=temporal or await connect(settings),
                records=records,
                sessions=AppSessions(records, settings.secret_key, settings.app_session_ttl),
                authorizations=Authorizations(
                    records,
                    settings.secret_key,
                    TokenLifetimes(
                        auth_code=settings.auth_code_ttl,
                        access_token=settings.mpm_access_token_ttl,
                        refresh_token=settings.mpm_refresh_token_ttl,
                    ),
                ),
                codes=codes,
                nfc_proxy=NfcProxy(to_alipayplus, to_mastercard),
            )
            yield
            records.dispose()

    app = FastAPI(title="MPP wallet API", lifespan=lifespan)
    app.include_router(payments.router)
    app.include_router(refunds.router)
    app.include_router(authorizations.router)
    app.include_router(tokens.router)
    app.include_router(verification.router)
    app.include_router(wallet_app.router)
    app.include_router(mpm.router)
    app.include_router(nfc.router)
    app.include_router(ops.router)
    app.include_router(codec.router)
    app.add_middleware(  # the Web UI calls the codec endpoint from the operator's browser
        CORSMiddleware,
        allow_origins=settings.codec_cors_origins,
        allow_methods=["POST"],
        allow_headers=["*"],
        allow_credentials=True,
    )
    return app
