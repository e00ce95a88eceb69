"""Binding an Auto Debit agreement as Alipay+ and the user do (prepare, consent, applyToken), for the
workflow tests that pay with, or unbind, an agreement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from alipayplus import PrepareRequest, ResultStatus, Scope
from sandbox.alipayplus.driver import ACQUIRER_ID, apply_token_request
from wallet.agreements import Agreements, Consented
from wallet.oauth import Authorizations, TokenLifetimes
from wallet.settings import Settings

AUTH_CLIENT_ID = "2188120040699147"  # the merchant's client, as in seed 004


@dataclass(frozen=True)
class Bound:
    agreement_id: str
    reference_agreement_id: str
    access_token: str
    customer_id: str


def bind(
    engine: Engine,
    settings: Settings,
    customer_id: str,
    *,
    scopes: tuple[Scope, ...] = (Scope.AGREEMENT_PAY,),
    issued_at: datetime | None = None,
) -> Bound:
    """An ACTIVE Auto Debit agreement of ``customer_id``'s: prepare, consent, applyToken (the pair
    issued at ``issued_at``, default now)."""
    agreements = Agreements(engine, settings.secret_key, consent_page_url="http://testserver/agreements")
    reference = f"agr-{uuid.uuid4().hex}"
    prepare = PrepareRequest(
        psp_id=settings.psp_id,
        acquirer_id=ACQUIRER_ID,
        auth_client_id=AUTH_CLIENT_ID,
        auth_client_name="Sandbox Subscriptions",
        reference_merchant_id=AUTH_CLIENT_ID,
        reference_agreement_id=reference,
        auth_redirect_url="https://merchant.example.com/bound",
        scopes=list(scopes),
        auth_state="st",
    )
    prepared = agreements.prepare(prepare)
    assert prepared.result.result_status is ResultStatus.SUCCESS and prepared.auth_url
    agreement_id = prepared.auth_url.rsplit("/", 1)[-1]
    consented = agreements.consent(agreement_id, customer_id)
    assert isinstance(consented, Consented)
    lifetimes = TokenLifetimes(
        auth_code=timedelta(minutes=5),
        access_token=settings.access_token_ttl,
        refresh_token=settings.refresh_token_ttl,
    )
    clock = {"clock": lambda: issued_at} if issued_at is not None else {}
    authorizations = Authorizations(engine, settings.secret_key, lifetimes, **clock)  # type: ignore[arg-type]
    applied = authorizations.apply_token(apply_token_request(auth_code=consented.auth_code, psp_id=settings.psp_id))
    assert applied.result.result_status is ResultStatus.SUCCESS and applied.access_token
    assert applied.customer_id == customer_id
    return Bound(agreement_id, reference, applied.access_token, customer_id)
