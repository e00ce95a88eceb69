"""The Alipay+ protocol as the wallet (MPP) speaks it: messages, money, results, signatures."""

from ._amount import Amount, minor_unit_exponent
from ._base import Message
from ._client import SignedClient, TransportError
from ._result import Result, ResultCode, ResultStatus
from ._signing import KeyRegistry, SignatureError, SignatureHeader, Signer, Verifier, content_to_sign, sign, verify
from ._types import format_datetime
from .messages import (
    AuthNotifyRequest,
    AuthNotifyResponse,
    AuthorizationInfo,
    AuthorizationNotifyType,
    ErrorResponse,
    InquiryPaymentRequest,
    InquiryPaymentResponse,
    Merchant,
    NotifyPaymentRequest,
    NotifyPaymentResponse,
    Order,
    PaymentFactor,
    PaymentMethod,
    PaymentMethodMetadata,
    PayRequest,
    PayResponse,
)

__all__ = [
    "Amount",
    "AuthNotifyRequest",
    "AuthNotifyResponse",
    "AuthorizationInfo",
    "AuthorizationNotifyType",
    "ErrorResponse",
    "InquiryPaymentRequest",
    "InquiryPaymentResponse",
    "KeyRegistry",
    "Merchant",
    "Message",
    "NotifyPaymentRequest",
    "NotifyPaymentResponse",
    "Order",
    "PayRequest",
    "PayResponse",
    "PaymentFactor",
    "PaymentMethod",
    "PaymentMethodMetadata",
    "Result",
    "ResultCode",
    "ResultStatus",
    "SignatureError",
    "SignatureHeader",
    "SignedClient",
    "Signer",
    "TransportError",
    "Verifier",
    "content_to_sign",
    "format_datetime",
    "minor_unit_exponent",
    "sign",
    "verify",
]
