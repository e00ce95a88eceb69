"""What Alipay+ sends the MPP: signed pay, inquiryPayment, refund, cancelPayment and applyToken
calls, and realistic Easy Pay, merchant-presented (MPM) and refund requests; for Auto Debit also
prepare, applyToken for the consent's authCode, token payments (and their evaluation), cancelToken,
the risk challenge's sendOtp and verifyOtp, and the user following the consent page (``consent``).

The Easy Pay builders follow seed 004's two samples (same acquirer, merchant and shape); only the
ids, the user, the amount and the times vary. The MPM builders follow seed 003 (steps 1.2 and 5).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import httpx

from alipayplus import (
    Amount,
    ApplyTokenRequest,
    ApplyTokenResponse,
    AuthorizationInfo,
    CancelPaymentRequest,
    CancelPaymentResponse,
    CancelTokenRequest,
    CancelTokenResponse,
    GrantType,
    InquiryPaymentRequest,
    InquiryPaymentResponse,
    Merchant,
    Order,
    PaymentFactor,
    PaymentMethod,
    PaymentMethodMetadata,
    PayRequest,
    PayResponse,
    PrepareRequest,
    PrepareResponse,
    RefundRequest,
    RefundResponse,
    Scope,
    SendOtpRequest,
    SendOtpResponse,
    SignedClient,
    Signer,
    Verifier,
    VerifyOtpRequest,
    VerifyOtpResponse,
    minor_unit_exponent,
)
from alipayplus.messages import Env, MerchantAddress, Quote
from alipayplus.nfc import (
    NFC_PAYMENT_METHOD_TYPE,
    AccountSource,
    AdjustRefundRequest,
    AdjustRefundResponse,
    AdjustRefundScenario,
    NfcPaymentInfo,
    TokenActivationNotificationRequest,
    TokenActivationNotificationResponse,
    TokenData,
)

from ._samples import EVALUATION_SAMPLE, ORDER_SAMPLE
from .consent import ConsentAction, ConsentBrowser, ConsentDecision
from .peer import SandboxAlipayPlus

ACQUIRER_ID = "1022188000000000001"  # the ACQP in seed 004's samples
PSP_ID = "1022160000000000000"  # the MPP's pspId in seed 004 (and settings' default)
PAYMENT_METHOD_TYPE = "ALIPAY_HK"
ALIPAYPLUS_ACQUIRER_ID = "2052666000000000"  # applyToken from the client SDK's session: Alipay+ itself (seed 003)
NFC_ACQUIRER_ID = "1022188000000000002"  # the card acquirer behind the sandbox POS terminals
AUTO_DEBIT_CLIENT_ID = "2188120040699147"  # the merchant asking to bind (its authClientId): seed 004's merchant
CONNECT_WALLET = "CONNECT_WALLET"  # the MPM payment method: the user's wallet, by the session's accessToken
MPM_PAYMENT_EXPIRY = timedelta(seconds=120)  # seed 003: at most 3 minutes for merchant-presented mode
PAY_TIMEOUT = 8.0  # Alipay+ waits 8 s for pay, refund and cancelPayment ...
INQUIRY_TIMEOUT = 5.0  # ... and 5 s for inquiryPayment (spec §1, key gotcha 4)
_UTC8 = timezone(timedelta(hours=8))  # Alipay+ writes its times in UTC+8

_MERCHANT = Merchant(
    reference_merchant_id="2188120040699147",
    merchant_mcc="5021",
    merchant_name="testAliasName",  # seed 004's sample; what the payer reads is the display name
    merchant_display_name="Sandbox Gift Shop",
    merchant_address=MerchantAddress(region="SG"),
)


def request_id(now: datetime) -> str:
    """A request id as Alipay+ makes its own: 31 digits, its UTC+8 time then 17 random ones."""
    return f"{now.astimezone(_UTC8):%Y%m%d%H%M%S}{secrets.randbelow(10**17):017d}"


def sample_requests() -> tuple[bytes, bytes]:
    """Seed 004's two pay request bodies, verbatim: (account check, payment order)."""
    return EVALUATION_SAMPLE, ORDER_SAMPLE


