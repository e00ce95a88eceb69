"""What every request handler needs, created once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from temporalio.client import Client

from wallet.agreements import Agreements
from wallet.credentials import Credentials
from wallet.nfc_proxy import NfcProxy
from wallet.nfc_tokens import NfcTokens
from wallet.oauth import AppSessions, Authorizations
from wallet.payments import Payers
from wallet.risk_challenges import RiskChallenges
from wallet.settings import Settings

from .code_identification import CodeIdentification


@dataclass(frozen=True)
class Services:
    settings: Settings
    temporal: Client
    records: Engine  # read-only use: inquiry answers and page lookups
    sessions: AppSessions  # the wallet app's logins
    credentials: Credentials  # typed PINs and OTPs, under the guessing limits
    authorizations: Authorizations  # authCodes and applyToken's token pairs
    agreements: Agreements  # Auto Debit bindings and one-click consents: prepare, tokens, revocation
    codes: CodeIdentification  # scanned codes: ours, Alipay+'s or invalid
    nfc_proxy: NfcProxy  # the phone's SDK requests on to Mastercard and the Ant server
    nfc_tokens: NfcTokens  # whose each token is, and the devices each customer activates on
    payers: Payers  # pay #1: who pays and whether they can, read from the core
    risk_challenges: RiskChallenges  # Auto Debit risk challenge: sendOtp and verifyOtp


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(_services)]


def _client_address(request: Request) -> str | None:
    """The caller's address as the server sees it: behind a reverse proxy, run uvicorn with
    ``--forwarded-allow-ips`` (``FORWARDED_ALLOW_IPS``) so that it is the client's, not the proxy's."""
    return request.client.host if request.client else None


ClientAddress = Annotated[str | None, Depends(_client_address)]  # what guessing limits count per address
