"""What Alipay+ sends the MPP: signed pay, inquiryPayment, refund and cancelPayment calls, and
realistic Easy Pay and refund requests.

The builders follow seed 004's two samples (same acquirer, merchant and shape); only the ids,
the user, the amount and the times vary.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx

from alipayplus import (
    Amount,
    AuthorizationInfo,
    CancelPaymentRequest,
    CancelPaymentResponse,
    InquiryPaymentRequest,
    InquiryPaymentResponse,
    Merchant,
    Order,
    PaymentFactor,
    PaymentMethod,
    PaymentMethodMetadata,
    PayRequest,
    PayResponse,
    RefundRequest,
    RefundResponse,
    SignedClient,
    Signer,
    Verifier,
)
from alipayplus.messages import Env, MerchantAddress

from ._samples import EVALUATION_SAMPLE, ORDER_SAMPLE
from .peer import SandboxAlipayPlus

ACQUIRER_ID = "1022188000000000001"  # the ACQP in seed 004's samples
PSP_ID = "1022160000000000000"  # the MPP's pspId in seed 004 (and settings' default)
PAYMENT_METHOD_TYPE = "ALIPAY_HK"
PAY_TIMEOUT = 8.0  # Alipay+ waits 8 s for pay, refund and cancelPayment ...
INQUIRY_TIMEOUT = 5.0  # ... and 5 s for inquiryPayment (spec §1, key gotcha 4)
_UTC8 = timezone(timedelta(hours=8))  # Alipay+ writes its times in UTC+8

_MERCHANT = Merchant(
    reference_merchant_id="2188120040699147",
    merchant_mcc="5021",
    merchant_name="testAliasName",
    merchant_display_name="testAliasName",
    merchant_address=MerchantAddress(region="SG"),
)


def sample_requests() -> tuple[bytes, bytes]:
    """Seed 004's two pay request bodies, verbatim: (account check, payment order)."""
    return EVALUATION_SAMPLE, ORDER_SAMPLE


def _order(payment_request_id: str, amount: Amount) -> Order:
    return Order(
        reference_order_id=f"order_{payment_request_id}"[:64],
        order_description="AMSDM_GIFT",
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


def easy_pay_evaluation(
    payment_request_id: str, user_login_id: str, amount: Amount, psp_id: str, user_login_id_type: str = "MOBILE"
) -> PayRequest:
    """Pay #1: "can this MPP account pay this?" — no money moves."""
    return PayRequest(
        acquirer_id=ACQUIRER_ID,
        psp_id=psp_id,
        payment_request_id=payment_request_id,
        order=_order(payment_request_id, amount),
        payment_amount=amount,
        pay_to_amount=amount,
        payment_method=_payment_method(user_login_id, user_login_id_type),
        payment_factor=PaymentFactor(is_agreement_payment=True, is_easy_pay_scenario=True, is_payment_evaluation=True),
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
    expiry = datetime.now(_UTC8).replace(microsecond=0) + expires_in
    return PayRequest(
        acquirer_id=ACQUIRER_ID,
        psp_id=psp_id,
        payment_request_id=payment_request_id,
        order=_order(payment_request_id, amount),
        payment_amount=amount,
        pay_to_amount=amount,
        payment_method=_payment_method(user_login_id, user_login_id_type),
        payment_factor=PaymentFactor(
            is_agreement_payment=True, is_easy_pay_scenario=True, is_authorization_and_pay=authorization is not None
        ),
        payment_expiry_time=expiry,
        payment_redirect_url=redirect_url
        or f"http://127.0.0.1:8001/sandbox/result?paymentRequestId={payment_request_id}",
        authorization_info=authorization,
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


class AlipayPlusDriver:
    """Alipay+'s side of the Alipay+ → MPP APIs: signs with Alipay+'s key, checks the MPP's answers."""

    easy_pay_evaluation = staticmethod(easy_pay_evaluation)
    easy_pay_order = staticmethod(easy_pay_order)
    refund_request = staticmethod(refund_request)

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

    async def cancel(
        self, payment_request_id: str, acquirer_id: str = ACQUIRER_ID, psp_id: str = PSP_ID
    ) -> CancelPaymentResponse:
        """cancelPayment; raises ``TransportError`` when the MPP gives no usable answer within 8 s."""
        request = CancelPaymentRequest(acquirer_id=acquirer_id, psp_id=psp_id, payment_request_id=payment_request_id)
        return await self._client.call(
            CancelPaymentRequest.PATH, request, CancelPaymentResponse, timeout=self.pay_timeout
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AlipayPlusDriver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