def _order(payment_request_id: str, amount: Amount) -> Order:
    return Order(
        reference_order_id=f"order_{payment_request_id}"[:64],
        order_description="Gift card",  # seed 004's sample says AMSDM_GIFT: a code, not words for a payer
        order_amount=amount,
        merchant=_MERCHANT,
        env=Env(),
    )


def _payment_method(user_login_id: str, user_login_id_type: str) -> PaymentMethod:
    return PaymentMethod(
        payment_method_type=PAYMENT_METHOD_TYPE,
        payment_method_meta_data=PaymentMethodMetadata(
            user_login_id=user_login_id, user_login_id_type=user_login_id_type
        ),
    )


def _gift_shop_pay(
    payment_request_id: str,
    amount: Amount,
    psp_id: str,
    payment_method: PaymentMethod,
    payment_factor: PaymentFactor,
    *,
    expires_in: timedelta | None = None,
    redirect_url: str | None = None,
    authorization: AuthorizationInfo | None = None,
) -> PayRequest:
    """A pay from seed 004's acquirer for the gift shop's order of ``amount``, expiring ``expires_in``
    from now (to the second, in UTC+8) if given."""
    expiry = datetime.now(_UTC8).replace(microsecond=0) + expires_in if expires_in is not None else None
    return PayRequest(
        acquirer_id=ACQUIRER_ID,
        psp_id=psp_id,
        payment_request_id=payment_request_id,
        order=_order(payment_request_id, amount),
        payment_amount=amount,
        pay_to_amount=amount,
        payment_method=payment_method,
        payment_factor=payment_factor,
        payment_expiry_time=expiry,
        payment_redirect_url=redirect_url,
        authorization_info=authorization,
    )


def easy_pay_evaluation(
    payment_request_id: str, user_login_id: str, amount: Amount, psp_id: str, user_login_id_type: str = "MOBILE"
) -> PayRequest:
    """Pay #1: "can this MPP account pay this?" — no money moves."""
    return _gift_shop_pay(
        payment_request_id,
        amount,
        psp_id,
        _payment_method(user_login_id, user_login_id_type),
        PaymentFactor(is_agreement_payment=True, is_easy_pay_scenario=True, is_payment_evaluation=True),
    )


def easy_pay_order(
    payment_request_id: str,
    user_login_id: str,
    amount: Amount,
    psp_id: str,
    *,
    expires_in: timedelta = timedelta(minutes=10),
    redirect_url: str | None = None,
    authorization: AuthorizationInfo | None = None,
    user_login_id_type: str = "MOBILE",
) -> PayRequest:
    """Pay #2: create the order; the MPP answers U with a verification paymentUrl.

    ``redirect_url`` defaults to the sandbox result page for this payment.
    """
    return _gift_shop_pay(
        payment_request_id,
        amount,
        psp_id,
        _payment_method(user_login_id, user_login_id_type),
        PaymentFactor(
            is_agreement_payment=True, is_easy_pay_scenario=True, is_authorization_and_pay=authorization is not None
        ),
        expires_in=expires_in,
        redirect_url=redirect_url or f"http://127.0.0.1:8001/sandbox/result?paymentRequestId={payment_request_id}",
        authorization=authorization,
    )


def refund_request(
    payment: PayRequest,
    payment_id: str,
    refund_request_id: str,
    amount: Amount,
    refund_from_amount: Amount | None = None,
) -> RefundRequest:
    """A refund of ``amount`` (in the payment's currency) of the paid ``payment`` (spec §5).

    Without ``refund_from_amount`` the MPP credits ``amount`` at the payment's own rate.
    """
    return RefundRequest(
        acquirer_id=payment.acquirer_id,
        psp_id=payment.psp_id,
        payment_request_id=payment.payment_request_id,
        payment_id=payment_id,
        refund_request_id=refund_request_id,
        refund_amount=amount,
        refund_from_amount=refund_from_amount,
    )


