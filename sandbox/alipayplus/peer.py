"""The sandbox Alipay+'s memory: what the MPP sent it, what it should answer next, SMS sent.

Auto Debit adds two things the MPP sends: authNotify AUTHCODE_CREATED and TOKEN_CANCELED (recorded
like TOKEN_CREATED, ``auth_notifications``) and consultUnbinding (recorded, ``consultations``, and
answered as each merchant allows: ``allow_unbinding``, by default yes).

One instance per process; the FastAPI app (``app.py``) is a thin shell over it so tests
can script and inspect it directly as well as over HTTP.
"""

from __future__ import annotations

import re
from collections import deque
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alipayplus import (
    AuthNotifyRequest,
    AuthorizationNotifyType,
    CamelModel,
    ConsultUnbindingRequest,
    KeyRegistry,
    NotifyPaymentRequest,
    Signer,
    Verifier,
)

if TYPE_CHECKING:
    from wallet.settings import Settings

Api = Literal["notifyPayment", "authNotify", "consultUnbinding"]
_OTP = re.compile(r"\s*(\d{6})\b")  # the MPP's SMS text starts with the code


class Behaviour(StrEnum):
    """How the sandbox answers the next call to one API."""

    S = "S"  # SUCCESS
    U = "U"  # UNKNOWN_EXCEPTION
    F = "F"  # PROCESS_FAIL
    SILENT = "SILENT"  # sleep past the MPP's client timeout, then U


class Received(CamelModel):
    """One notifyPayment/authNotify/consultUnbinding as received: the body as sent, and when."""

    body: dict[str, Any]
    received_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {**self.body, "receivedAt": self.received_at.isoformat()}


class Sms(CamelModel):
    to: str
    text: str
    reference: str | None = None
    received_at: datetime | None = None


def _phone_key(phone: str) -> str:
    # Digits only: "+852 9530 3585", "852-95303585" and a query-decoded " 85295303585" match.
    return re.sub(r"\D", "", phone)


