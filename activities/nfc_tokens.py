"""The NFC token activities: record a token's owner, give a failed activation's device slot back,
tell the user of a new device. Thin adapters over ``wallet.nfc_tokens``."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from wallet.nfc_tokens import DeviceSlot, NfcTokens, TokenOwnerRecord
from wallet.sms import SmsGateway
from wallet.users import UserStore


class NewDeviceNotice(BaseModel):
    customer_id: str
    device_id: str
    activation_id: str  # the SMS gateway's reference: a retried activity sends the same message


@dataclass(frozen=True)
class NfcTokenActivities:
    tokens: NfcTokens
    users: UserStore
    sms: SmsGateway

    @activity.defn
    def record_token_owner(self, owner: TokenOwnerRecord) -> bool:
        """The activation obtained this token for its customer; False: another customer's already."""
        return self.tokens.record_owner(owner)

    @activity.defn
    def release_device(self, slot: DeviceSlot) -> None:
        """The activation failed: its device no longer counts against the customer's quota."""
        self.tokens.release_device(slot)

    @activity.defn
    def notify_new_device(self, notice: NewDeviceNotice) -> None:
        """Tell the user by SMS that a new phone can pay with their wallet: if it was not them, they
        can act (the device fingerprint's last characters name the phone; no token data)."""
        user = self.users.get(notice.customer_id)
        if user is None:
            raise ApplicationError(f"unknown customer {notice.customer_id}", non_retryable=True)
        self.sms.send(
            user.phone,
            f"A new phone (device …{notice.device_id[-6:]}) can now pay by NFC with your wallet. "
            "Not you? Delete its card in the app or call us.",
            notice.activation_id,
        )
