"""The phone's side: the wallet app and, inside it, Alipay+'s client SDK (merchant-presented mode)."""

from .alipayplus_client_sdk import AlipayPlusClientSdk, DecodeOutcome, DeviceInfo
from .wallet_app import NotSignedIn, PaymentPage, PaymentResult, ScanOutcome, WalletApp

__all__ = [
    "AlipayPlusClientSdk",
    "DecodeOutcome",
    "DeviceInfo",
    "NotSignedIn",
    "PaymentPage",
    "PaymentResult",
    "ScanOutcome",
    "WalletApp",
]