class SandboxAlipayPlus:
    """Alipay+ as the MPP meets it: signs with Alipay+'s key, checks the MPP's with the MPP's."""

    def __init__(
        self,
        client_id: str,
        alipayplus_private_key_pem: bytes,
        mpp_public_key_pem: bytes,
        key_version: str = "1",
        silence_seconds: float = 6.0,
        *,
        mpp_key_version: str | None = None,
    ) -> None:
        # The Client-Id is the MPP's in both directions (spec §1.2).
        keys = KeyRegistry()
        keys.add(client_id, mpp_key_version or key_version, mpp_public_key_pem)
        self.signer: Signer = Signer.from_pem(client_id, alipayplus_private_key_pem, key_version)
        self.verifier: Verifier = Verifier(client_id, keys)
        self.silence_seconds: float = silence_seconds
        self._notifications: list[tuple[NotifyPaymentRequest, Received]] = []
        self._auth_notifications: list[tuple[AuthNotifyRequest, Received]] = []
        self._sms: list[Sms] = []
        self._consultations: list[tuple[ConsultUnbindingRequest, Received]] = []
        # consultUnbinding's allowUnbinding by authClientId (None: every other merchant); default yes
        self._unbinding: dict[str | None, bool] = {}
        # keyed by (api, subject): a subject is a paymentRequestId or referenceAgreementId, or
        # None for "any"; scripts for one payment let concurrent scenarios not steal answers
        self._behaviours: dict[tuple[str, str | None], deque[Behaviour]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, alipayplus_private_key_file: Path) -> SandboxAlipayPlus:
        return cls(
            settings.client_id,
            alipayplus_private_key_file.read_bytes(),
            settings.mpp_public_key_file.read_bytes(),
            key_version=settings.alipayplus_key_version,
            mpp_key_version=settings.key_version,
        )

    # --- scripted answers --------------------------------------------------------------

    def script(self, api: Api, answers: list[Behaviour] | list[str], subject: str | None = None) -> None:
        """Queue answers for ``api`` (for one ``subject``, or any); once used up the sandbox answers S.

        A subject is a paymentRequestId (notifyPayment), a referenceAgreementId (authNotify) or an
        authClientId (consultUnbinding, whose S carries ``allows_unbinding``)."""
        self._behaviours.setdefault((api, subject), deque()).extend(Behaviour(answer) for answer in answers)

    def next_behaviour(self, api: Api, subject: str | None = None) -> Behaviour:
        for key in ((api, subject), (api, None)):
            queue = self._behaviours.get(key)
            if queue:
                return queue.popleft()
        return Behaviour.S

    # --- what the MPP sent -------------------------------------------------------------

    def record_notification(self, request: NotifyPaymentRequest, body: dict[str, Any]) -> None:
        self._notifications.append((request, Received(body=body, received_at=_now())))

    def record_auth_notification(self, request: AuthNotifyRequest, body: dict[str, Any]) -> None:
        self._auth_notifications.append((request, Received(body=body, received_at=_now())))

    def notifications(self, payment_request_id: str | None = None) -> list[Received]:
        """notifyPayment calls received, oldest first, every retry included."""
        return [
            received
            for request, received in self._notifications
            if payment_request_id is None or request.payment_request_id == payment_request_id
        ]

    def auth_notifications(
        self,
        reference_agreement_id: str | None = None,
        notify_type: AuthorizationNotifyType | str | None = None,
    ) -> list[Received]:
        """authNotify calls received (TOKEN_CREATED, AUTHCODE_CREATED, TOKEN_CANCELED), oldest first,
        every retry included; of one agreement and/or one type, if given."""
        return [
            received
            for request, received in self._auth_notifications
            if (reference_agreement_id is None or request.reference_agreement_id == reference_agreement_id)
            and (notify_type is None or request.authorization_notify_type == notify_type)
        ]

    def auth_code(self, reference_agreement_id: str) -> str | None:
        """The authCode of the newest AUTHCODE_CREATED for the agreement, as the merchant gets it."""
        notices = self.auth_notifications(reference_agreement_id, AuthorizationNotifyType.AUTHCODE_CREATED)
        code = notices[-1].body.get("authCode") if notices else None
        return str(code) if code else None

    # --- consultUnbinding --------------------------------------------------------------

    def allow_unbinding(self, allow: bool, auth_client_id: str | None = None) -> None:
        """What consultUnbinding answers for ``auth_client_id``'s agreements (or every merchant's)."""
        self._unbinding[auth_client_id] = allow

    def allows_unbinding(self, auth_client_id: str) -> bool:
        return self._unbinding.get(auth_client_id, self._unbinding.get(None, True))

    def record_consultation(self, request: ConsultUnbindingRequest, body: dict[str, Any]) -> None:
        self._consultations.append((request, Received(body=body, received_at=_now())))

    def consultations(self, auth_client_id: str | None = None) -> list[Received]:
        """consultUnbinding calls received, oldest first; of one merchant, if given."""
        return [
            received
            for request, received in self._consultations
            if auth_client_id is None or request.auth_client_id == auth_client_id
        ]

    # --- SMS gateway -------------------------------------------------------------------

    def record_sms(self, to: str, text: str, reference: str | None = None) -> None:
        self._sms.append(Sms(to=to, text=text, reference=reference, received_at=_now()))

    def sms(self, to: str) -> list[Sms]:
        """Messages sent to ``to``, newest last."""
        key = _phone_key(to)
        return [sms for sms in self._sms if _phone_key(sms.to) == key]

    def latest_otp(self, phone: str) -> str | None:
        """The 6-digit code in the newest SMS to ``phone`` (the user reading their phone)."""
        messages = self.sms(phone)
        match = _OTP.match(messages[-1].text) if messages else None
        return match.group(1) if match else None

    def reset(self) -> None:
        self._notifications.clear()
        self._auth_notifications.clear()
        self._sms.clear()
        self._behaviours.clear()
        self._consultations.clear()
        self._unbinding.clear()


def _now() -> datetime:
    return datetime.now(UTC)