def nfc_pay_request(
    payment_request_id: str,
    customer_id: str,
    token_reference_id: str,
    amount: Amount,
    *,
    psp_id: str = PSP_ID,
    pay_to_amount: Amount | None = None,
    custom_data: bytes | None = None,
    atc: int | None = None,
    merchant_name: str = "Sandbox Coffee",
) -> PayRequest:
    """The pay Alipay+ sends for a card authorization (spec §10.4, §12): the acquirer has turned
    the token into our customerId; the tap's custom data and ATC ride along [inferred]."""
    merchant = _MERCHANT.model_copy(update={"merchant_name": merchant_name, "merchant_display_name": merchant_name})
    return PayRequest(
        acquirer_id=NFC_ACQUIRER_ID,
        psp_id=psp_id,
        payment_request_id=payment_request_id,
        order=Order(
            reference_order_id=f"nfc_{payment_request_id}"[:64],
            order_description="NFC purchase",
            order_amount=amount,
            merchant=merchant,
            env=Env(terminal_type="POS"),
        ),
        payment_amount=amount,
        pay_to_amount=pay_to_amount or amount,
        payment_method=PaymentMethod(payment_method_type=NFC_PAYMENT_METHOD_TYPE, customer_id=customer_id),
        payment_factor=PaymentFactor(is_in_store_payment=True),
        nfc_payment_info=NfcPaymentInfo(
            token_reference_id=token_reference_id,
            custom_data=custom_data.hex().upper() if custom_data else None,
            atc=str(atc) if atc is not None else None,
        ),
    )


def adjust_refund_request(
    refund_request_id: str,
    scenario: AdjustRefundScenario,
    amount: Amount,
    *,
    payment_request_id: str | None = None,
    customer_id: str | None = None,
    psp_id: str = PSP_ID,
) -> AdjustRefundRequest:
    """adjustRefund (spec §13.3): the excess above a payment, or a refund with no payment."""
    return AdjustRefundRequest(
        acquirer_id=NFC_ACQUIRER_ID,
        psp_id=psp_id,
        refund_request_id=refund_request_id,
        sub_scenario_type=scenario,
        refund_amount=amount,
        payment_request_id=payment_request_id,
        customer_id=customer_id,
    )


def apply_token_request(
    *,
    auth_code: str | None = None,
    refresh_token: str | None = None,
    psp_id: str = PSP_ID,
    acquirer_id: str = ALIPAYPLUS_ACQUIRER_ID,
    auth_client_id: str | None = None,
) -> ApplyTokenRequest:
    """applyToken as Alipay+ sends it for a client-SDK session: exchange an authCode, or refresh.

    Exactly one of ``auth_code`` / ``refresh_token``; it decides the grantType. For an Auto Debit
    binding (``agreement_apply_token``) the merchant's acquirer and authClientId ride along.
    """
    if (auth_code is None) == (refresh_token is None):
        raise ValueError("give exactly one of auth_code and refresh_token")
    return ApplyTokenRequest(
        psp_id=psp_id,
        acquirer_id=acquirer_id,
        grant_type=GrantType.AUTHORIZATION_CODE if auth_code is not None else GrantType.REFRESH_TOKEN,
        auth_code=auth_code,
        refresh_token=refresh_token,
        auth_client_id=auth_client_id,
    )


# --- Auto Debit (spec §§2, 7, 9.5) ----------------------------------------------------------


def prepare_request(
    reference_agreement_id: str,
    redirect_url: str,
    *,
    auth_client_id: str = AUTO_DEBIT_CLIENT_ID,
    auth_client_name: str = "Sandbox Gift Shop",
    auth_state: str | None = None,
    psp_id: str = PSP_ID,
) -> PrepareRequest:
    """prepare: the merchant asks to bind the user for AGREEMENT_PAY; the MPP answers its consent page."""
    return PrepareRequest(
        psp_id=psp_id,
        acquirer_id=ACQUIRER_ID,
        auth_client_id=auth_client_id,
        auth_client_name=auth_client_name,
        reference_merchant_id=auth_client_id,
        reference_agreement_id=reference_agreement_id,
        auth_redirect_url=redirect_url,
        scopes=[Scope.AGREEMENT_PAY],
        auth_state=auth_state or f"state_{reference_agreement_id}",
        terminal_type="APP",
        os_type="ANDROID",
    )


