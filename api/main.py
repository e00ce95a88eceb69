"""The HTTP API: Alipay+'s signed calls, the verification page, operations.

The Temporal client and the records engine are created once, in the lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from temporalio.client import Client

from activities.db import create_engine_for
from workers.settings import Settings
from workers.temporal import connect

from .routers import codec, ops, payments, refunds, verification
from .services import Services


def create_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.load_keys()
        records = create_engine_for(settings.database_url)
        app.state.services = Services(settings=settings, temporal=temporal or await connect(settings), records=records)
        yield
        records.dispose()

    app = FastAPI(title="MPP wallet API", lifespan=lifespan)
    app.include_router(payments.router)
    app.include_router(refunds.router)
    app.include_router(verification.router)
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
