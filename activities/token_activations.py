"""Recording tokenActivationNotification (seed 002): once per token, a repeat answered the same.

A short single-row transaction the API runs while Alipay+ waits; the insert's primary key
decides between a first notification, a repeat (same digest: S again) and a conflicting one.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from alipayplus import ResultCode
from alipayplus.nfc import TokenActivationNotificationRequest

from .records import TokenActivation, WalletUser


def record_token_activation(
    engine: Engine, notification: TokenActivationNotificationRequest
) -> tuple[ResultCode, str | None]:
    """``(SUCCESS, None)`` once recorded (also for an identical repeat), else a code and why."""
    wire = notification.to_wire()
    digest = hashlib.sha256(wire).hexdigest()
    with Session(engine) as session:
        if notification.customer_id and session.get(WalletUser, notification.customer_id) is None:
            return ResultCode.PROCESS_FAIL, "customerId: not a customer of this wallet"
        session.add(
            TokenActivation(
                token_reference_id=notification.token_reference_id,
                customer_id=notification.customer_id,
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
            return ResultCode.SUCCESS, None
        except IntegrityError:  # recorded before, maybe by a concurrent delivery of the same notice
            session.rollback()
        stored = session.get(TokenActivation, notification.token_reference_id)
    if stored is not None and stored.notification_digest == digest:
        return ResultCode.SUCCESS, None
    return ResultCode.PROCESS_FAIL, "tokenReferenceId: a different activation is already recorded for this token"