def agreement_apply_token(
    *,
    auth_code: str | None = None,
    refresh_token: str | None = None,
    auth_client_id: str = AUTO_DEBIT_CLIENT_ID,
    psp_id: str = PSP_ID,
) -> ApplyTokenRequest:
    """applyToken for an Auto Debit binding: the consent's authCode for a token pair, or a refresh."""
    return apply_token_request(
        auth_code=auth_code,
        refresh_token=refresh_token,
        psp_id=psp_id,
        acquirer_id=ACQUIRER_ID,
        auth_client_id=auth_client_id,
    )


def auto_debit_pay(
    payment_request_id: str,
    access_token: str,
    amount: Amount,
    *,
    psp_id: str = PSP_ID,
    evaluation: bool = False,
    customer_id: str | None = None,
    expires_in: timedelta | None = None,
) -> PayRequest:
    """An Auto Debit pay: the agreement's access token in ``paymentMethodId``, no Easy Pay flag;
    the MPP answers S or F within the call. ``evaluation``: only "could this token pay this?"."""
    return _gift_shop_pay(
        payment_request_id,
        amount,
        psp_id,
        PaymentMethod(payment_method_type=PAYMENT_METHOD_TYPE, payment_method_id=access_token, customer_id=customer_id),
        PaymentFactor(is_agreement_payment=True, is_payment_evaluation=evaluation),
        expires_in=expires_in,
    )


def cancel_token_request(access_token: str, psp_id: str = PSP_ID) -> CancelTokenRequest:
    """cancelToken: the merchant unbound; the token (and its agreement) dies."""
    return CancelTokenRequest(psp_id=psp_id, acquirer_id=ACQUIRER_ID, access_token=access_token)


def send_otp_request(access_token: str, psp_id: str = PSP_ID) -> SendOtpRequest:
    """sendOtp: the risk challenge texts the token's user a code."""
    return SendOtpRequest(acquirer_id=ACQUIRER_ID, psp_id=psp_id, access_token=access_token)


def verify_otp_request(
    access_token: str, verify_request_id: str, otp_code: str, psp_id: str = PSP_ID
) -> VerifyOtpRequest:
    """verifyOtp: the code the user typed for sendOtp's verifyRequestId."""
    return VerifyOtpRequest(
        acquirer_id=ACQUIRER_ID,
        psp_id=psp_id,
        access_token=access_token,
        verify_request_id=verify_request_id,
        otp_code=otp_code,
    )


def convert_amount(amount: Amount, rate: Decimal, currency: str) -> Amount:
    """``amount`` × ``rate`` in ``currency``: computed in major units, rounded half-even to the
    target currency's exponent, then back to minor units (seed 003: payToAmount = paymentAmount ×
    quotePrice). Decimal throughout, never float."""
    major = Decimal(amount.value).scaleb(-minor_unit_exponent(amount.currency))
    exponent = minor_unit_exponent(currency)
    converted = (major * rate).quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_EVEN)
    return Amount(currency=currency, value=int(converted.scaleb(exponent)))


def _quoted(amount: Amount, pay_to_currency: str, rate: Decimal | None) -> tuple[Amount, Quote | None]:
    """payToAmount and the quote behind it; no quote when the merchant already charges in it."""
    if amount.currency == pay_to_currency:
        return amount, None
    if rate is None:
        raise ValueError(f"a {amount.currency}/{pay_to_currency} rate is needed to quote this payment")
    quote = Quote(
        quote_id=uuid.uuid4().hex,
        quote_currency_pair=f"{amount.currency}/{pay_to_currency}",
        quote_price=format(rate, "f"),  # never "1E+3"
    )
    return convert_amount(amount, rate, pay_to_currency), quote


