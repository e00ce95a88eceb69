"""The HTTP API: Alipay+'s signed calls, the wallet app's calls, our payment pages; and, apart,
the operator listener with the Web UI's codec.

The Temporal client, the records engine and the code-identification client are created
once, in the lifespan; the API does not start unless Alipay+'s server SDK initialises.
Every request body is bounded before it is read (``api.limits``). The codec is not on the
public app: ``create_ops_app`` serves it on its own port, behind the operator's token.
``/`` on each is a landing page; the docs (``/docs``, ``/redoc``) load their assets from the
``fastapi-offline`` wheel, never from a CDN (``api.routers.home``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import cast

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from temporalio.client import Client

from wallet.agreements import Agreements
from wallet.clients import alipayplus_client, mastercard_client
from wallet.db import create_engine_for, database_answers
from wallet.delivery_log import DeliveryLog
from wallet.ledger import Ledger
from wallet.nfc_proxy import NfcProxy
from wallet.nfc_tokens import NfcTokens
from wallet.oauth import AppSessions, Authorizations, TokenLifetimes
from wallet.payments import Payers
from wallet.risk_challenges import RiskChallenges
from wallet.settings import Settings
from wallet.sms import HttpSmsGateway
from wallet.telemetry.metrics import OLDEST_UNDELIVERED
from wallet.telemetry.tracing import scrub_http_attributes, tracing_enabled
from wallet.temporal import connect
from wallet.users import UserStore

from .code_identification import CodeIdentification
from .limits import BoundedRequests, document_refusals
from .monitoring import Check, HttpMetrics
from .operators import OperatorToken
from .routers import (
    authorizations,
    codec,
    consent,
    deliveries,
    home,
    mpm,
    nfc,
    ops,
    payments,
    refunds,
    risk,
    tokens,
    verification,
    wallet_app,
)
from .services import Services

APS_PREFIX = "/aps/"
NFC_PROXY_PATH = "/app/v1/nfc/proxy"


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
            watch_undelivered(DeliveryLog(records))
            credentials = settings.credentials(records)
            app.state.services = Services(
                settings=settings,
                temporal=temporal or await connect(settings),
                records=records,
                sessions=AppSessions(records, credentials, settings.app_session_ttl),
                credentials=credentials,
                authorizations=Authorizations(
                    records,
                    settings.secret_key,
                    TokenLifetimes(
                        auth_code=settings.auth_code_ttl,
                        access_token=settings.mpm_access_token_ttl,
                        refresh_token=settings.mpm_refresh_token_ttl,
                    ),
                    agreement_lifetimes=TokenLifetimes(
                        auth_code=settings.auth_code_ttl,
                        access_token=settings.access_token_ttl,
                        refresh_token=settings.refresh_token_ttl,
                    ),
                ),
                agreements=Agreements(
                    records,
                    settings.secret_key,
                    consent_page_url=f"{settings.public_base_url}/agreements/consent",
                    auth_code_ttl=settings.auth_code_ttl,
                ),
                codes=codes,
                nfc_proxy=NfcProxy(to_alipayplus, to_mastercard),
                nfc_tokens=NfcTokens(records, settings.nfc_max_devices),
                payers=Payers(UserStore(records), Ledger(records), Agreements(records, settings.secret_key)),
                risk_challenges=RiskChallenges(
                    records,
                    settings.secret_key,
                    HttpSmsGateway(settings.sms_gateway_url, httpx.Client(timeout=5.0)),
                    UserStore(records),
                    credentials,
                    settings.otp_ttl,
                    settings.risk_otp_daily_limit,
                    settings.risk_otp_resend_gap,
                    attempts_per_code=settings.verification_attempts,
                ),
            )
            yield
            records.dispose()

    openapi_url = "/openapi.json" if settings.openapi_enabled else None
    # FastAPI's own docs load Swagger UI and ReDoc from a CDN: off; ours serve the wheel's copy.
    app = FastAPI(title="MPP wallet API", lifespan=lifespan, openapi_url=openapi_url, docs_url=None, redoc_url=None)
    if openapi_url:
        home.add_docs(app, openapi_url)
    app.include_router(home.router)
    app.include_router(payments.router)
    app.include_router(refunds.router)
    app.include_router(authorizations.router)
    app.include_router(risk.router)
    app.include_router(tokens.router)
    app.include_router(verification.router)
    app.include_router(wallet_app.router)
    app.include_router(mpm.router)
    app.include_router(consent.router)
    app.include_router(nfc.router)
    app.include_router(ops.router)
    app.add_middleware(
        BoundedRequests,
        default_limit=settings.max_app_body_bytes,
        limits={APS_PREFIX: settings.max_body_bytes, NFC_PROXY_PATH: settings.nfc_max_proxy_bytes},
        raw_prefixes=[APS_PREFIX],
        max_json_depth=settings.max_json_depth,
    )
    document_refusals(app, raw_prefixes=[APS_PREFIX])
    observe(app, "public")
    return app


def observe(app: FastAPI, listener: str) -> None:
    """Count and time every request of ``app`` (outermost, so refusals count too) and, when tracing
    is on, open a span for each, its URL reduced to the route template."""
    app.add_middleware(HttpMetrics, listener=listener)
    if tracing_enabled():
        FastAPIInstrumentor.instrument_app(
            app, server_request_hook=scrub_http_attributes, excluded_urls="healthz,readyz,metrics"
        )


def watch_undelivered(log: DeliveryLog) -> None:
    """``mpp_oldest_undelivered_notification_age_seconds``, read from the attempts at each scrape of
    the API process (every API replica shows the same value: alert on its max)."""

    def age() -> float:
        since = log.oldest_undelivered_since()
        return 0.0 if since is None else max((datetime.now(UTC) - since).total_seconds(), 0.0)

    OLDEST_UNDELIVERED.set_function(age)


def readiness_checks(app: FastAPI) -> dict[str, Check]:
    """What ``/readyz`` asks of the API process: its lifespan ran (keys read, Alipay+'s server SDK
    initialised, or the API would not have started), Temporal answers, the database answers."""

    def services() -> Services:
        return cast(Services, app.state.services)  # AttributeError until the lifespan has run

    async def started() -> bool:
        return isinstance(getattr(app.state, "services", None), Services)

    async def temporal() -> bool:
        return await services().temporal.service_client.check_health()

    async def database() -> bool:
        return await asyncio.to_thread(database_answers, services().records)

    return {"started": started, "temporal": temporal, "database": database}


def create_ops_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    """The operator listener: the Web UI's codec and the deliveries' view (``/ops/deliveries``), every
    operation behind the operator's token (its landing page ``/``, which only lists them, is open: see
    ``api.routers.home``).

    Raises ``OpsConfigError`` (so the listener does not start) without a usable token file, and
    reads the payload keys now, so a missing key stops start-up too. Its lifespan connects to
    Temporal (unless given ``temporal``) and opens the records, for the deliveries' routes.
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        records = create_engine_for(settings.database_url)
        try:
            client = temporal or await connect(settings)
            app.state.deliveries = deliveries.DeliveryOps.from_settings(settings, client, DeliveryLog(records))
            yield
        finally:
            records.dispose()

    app = FastAPI(title="MPP operator API", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.operator_token = OperatorToken.from_file(settings.ops_token_file, check_mode=settings.key_file_mode_check)
    app.state.payload_codec = settings.payload_codec
    app.include_router(home.ops_router)
    app.include_router(codec.router)
    if settings.ops_token_in_path:
        app.include_router(codec.router_with_token_in_path)
    app.include_router(deliveries.router)
    app.add_middleware(
        BoundedRequests,
        default_limit=settings.ops_max_body_bytes,
        max_json_depth=settings.max_json_depth,
        listener="ops",
    )
    document_refusals(app)
    app.add_middleware(  # outermost, so refusals (401, 413) reach the Web UI readable too
        CORSMiddleware,
        allow_origins=settings.codec_cors_origins,
        allow_methods=["POST"],
        allow_headers=["*"],  # echoed back: Authorization, X-Namespace, Authorization-Extras
        allow_credentials=True,
    )
    observe(app, "ops")
    return app
