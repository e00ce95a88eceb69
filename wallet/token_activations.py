"""Recording tokenActivationNotification (seed 002): once per token, a repeat answered the same.

A short single-row transaction the API runs while Alipay+ waits; the insert's primary key
decides between a first notification, a repeat (same digest: S again) and a conflicting one.
The token's owner is the customer our activation recorded (``nfc_tokens``): a notice without
``customerId`` takes it from there, one naming someone else is refused, and one for a token no
activation of ours knows must name a customer of ours, who then owns it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from alipayplus import ResultCode
from alipayplus.nfc import TokenActivationNotificationRequest

from .nfc_tokens import NfcTokens, TokenOwnerRecord
from .records import TokenActivation, WalletUser


@dataclass(frozen=True)
class ActivationRecorded:
    result_code: ResultCode
    message: str | None = None
    customer_id: str | None = None  # the token's owner, as the notice named it or our activation recorded


def record_token_activation(engine: Engine, notification: TokenActivationNotificationRequest) -> ActivationRecorded:
    """SUCCESS with the owner once recorded (also for an identical repeat), else a code and why."""
    wire = notification.to_wire()
    digest = hashlib.sha256(wire).hexdigest()
    tokens = NfcTokens(engine)
    owner = tokens.owner_of(notification.token_reference_id)
    customer_id = notification.customer_id or (owner.customer_id if owner else None)
    if customer_id is None:
        return ActivationRecorded(
            ResultCode.PARAM_ILLEGAL, "customerId: missing, and no activation of this wallet knows the token"
        )
    if owner is not None and owner.customer_id != customer_id:
        return ActivationRecorded(ResultCode.PARAM_ILLEGAL, "customerId: not the customer who activated this token")
    with Session(engine) as session:
        if session.get(WalletUser, customer_id) is None:
            return ActivationRecorded(ResultCode.PROCESS_FAIL, "customerId: not a customer of this wallet")
        session.add(
            TokenActivation(
                token_reference_id=notification.token_reference_id,
                customer_id=customer_id,
                wallet_id=notification.wallet_id,
                token_requestor_id=notification.token_requestor_id,
                secure_element_id=notification.secure_element_id,
                account_source=notification.account_source,
                service_request_time=notification.service_request_time,
                token_activated_time=notification.token_activated_time,
                token_data=json.dumps(json.loads(wire)["tokenData"], sort_keys=True),
                notification_digest=digest,
            )
        )
        try:
            session.commit()
        except IntegrityError:  # recorded before, maybe by a concurrent delivery of the same notice
            session.rollback()
            stored = session.get(TokenActivation, notification.token_reference_id)
            if stored is None or stored.notification_digest != digest:
                return ActivationRecorded(
                    ResultCode.PROCESS_FAIL,
                    "tokenReferenceId: a different activation is already recorded for this token",
                )
    if owner is None and not tokens.record_owner(
        TokenOwnerRecord(token_reference_id=notification.token_reference_id, customer_id=customer_id)
    ):  # an activation recorded it for someone else meanwhile
        return ActivationRecorded(ResultCode.PARAM_ILLEGAL, "customerId: not the customer who activated this token")
    return ActivationRecorded(ResultCode.SUCCESS, customer_id=customer_id)