def mpm_order(
    payment_request_id: str,
    order: Order,
    *,
    access_token: str,
    customer_id: str,
    psp_id: str,
    pay_to_currency: str,
    notify_url: str,
    rate: Decimal | None = None,
    redirect_url: str | None = None,
    expires_in: timedelta = MPM_PAYMENT_EXPIRY,
    now: datetime | None = None,
) -> PayRequest:
    """The pay Alipay+ sends after decoding a merchant's order code (seed 003, step 5).

    The user is named by the session's ``access_token`` and ``customer_id`` (both from our
    applyToken); ``rate`` quotes the order's currency into ``pay_to_currency`` when they differ.
    """
    pay_to_amount, quote = _quoted(order.order_amount, pay_to_currency, rate)
    start = (now or datetime.now(_UTC8)).astimezone(_UTC8).replace(microsecond=0)
    return PayRequest(
        acquirer_id=ACQUIRER_ID,
        psp_id=psp_id,
        payment_request_id=payment_request_id,
        order=order,
        payment_amount=order.order_amount,
        pay_to_amount=pay_to_amount,
        payment_quote=quote,
        payment_method=PaymentMethod(
            payment_method_type=CONNECT_WALLET, payment_method_id=access_token, customer_id=customer_id
        ),
        payment_factor=PaymentFactor(is_in_store_payment=True, is_cashier_payment=True),
        payment_expiry_time=start + expires_in,
        payment_notify_url=notify_url,
        payment_redirect_url=redirect_url,
    )


