"""A contactless POS terminal (EMV kernel 2 subset) for the sandbox: it taps a card, then asks the
card network to authorize the ARQC.

The exchange is emv-hce.md §3 / §11: SELECT PPSE → choose the application → SELECT AID → GET
PROCESSING OPTIONS with the PDOL data → READ RECORD for every AFL entry → GENERATE AC (ARQC) with
the CDOL1 data the card asked for and a fresh unpredictable number. Every status word and every
mandatory data object is checked; a card that answers anything else gets ``CARD_ERROR``.

Decisions where the spec leaves room:

* **CVM limit** (§9, §10): above ``cvm_required_limit`` the terminal sets "CVM limit exceeded"
  (9F1D byte 2 b8, as ``hce_device.card`` reads it) and relies on the phone's CDCVM; a card without
  on-device CVM (AIP byte 1 b2) is then declined, as this reader does no PIN or signature.
* **Terminal declines** (expired card, no CVM possible) still finish the card's transaction: the
  terminal asks for an AAC (GENERATE AC P1 ``00``), as EMV terminal action analysis does.
* **Outcomes**: ARQC → online authorization → APPROVED / DECLINED; AAC with POSCII "CDCVM required"
  (DF4B byte 2 b1) → SEE_PHONE (the user verifies on the phone and taps again); any other AAC →
  DECLINED. A TC cannot answer an ARQC request, so it is a CARD_ERROR.
* **CVM Results** after on-device CVM are ``01 00 02`` (§10, several implementations); below the
  limit ``1F 03 02`` (no CVM required, successful).

This module runs the tap; ``_terminal_exchange`` holds the APDU exchange with the card and
``_terminal_data`` the configuration and the data objects the terminal sends.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

import httpx

from alipayplus import Amount

from ._terminal_data import MASTERCARD_AID, PosConfig, authorization_for, has_bit, pdol_values, terminal_values
from ._terminal_exchange import ApduExchange, CardError, CardRefused, ContactlessCardLink, Link, generate_ac, read_card
from .authorization import Authorization, AuthorizationDecision, DeclineReason

logger = logging.getLogger(__name__)

# GENERATE AC P1 (emv-hce.md §2): the cryptogram the terminal asks for
REQUEST_ARQC, REQUEST_AAC = 0x80, 0x00
CID_TYPE_MASK = 0xC0
CID_AAC, CID_TC, CID_ARQC = 0x00, 0x40, 0x80

POSCII_CDCVM_REQUIRED = (1, 0x01)  # DF4B byte 2 b1: "PIN/CDCVM required" → See Phone


class TapStatus(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    SEE_PHONE = "SEE_PHONE"  # verify on the phone (CDCVM), then tap again
    CARD_ERROR = "CARD_ERROR"  # the card's answers broke the protocol; try again or another card


class CardNetwork(Protocol):
    """Where the terminal (through its acquirer) sends the authorization: the sandbox Mastercard."""

    async def authorize(self, authorization: Authorization) -> AuthorizationDecision: ...


@dataclass(frozen=True)
class TapOutcome:
    status: TapStatus
    reason: str | None = None
    authorization: Authorization | None = None  # sent to the network (ARQC taps only)
    decision: AuthorizationDecision | None = None
    exchanges: tuple[ApduExchange, ...] = ()  # every APDU of the tap, for logs and tests

    @property
    def approved(self) -> bool:
        return self.status is TapStatus.APPROVED


Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PosTerminal:
    """One terminal; ``tap`` runs a whole transaction against a card on the reader."""

    def __init__(
        self,
        config: PosConfig,
        network: CardNetwork,
        *,
        clock: Clock = _utc_now,
        unpredictable_number: Callable[[], bytes] = lambda: secrets.token_bytes(4),
    ) -> None:
        self.config = config
        self.network = network
        self._clock = clock
        self._unpredictable_number = unpredictable_number

    async def tap(self, card: ContactlessCardLink, amount: Amount) -> TapOutcome:
        if amount.currency != self.config.currency:
            raise ValueError(f"this terminal charges {self.config.currency}, not {amount.currency}")
        if amount.value <= 0:
            raise ValueError("the amount must be above zero")
        limit = self.config.transaction_limit
        if limit is not None and amount.value > limit:
            return TapOutcome(TapStatus.DECLINED, "The amount is above the contactless limit: use another interface")
        link = Link(card)
        now = self._clock().astimezone(self.config.timezone)
        over_cvm_limit = amount.value > self.config.cvm_required_limit
        try:
            card_data = read_card(link, self.config.supported_aids, pdol_values(self.config, over_cvm_limit))
            terminal_data, decline_reason = terminal_values(
                self.config, card_data, amount, now, over_cvm_limit, self._unpredictable_number
            )
            answer = generate_ac(link, card_data, terminal_data, REQUEST_AAC if decline_reason else REQUEST_ARQC)
        except CardRefused as exc:
            return TapOutcome(TapStatus.DECLINED, str(exc), exchanges=tuple(link.exchanges))
        except CardError as exc:
            logger.info("tap failed: %s", exc)
            return TapOutcome(TapStatus.CARD_ERROR, str(exc), exchanges=tuple(link.exchanges))
        exchanges = tuple(link.exchanges)
        cryptogram_type = answer.cid & CID_TYPE_MASK
        if cryptogram_type == CID_AAC:
            if answer.poscii is not None and has_bit(answer.poscii, POSCII_CDCVM_REQUIRED) and decline_reason is None:
                return TapOutcome(TapStatus.SEE_PHONE, "Verify on your phone, then tap again", exchanges=exchanges)
            return TapOutcome(TapStatus.DECLINED, decline_reason or "The card declined", exchanges=exchanges)
        if cryptogram_type != CID_ARQC or decline_reason is not None:
            requested = "an AAC" if decline_reason else "an ARQC"
            reason = f"GENERATE AC: the card answered cryptogram type {answer.cid:02X} to a request for {requested}"
            return TapOutcome(TapStatus.CARD_ERROR, reason, exchanges=exchanges)
        authorization = authorization_for(self.config, card_data, terminal_data, answer, amount, now)
        return await self._go_online(authorization, exchanges)

    async def _go_online(self, authorization: Authorization, exchanges: tuple[ApduExchange, ...]) -> TapOutcome:
        try:
            decision = await self.network.authorize(authorization)
        except Exception as exc:  # no answer from the network is a decline at the counter
            logger.warning("authorization %s got no answer: %s", authorization.retrieval_reference, exc)
            decision = AuthorizationDecision.decline(DeclineReason.ISSUER_UNAVAILABLE, "No answer from the network")
        status = TapStatus.APPROVED if decision.approved else TapStatus.DECLINED
        return TapOutcome(
            status,
            None if decision.approved else decision.message or str(decision.reason),
            authorization=authorization,
            decision=decision,
            exchanges=exchanges,
        )


class HttpCardNetwork:
    """The network over HTTP: the sandbox's local ``POST /sandbox/mastercard/authorizations``."""

    PATH = "/sandbox/mastercard/authorizations"

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0):
        self._client = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)

    async def authorize(self, authorization: Authorization) -> AuthorizationDecision:
        response = await self._client.post(self.PATH, json=authorization.model_dump(mode="json"))
        response.raise_for_status()
        return AuthorizationDecision.model_validate(response.json())

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = [
    "MASTERCARD_AID",
    "ApduExchange",
    "CardError",
    "CardNetwork",
    "ContactlessCardLink",
    "HttpCardNetwork",
    "PosConfig",
    "PosTerminal",
    "TapOutcome",
    "TapStatus",
]
