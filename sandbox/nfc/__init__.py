"""Sandbox peers for Alipay+ NFC (HCE Mastercard tokens): the Ant server behind Alipay+'s sdkProxy
(``ant``) and Mastercard's MDES (``mastercard``). Both are served by ``sandbox.alipayplus.app``."""

from .ant import SandboxAntNfc, TokenActiveHook, ant_nfc_router
from .mastercard import (
    GET_PUBLIC_KEY_PATH,
    Issuer,
    SandboxMastercard,
    TokenState,
    VerifiedAuthorization,
    mastercard_router,
)

__all__ = [
    "GET_PUBLIC_KEY_PATH",
    "Issuer",
    "SandboxAntNfc",
    "SandboxMastercard",
    "TokenActiveHook",
    "TokenState",
    "VerifiedAuthorization",
    "ant_nfc_router",
    "mastercard_router",
]
