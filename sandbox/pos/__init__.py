"""The sandbox POS terminal: a contactless reader (EMV kernel 2 subset) that taps an HCE card
(``hce_device.card.ContactlessCard`` or the phone's SDK) and sends the ARQC's authorization to the
card network (``sandbox.nfc.mastercard.SandboxMastercard``)."""

from .authorization import Authorization, AuthorizationDecision, DeclineReason
from .terminal import (
    MASTERCARD_AID,
    ApduExchange,
    CardError,
    CardNetwork,
    ContactlessCardLink,
    HttpCardNetwork,
    PosConfig,
    PosTerminal,
    TapOutcome,
    TapStatus,
)

__all__ = [
    "MASTERCARD_AID",
    "ApduExchange",
    "Authorization",
    "AuthorizationDecision",
    "CardError",
    "CardNetwork",
    "ContactlessCardLink",
    "DeclineReason",
    "HttpCardNetwork",
    "PosConfig",
    "PosTerminal",
    "TapOutcome",
    "TapStatus",
]
