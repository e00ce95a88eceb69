"""Every Alipay+ message the wallet sends or receives, defined once.

Field names are snake_case here and camelCase on the wire (see ``Message``).
Paths are the endpoint each request is posted to.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import AliasChoices, Field, model_validator

from ._amount import Amount
from ._base import Message
from ._result import Result
from ._types import (
    DateTime,
    Flag,
    Id16,
    Id32,
    Id64,
    Id128,
    Identifier,
    OptionalId32,
    OptionalId64,
    OptionalId128,
    OptionalIdentifier,
    OptionalText,
    OptionalUrl,
    Text,
    Url,
)
from .nfc import NfcPaymentInfo

# --- shared pieces -----------------------------------------------------------------------


class MerchantAddress(Message):
    region: OptionalIdentifier = None
    city: OptionalText = None


class Store(Message):
    reference_store_id: OptionalIdentifier = None
    store_name: OptionalText = None
    store_mcc: OptionalIdentifier = Field(default=None, alias="storeMCC")


class Merchant(Message):
    reference_merchant_id: OptionalIdentifier = None
    merchant_mcc: OptionalIdentifier = Field(default=None, alias="merchantMCC")
    merchant_name: OptionalText = None
    merchant_display_name: OptionalText = None
    merchant_address: MerchantAddress | None = None
    store: Store | None = None


class Env(Message):
    terminal_type: OptionalIdentifier = None
    os_type: OptionalIdentifier = None
    user_agent: OptionalText = None
    client_ip: OptionalIdentifier = None


class Order(Message):
    reference_order_id: Id64
    order_description: Text = Field(max_length=256)
    order_amount: Amount
    merchant: Merchant | None = None
    env: Env | None = None


class PaymentMethodMetadata(Message):
    user_login_id: OptionalIdentifier = None  # looked up among our users, never stored
    user_login_id_type: OptionalIdentifier = None


class PaymentMethod(Message):
    payment_method_type: Identifier
    payment_method_id: OptionalIdentifier = None  # MPM: our access token, looked up by its digest
    customer_id: OptionalId64 = None  # MPM (seed 003): the customerId our applyToken gave Alipay+
    # Seed 004's samples spell it "paymentMethodMetaData", its prose "paymentMethodMetadata".
    payment_method_meta_data: PaymentMethodMetadata | None = Field(
        default=None,
        alias="paymentMethodMetaData",
        validation_alias=AliasChoices("paymentMethodMetaData", "paymentMethodMetadata"),
    )


class PaymentFactor(Message):
    is_agreement_payment: Flag = False
    is_easy_pay_scenario: Flag = False
    is_payment_evaluation: Flag = False
    is_authorization_and_pay: Flag = False
    is_in_store_payment: Flag = False
    is_cashier_payment: Flag = False


class AuthorizationInfo(Message):
    auth_client_id: OptionalId64 = None
    auth_state: OptionalText = None
    reference_agreement_id: OptionalId64 = None


class Quote(Message):
    quote_id: OptionalIdentifier = None
    quote_currency_pair: OptionalIdentifier = None
    quote_price: OptionalIdentifier = None


# --- pay (Alipay+ -> MPP) ---------------------------------------------------------------


class PayRequest(Message):
    PATH: ClassVar[str] = "/aps/api/v1/payments/pay"

    acquirer_id: Id64
    psp_id: Id64
    payment_request_id: Id64
    order: Order
    payment_amount: Amount
    pay_to_amount: Amount
    payment_method: PaymentMethod
    payment_factor: PaymentFactor
    payment_quote: Quote | None = None
    payment_expiry_time: DateTime | None = None
    payment_notify_url: OptionalUrl = None
    payment_redirect_url: OptionalUrl = None  # stored: payment_record.redirect_url, 2048 characters
    authorization_info: AuthorizationInfo | None = None
    surcharge_info: dict[str, Any] | None = None
    payment_promo_info: dict[str, Any] | None = None
    pass_through_info: OptionalText = Field(default=None, max_length=20000)
    extend_info: OptionalText = None
    nfc_payment_info: NfcPaymentInfo | None = None  # NFC (seed 001): the tap behind this pay [inferred]

    @model_validator(mode="after")
    def _authorization_complete(self) -> PayRequest:
        if self.payment_factor.is_authorization_and_pay and not self.payment_factor.is_payment_evaluation:
            info = self.authorization_info
            for name in ("reference_agreement_id", "auth_client_id"):
                if info is None or getattr(info, name) is None:
                    alias = AuthorizationInfo.model_fields[name].alias
                    raise ValueError(f"authorizationInfo.{alias} is required when isAuthorizationAndPay is true")
        return self

    def key_fields_digest(self) -> str:
        """Digest of the fields Alipay+ compares for idempotency (spec §1.9)."""
        return self.digest_of(
            {"payment_amount", "pay_to_amount", "surcharge_info", "payment_method", "payment_promo_info"}
        )


class PayResponse(Message):
    result: Result
    payment_request_id: OptionalId64 = None
    payment_id: OptionalId64 = None
    payment_time: DateTime | None = None
    customer_id: OptionalId64 = None
    payment_url: OptionalUrl = None
    payment_amount: Amount | None = None
    pay_to_amount: Amount | None = None


# --- inquiryPayment (Alipay+ -> MPP) ----------------------------------------------------


class InquiryPaymentRequest(Message):
    PATH: ClassVar[str] = "/aps/api/v1/payments/inquiryPayment"

    acquirer_id: Id64
    psp_id: Id64
    payment_request_id: Id64


class InquiryPaymentResponse(Message):
    result: Result
    payment_result: Result | None = None
    payment_request_id: OptionalId64 = None
    payment_id: OptionalId64 = None
    payment_time: DateTime | None = None
    payment_amount: Amount | None = None
    pay_to_amount: Amount | None = None
    customer_id: OptionalId64 = None


# --- refund (Alipay+ -> MPP) ----------------------------------------------------------


class RefundRequest(Message):
    PATH: ClassVar[str] = "/aps/api/v1/payments/refund"

    acquirer_id: Id64
    psp_id: Id64
    payment_request_id: Id64
    payment_id: Id64
    refund_request_id: Id64
    refund_amount: Amount
    refund_from_amount: Amount | None = None  # what the user gets back, in the payment's payTo currency
    refund_quote: Quote | None = None
    refund_promo_info: dict[str, Any] | None = None
    surcharge_info: dict[str, Any] | None = None
    refund_reason: OptionalText = None
    extend_info: OptionalText = None

    def key_fields_digest(self) -> str:
        """Digest of the fields Alipay+ compares for idempotency (spec §1.9)."""
        return self.digest_of({"refund_amount", "refund_from_amount", "refund_promo_info", "surcharge_info"})


class RefundResponse(Message):
    result: Result
    refund_id: OptionalId64 = None
    refund_time: DateTime | None = None


# --- cancelPayment (Alipay+ -> MPP) -----------------------------------------------------


class CancelPaymentRequest(Message):
    PATH: ClassVar[str] = "/aps/api/v1/payments/cancelPayment"

    acquirer_id: Id64
    psp_id: Id64
    payment_request_id: Id64


class CancelPaymentResponse(Message):
    result: Result


# --- notifyPayment (MPP -> Alipay+) ------------------------------------------------------


class NotifyPaymentRequest(Message):
    PATH: ClassVar[str] = "/aps/api/v1/payments/notifyPayment"

    payment_result: Result
    payment_request_id: Id64
    payment_id: OptionalId64 = None
    payment_time: DateTime | None = None
    payment_amount: Amount | None = None
    pay_to_amount: Amount | None = None
    customer_id: OptionalId64 = None

    @model_validator(mode="after")
    def _final_only(self) -> NotifyPaymentRequest:
        if not self.payment_result.is_final:
            raise ValueError("paymentResult.resultStatus must be S or F, never U")
        return self


class NotifyPaymentResponse(Message):
    result: Result


# --- authNotify (MPP -> Alipay+) ---------------------------------------------------------


class AuthorizationNotifyType(StrEnum):
    AUTHCODE_CREATED = "AUTHCODE_CREATED"
    TOKEN_CREATED = "TOKEN_CREATED"
    TOKEN_CANCELED = "TOKEN_CANCELED"


class AuthNotifyRequest(Message):
    PATH: ClassVar[str] = "/aps/api/v1/authorizations/authNotify"

    authorization_notify_type: AuthorizationNotifyType
    reference_agreement_id: OptionalId64 = None
    auth_client_id: OptionalId64 = None
    reference_merchant_id: OptionalId64 = None
    auth_code: OptionalIdentifier = None
    auth_state: OptionalText = None
    access_token: OptionalId128 = None
    access_token_expiry_time: DateTime | None = None
    refresh_token: OptionalId128 = None
    refresh_token_expiry_time: DateTime | None = None
    customer_id: OptionalId64 = None
    user_login_id: OptionalIdentifier = None
    acquirer_id: OptionalId64 = None
    psp_id: OptionalId64 = None


class AuthNotifyResponse(Message):
    result: Result
    acquirer_id: OptionalId64 = None
    psp_id: OptionalId64 = None


# --- applyToken (Alipay+ -> MPP) ---------------------------------------------------------


class Scope(StrEnum):
    """What an access token may be used for (Alipay+'s auth scopes)."""

    BASE_USER_INFO = "BASE_USER_INFO"
    USER_INFO = "USER_INFO"
    AGREEMENT_PAY = "AGREEMENT_PAY"


class GrantType(StrEnum):
    AUTHORIZATION_CODE = "AUTHORIZATION_CODE"
    REFRESH_TOKEN = "REFRESH_TOKEN"


class ApplyTokenRequest(Message):
    """Alipay+ exchanges the authCode our app gave its client SDK, or refreshes (seed 003, step 1.2)."""

    PATH: ClassVar[str] = "/aps/api/v1/authorizations/applyToken"

    psp_id: Id64
    acquirer_id: Id64
    grant_type: GrantType
    auth_code: OptionalId32 = None  # looked up by its digest, never stored
    refresh_token: OptionalId128 = None  # looked up by its digest, never stored
    auth_client_id: OptionalId64 = None
    customer_belongs_to: OptionalIdentifier = None
    pass_through_info: OptionalText = Field(default=None, max_length=20000)
    extend_info: OptionalText = None

    @model_validator(mode="after")
    def _grant_complete(self) -> ApplyTokenRequest:
        if self.grant_type is GrantType.AUTHORIZATION_CODE and self.auth_code is None:
            raise ValueError("authCode is required when grantType is AUTHORIZATION_CODE")
        if self.grant_type is GrantType.REFRESH_TOKEN and self.refresh_token is None:
            raise ValueError("refreshToken is required when grantType is REFRESH_TOKEN")
        return self


class ApplyTokenResponse(Message):
    result: Result
    access_token: OptionalId128 = None
    access_token_expiry_time: DateTime | None = None
    refresh_token: OptionalId128 = None
    refresh_token_expiry_time: DateTime | None = None
    customer_id: OptionalId64 = None
    pass_through_info: OptionalText = None


# --- Auto Debit binding and revocation (spec §§7.2, 7.3, 8) --------------------------------


class PrepareRequest(Message):
    """Alipay+ asks for the URL where our user authorises a merchant (Auto Debit binding).
    Idempotent on authClientId + referenceAgreementId (spec §1.9)."""

    PATH: ClassVar[str] = "/aps/api/v1/authorizations/prepare"

    psp_id: Id64
    acquirer_id: Id64
    auth_client_id: Id64
    auth_client_name: Text = Field(min_length=1, max_length=256)
    auth_client_display_name: OptionalText = Field(default=None, max_length=64)
    reference_merchant_id: OptionalId64 = None
    reference_agreement_id: Id64
    auth_redirect_url: Url
    scopes: list[Scope] = Field(min_length=1, max_length=4)
    auth_state: Text = Field(min_length=1, max_length=256)  # echoed in AUTHCODE_CREATED [inferred: required]
    terminal_type: OptionalIdentifier = None
    os_type: OptionalIdentifier = None
    pass_through_info: OptionalText = Field(default=None, max_length=20000)

    def key_fields_digest(self) -> str:
        """What a repeat of the same agreement must keep (spec §1.9)."""
        return self.digest_of({"auth_client_name", "reference_merchant_id", "auth_redirect_url", "scopes"})


class PrepareResponse(Message):
    result: Result
    auth_url: OptionalUrl = None


class CancelTokenRequest(Message):
    """Alipay+ revokes an access token (the merchant unbound); idempotent on accessToken."""

    PATH: ClassVar[str] = "/aps/api/v1/authorizations/cancelToken"

    psp_id: Id64
    acquirer_id: Id64
    access_token: Id128  # looked up by its digest, never stored
    pass_through_info: OptionalText = Field(default=None, max_length=20000)


class CancelTokenResponse(Message):
    result: Result


class ConsultUnbindingRequest(Message):
    """MPP -> Alipay+: may our user unbind this merchant from the wallet side?"""

    PATH: ClassVar[str] = "/aps/api/v1/authorizations/consultUnbinding"

    auth_client_id: Id64
    reference_merchant_id: Id32
    access_token: Id128


class ConsultUnbindingResponse(Message):
    result: Result
    allow_unbinding: Flag | None = None


# --- risk challenge (Alipay+ -> MPP, spec §9.1 sendOTP; Auto Debit risk control) -----------


class VerifyType(StrEnum):
    MOBILE = "MOBILE"
    EMAIL = "EMAIL"


class SendOtpRequest(Message):
    PATH: ClassVar[str] = "/aps/api/v1/authorizations/sendOtp"  # [inferred] path: the docs' page omits it

    acquirer_id: Id64
    psp_id: Id64
    access_token: Id128  # names the user; looked up by its digest, never stored
    verify_type: VerifyType = VerifyType.MOBILE


class SendOtpResponse(Message):
    result: Result
    verify_request_id: OptionalId64 = None


class VerifyOtpRequest(Message):
    PATH: ClassVar[str] = "/aps/api/v1/authorizations/verifyOtp"  # [inferred] path, as sendOtp's

    acquirer_id: Id64
    psp_id: Id64
    access_token: Id128
    verify_request_id: Id64
    otp_code: Id16  # checked against its keyed digest, never stored


class VerifyOtpResponse(Message):
    result: Result


class ErrorResponse(Message):
    """The answer to a request that failed before it could be understood."""

    result: Result
