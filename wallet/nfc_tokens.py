"""Whose an NFC token is, the devices a customer activates on, and the taps (ATCs) already paid.

The activation that obtains a token records its owner (``record_token_owner``, run by the
activation workflow once queryToken approves); every token endpoint, Alipay+'s activation notice
and a tap's pay are checked against that record. Short single-row transactions: conditional
inserts and updates, so a retry or a race never records twice or changes an owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from alipayplus import ResultCode
from alipayplus.nfc import NfcPaymentInfo

from .records import NfcDevice, NfcTap, NfcToken, NfcTokenStatus, utc_now


class TapRefusal(StrEnum):
    """Why a tap's pay is refused by our token records (also the ``mpp_nfc_taps`` outcome)."""

    NOT_THE_PAYERS = "not_the_payers_token"
    TOKEN_UNAVAILABLE = "token_unavailable"  # locked, deleted, not yet active
    REPLAYED = "replayed_atc"


_TAP_CODES = {
    TapRefusal.NOT_THE_PAYERS: ResultCode.RISK_REJECT,
    TapRefusal.TOKEN_UNAVAILABLE: ResultCode.UNAVAILABLE_PAYMENT_METHOD,  # the SDK's 10008 TOKEN UNAVAILABLE
    TapRefusal.REPLAYED: ResultCode.RISK_REJECT,
}


def tap_result_code(refusal: TapRefusal) -> ResultCode:
    """What pay answers for a refused tap."""
    return _TAP_CODES[refusal]


class DeviceSlot(BaseModel):
    customer_id: str
    device_id: str


class TokenOwnerRecord(BaseModel):
    token_reference_id: str
    customer_id: str
    device_id: str | None = None


@dataclass(frozen=True)
class NfcTokens:
    engine: Engine
    max_devices: int = 5  # devices with a live token or an activation, per customer

    def start_device(self, customer_id: str, device_id: str) -> bool:
        """Count ``device_id`` among the customer's devices; False when that would pass the quota
        (a device already counted, or one whose token was deleted, starts again freely)."""
        with self.engine.begin() as connection:
            known = connection.execute(
                select(col(NfcDevice.released_at)).where(
                    col(NfcDevice.customer_id) == customer_id, col(NfcDevice.device_id) == device_id
                )
            ).first()
            if known is not None and known.released_at is None:
                return True
            in_use = connection.execute(
                select(func.count())
                .select_from(NfcDevice)
                .where(col(NfcDevice.customer_id) == customer_id, col(NfcDevice.released_at).is_(None))
            ).scalar_one()
            if in_use >= self.max_devices:
                return False
            if known is None:
                connection.execute(insert(NfcDevice).values(customer_id=customer_id, device_id=device_id))
            else:
                connection.execute(
                    update(NfcDevice)
                    .where(col(NfcDevice.customer_id) == customer_id, col(NfcDevice.device_id) == device_id)
                    .values(released_at=None, started_at=utc_now())
                )
            return True

    def release_device(self, slot: DeviceSlot) -> None:
        """An activation that failed gives its device's slot back (a retry takes it again)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(NfcDevice)
                .where(
                    col(NfcDevice.customer_id) == slot.customer_id,
                    col(NfcDevice.device_id) == slot.device_id,
                    col(NfcDevice.released_at).is_(None),
                )
                .values(released_at=utc_now())
            )

    def release_devices(self, customer_id: str) -> int:
        """Every device of the customer stops counting (the demo forgets its earlier runs' phones)."""
        with self.engine.begin() as connection:
            released = connection.execute(
                update(NfcDevice)
                .where(col(NfcDevice.customer_id) == customer_id, col(NfcDevice.released_at).is_(None))
                .values(released_at=utc_now())
            )
            return released.rowcount

    def record_owner(self, owner: TokenOwnerRecord) -> bool:
        """The token is ``owner.customer_id``'s; False if it is recorded as someone else's."""
        with Session(self.engine) as session:
            session.add(NfcToken(**owner.model_dump()))
            try:
                session.commit()
                return True
            except IntegrityError:  # recorded before: by this activation's retry, or the notice
                session.rollback()
            found = session.get(NfcToken, owner.token_reference_id)
            if found is None or found.customer_id != owner.customer_id:
                return False
            if found.device_id is None and owner.device_id is not None:
                found.device_id = owner.device_id
                session.add(found)
                session.commit()
            return True

    def owner_of(self, token_reference_id: str) -> NfcToken | None:
        with Session(self.engine) as session:
            return session.get(NfcToken, token_reference_id)

    def mirror_status(self, token_reference_id: str, status: NfcTokenStatus) -> None:
        """The token's workflow changed its state: mirror it; a deleted token frees its device's slot."""
        with self.engine.begin() as connection:
            connection.execute(
                update(NfcToken).where(col(NfcToken.token_reference_id) == token_reference_id).values(status=status)
            )
            if status is not NfcTokenStatus.DELETED:
                return
            token = connection.execute(
                select(col(NfcToken.customer_id), col(NfcToken.device_id)).where(
                    col(NfcToken.token_reference_id) == token_reference_id
                )
            ).first()
            if token is not None and token.device_id is not None:
                connection.execute(
                    update(NfcDevice)
                    .where(
                        col(NfcDevice.customer_id) == token.customer_id,
                        col(NfcDevice.device_id) == token.device_id,
                        col(NfcDevice.released_at).is_(None),
                    )
                    .values(released_at=utc_now())
                )

    def tap_refusal(self, tap: NfcPaymentInfo, customer_id: str | None, payment_request_id: str) -> ResultCode | None:
        """Defence in depth for a tap's pay, after the acquirer's own checks: the token must be the
        payer's and usable, and its ATC paid once. None: nothing against it. A token we hold no
        record of (activated before records were kept) is not refused for that alone."""
        refusal = self.tap_check(tap, customer_id, payment_request_id)
        return None if refusal is None else tap_result_code(refusal)

    def tap_check(self, tap: NfcPaymentInfo, customer_id: str | None, payment_request_id: str) -> TapRefusal | None:
        """``tap_refusal``'s reason (what the metrics count), None when nothing is against the tap."""
        token = self.owner_of(tap.token_reference_id)
        if token is not None:
            if token.customer_id != customer_id:
                return TapRefusal.NOT_THE_PAYERS
            if token.status is not NfcTokenStatus.ACTIVE:
                return TapRefusal.TOKEN_UNAVAILABLE
        if tap.atc is not None and not self._claim_atc(tap.token_reference_id, int(tap.atc), payment_request_id):
            return TapRefusal.REPLAYED  # this ATC paid another payment
        return None

    def _claim_atc(self, token_reference_id: str, atc: int, payment_request_id: str) -> bool:
        with Session(self.engine) as session:
            session.add(NfcTap(token_reference_id=token_reference_id, atc=atc, payment_request_id=payment_request_id))
            try:
                session.commit()
                return True
            except IntegrityError:
                session.rollback()
            claimed = session.get(NfcTap, (token_reference_id, atc))
        return claimed is not None and claimed.payment_request_id == payment_request_id  # a retry of the same pay