class AlipayPlusDriver:
    """Alipay+'s side of the Alipay+ → MPP APIs: signs with Alipay+'s key, checks the MPP's answers."""

    easy_pay_evaluation = staticmethod(easy_pay_evaluation)
    easy_pay_order = staticmethod(easy_pay_order)
    refund_request = staticmethod(refund_request)
    apply_token_request = staticmethod(apply_token_request)
    nfc_pay_request = staticmethod(nfc_pay_request)
    adjust_refund_request = staticmethod(adjust_refund_request)
    mpm_order = staticmethod(mpm_order)
    prepare_request = staticmethod(prepare_request)
    agreement_apply_token = staticmethod(agreement_apply_token)
    auto_debit_pay = staticmethod(auto_debit_pay)
    cancel_token_request = staticmethod(cancel_token_request)
    send_otp_request = staticmethod(send_otp_request)
    verify_otp_request = staticmethod(verify_otp_request)

    def __init__(
        self,
        base_url: str,
        signer: Signer,
        verifier: Verifier,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        pay_timeout: float = PAY_TIMEOUT,
        inquiry_timeout: float = INQUIRY_TIMEOUT,
    ) -> None:
        self.pay_timeout = pay_timeout
        self.inquiry_timeout = inquiry_timeout
        self.base_url, self._transport = base_url, transport
        self._client = SignedClient(base_url, signer, verifier, timeout=inquiry_timeout, transport=transport)

    @classmethod
    def for_peer(
        cls, peer: SandboxAlipayPlus, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> AlipayPlusDriver:
        """A driver with the sandbox's own keys (same Client-Id, Alipay+ signer, MPP verifier)."""
        return cls(base_url, peer.signer, peer.verifier, transport=transport)

    async def pay(self, request: PayRequest) -> PayResponse:
        """Raises ``TransportError`` when the MPP gives no usable answer within 8 s."""
        return await self._client.call(PayRequest.PATH, request, PayResponse, timeout=self.pay_timeout)

    async def notify_token_activation(
        self, request: TokenActivationNotificationRequest
    ) -> TokenActivationNotificationResponse:
        """tokenActivationNotification: the token Mastercard reported active is ready for use."""
        return await self._client.call(
            TokenActivationNotificationRequest.PATH,
            request,
            TokenActivationNotificationResponse,
            timeout=self.pay_timeout,
        )

    async def apply_token(self, request: ApplyTokenRequest) -> ApplyTokenResponse:
        """Raises ``TransportError`` when the MPP gives no usable answer; Alipay+ documents no
        applyToken timeout, so it waits as long as for pay (8 s)."""
        return await self._client.call(ApplyTokenRequest.PATH, request, ApplyTokenResponse, timeout=self.pay_timeout)

    async def inquire(
        self, payment_request_id: str, acquirer_id: str = ACQUIRER_ID, psp_id: str = PSP_ID
    ) -> InquiryPaymentResponse:
        request = InquiryPaymentRequest(acquirer_id=acquirer_id, psp_id=psp_id, payment_request_id=payment_request_id)
        return await self._client.call(
            InquiryPaymentRequest.PATH, request, InquiryPaymentResponse, timeout=self.inquiry_timeout
        )

    async def refund(self, request: RefundRequest) -> RefundResponse:
        """Raises ``TransportError`` when the MPP gives no usable answer within 8 s."""
        return await self._client.call(RefundRequest.PATH, request, RefundResponse, timeout=self.pay_timeout)

    async def adjust_refund(self, request: AdjustRefundRequest) -> AdjustRefundResponse:
        """adjustRefund; raises ``TransportError`` when the MPP gives no usable answer within 8 s."""
        return await self._client.call(
            AdjustRefundRequest.PATH, request, AdjustRefundResponse, timeout=self.pay_timeout
        )

    async def cancel(
        self, payment_request_id: str, acquirer_id: str = ACQUIRER_ID, psp_id: str = PSP_ID
    ) -> CancelPaymentResponse:
        """cancelPayment; raises ``TransportError`` when the MPP gives no usable answer within 8 s."""
        request = CancelPaymentRequest(acquirer_id=acquirer_id, psp_id=psp_id, payment_request_id=payment_request_id)
        return await self._client.call(
            CancelPaymentRequest.PATH, request, CancelPaymentResponse, timeout=self.pay_timeout
        )

    # --- Auto Debit ------------------------------------------------------------------------

    async def prepare(self, request: PrepareRequest) -> PrepareResponse:
        """prepare; Alipay+ documents no timeout for the authorization APIs: 8 s, as for pay."""
        return await self._client.call(PrepareRequest.PATH, request, PrepareResponse, timeout=self.pay_timeout)

    async def cancel_token(self, request: CancelTokenRequest) -> CancelTokenResponse:
        return await self._client.call(CancelTokenRequest.PATH, request, CancelTokenResponse, timeout=self.pay_timeout)

    async def send_otp(self, request: SendOtpRequest) -> SendOtpResponse:
        return await self._client.call(SendOtpRequest.PATH, request, SendOtpResponse, timeout=self.pay_timeout)

    async def verify_otp(self, request: VerifyOtpRequest) -> VerifyOtpResponse:
        return await self._client.call(VerifyOtpRequest.PATH, request, VerifyOtpResponse, timeout=self.pay_timeout)

    async def follow_consent(
        self, auth_url: str, login_id: str, pin: str, action: ConsentAction = "agree"
    ) -> ConsentDecision:
        """The merchant opens prepare's ``authUrl`` in the wallet app: the user signs in (on the MPP
        this driver calls) and presses ``action``; the answer's redirect carries authCode and authState."""
        async with ConsentBrowser(self.base_url, transport=self._transport) as user:
            await user.login(login_id, pin)
            return await user.decide(auth_url, action)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AlipayPlusDriver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@dataclass(frozen=True)
class TokenActivationNotifier:
    """What the sandbox Alipay+ does when Mastercard reports a token active: tokenActivationNotification."""

    driver: AlipayPlusDriver

    async def __call__(self, token_reference_id: str, customer_id: str, device_fingerprint: str) -> None:
        now = datetime.now(_UTC8).replace(microsecond=0)
        await self.driver.notify_token_activation(
            TokenActivationNotificationRequest(
                token_reference_id=token_reference_id,
                customer_id=customer_id,
                account_source=AccountSource.ACCOUNT_ADDED_MANUALLY,
                service_request_time=now,
                token_activated_time=now,
                token_data=TokenData.model_validate({"deviceFingerprint": device_fingerprint}),
            )
        )
