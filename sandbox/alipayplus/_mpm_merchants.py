"""The sandbox MPM's merchant side: stores, FX rates, acceptance marks, order codes and merchant addresses."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from alipayplus import Amount, Merchant, NotifyPaymentRequest, Order, minor_unit_exponent
from alipayplus.messages import MerchantAddress, Store
from sandbox.code_service import ENTRY_CODE_PREFIX, ORDER_CODE_PREFIX

from ._mpm_records import CODE_EXPIRY, OrderCode, PayExchange
from .driver import _UTC8, MPM_PAYMENT_EXPIRY

if TYPE_CHECKING:
    from .peer import Received, SandboxAlipayPlus


@dataclass(frozen=True)
class SandboxStore:
    """A merchant's store that has a static entry code (the user types the amount in)."""

    store_id: str
    currency: str
    merchant: Merchant  # with its store and address, as the pay request's order carries it

    @property
    def name(self) -> str:
        store = self.merchant.store
        return (store.store_name if store else None) or self.store_id


def _store(store_id: str, currency: str, name: str, mcc: str, region: str, city: str, merchant_id: str) -> SandboxStore:
    merchant = Merchant(
        reference_merchant_id=merchant_id,
        merchant_mcc=mcc,
        merchant_name=name,
        merchant_display_name=name,
        merchant_address=MerchantAddress(region=region, city=city),
        store=Store(reference_store_id=store_id, store_name=f"{name} {city}", store_mcc=mcc),
    )
    return SandboxStore(store_id=store_id, currency=currency, merchant=merchant)


DEFAULT_STORES: tuple[SandboxStore, ...] = (
    _store("SG-KOPI-01", "SGD", "Sandbox Kopitiam", "5814", "SG", "Singapore", "2188120040000001"),
    _store("HK-TEA-01", "HKD", "Sandbox Tea House", "5814", "HK", "Hong Kong", "2188120040000002"),
    _store("JP-SHOES-01", "JPY", "Sandbox Shoes", "5661", "JP", "Tokyo", "2188120040000003"),
    _store("KR-MART-01", "KRW", "Sandbox Mart", "5411", "KR", "Seoul", "2188120040000004"),
)

# quotePrice per "FROM/TO" pair: 1 major unit of FROM in major units of TO.
DEFAULT_EXCHANGE_RATES: Mapping[str, Decimal] = {
    "SGD/IDR": Decimal("12150.75"),
    "HKD/IDR": Decimal("2085.40"),
    "JPY/IDR": Decimal("105.2850"),
    "KRW/IDR": Decimal("11.7325"),
    "MYR/IDR": Decimal("3520.10"),
    "THB/IDR": Decimal("455.60"),
    "USD/IDR": Decimal("16250.00"),
}

# The logos the client SDK shows on the Scan page, per region: Alipay+ and local wallets.
ACCEPTANCE_MARKS: Mapping[str, tuple[str, ...]] = {
    "SG": ("Alipay+",),
    "HK": ("Alipay+", "AlipayHK"),
    "JP": ("Alipay+",),
    "KR": ("Alipay+", "Kakao Pay", "NAVER Pay", "Toss Pay"),
    "MY": ("Alipay+", "Touch 'n Go eWallet"),
    "TH": ("Alipay+", "TrueMoney"),
    "ID": ("Alipay+", "DANA"),
}


class NoExchangeRate(ValueError):
    """The sandbox has no rate to quote the merchant's currency into the MPP's."""


def logo_slug(name: str) -> str:
    """An acceptance mark's name as the file name of its logo ("Touch 'n Go eWallet" → touch-n-go-ewallet)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("'", "")).strip("-")


def parse_major_amount(text: str, currency: str) -> Amount:
    """What a person types on the cashier page ("12.50") as minor units; ValueError says what to fix."""
    exponent = minor_unit_exponent(currency)
    example = "12" if exponent == 0 else f"12.{'5'.ljust(exponent, '0')}"
    try:
        major = Decimal(text.strip())
    except InvalidOperation:
        major = Decimal("NaN")
    if not major.is_finite():
        raise ValueError(f"Enter the amount in {currency}, e.g. {example}.")
    minor = major.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise ValueError(f"Enter the amount in {currency} with at most {exponent} decimals, e.g. {example}.")
    if not 0 < minor < 10**18:
        raise ValueError(f"Enter an amount above zero in {currency}, e.g. {example}.")
    return Amount(currency=currency, value=int(minor))


class MerchantSide:
    """The merchant / ACQP's half of ``SandboxMpm``: order codes, entry codes, cashier orders, addresses.

    A mixin so ``SandboxMpm`` keeps one public surface; the attributes below are set by its ``__init__``.
    """

    base_url: str
    mpp_currency: str
    exchange_rates: dict[str, Decimal]
    stores: dict[str, SandboxStore]
    clock: Callable[[], datetime]
    peer: SandboxAlipayPlus | None
    order_codes: dict[str, OrderCode]

    if TYPE_CHECKING:  # defined by SandboxMpm, beside the pay calls it lists

        def payments(self, payment_request_id: str | None = None) -> list[PayExchange]: ...

    def rate_for(self, currency: str) -> Decimal | None:
        """The quotePrice from ``currency`` into the MPP's; None when no conversion is needed."""
        if currency == self.mpp_currency:
            return None
        pair = f"{currency}/{self.mpp_currency}"
        try:
            return self.exchange_rates[pair]
        except KeyError:
            raise NoExchangeRate(f"The sandbox has no {pair} exchange rate") from None

    def create_order_code(
        self,
        amount: Amount,
        description: str,
        *,
        store: SandboxStore | None = None,
        code_expires_in: timedelta = CODE_EXPIRY,
        payment_expires_in: timedelta = MPM_PAYMENT_EXPIRY,
        redirect_url: str | None = None,
    ) -> OrderCode:
        """A new order code for ``amount``; raises ``NoExchangeRate`` when it could not be quoted."""
        self.rate_for(amount.currency)  # refuse now a code that could never be paid
        store = store or self._store_charging(amount.currency)
        now = self.clock()
        order = Order(
            reference_order_id=f"SBX{now.astimezone(_UTC8):%Y%m%d%H%M%S}{secrets.token_hex(6)}",
            order_description=description,
            order_amount=amount,
            merchant=store.merchant,
        )
        order_code = OrderCode(
            code_value=ORDER_CODE_PREFIX + secrets.token_urlsafe(24),  # unguessable: the code is the order
            order=order,
            code_expires_at=now + code_expires_in,
            payment_expires_in=payment_expires_in,
            redirect_url=redirect_url,
        )
        self.order_codes[order_code.code_value] = order_code
        return order_code

    def cashier_order(self, store: SandboxStore, amount_text: str) -> OrderCode:
        """The order a person makes on a store's cashier page; ValueError says what to fix."""
        amount = parse_major_amount(amount_text, store.currency)
        order_code = self.create_order_code(amount, f"Purchase at {store.name}", store=store)
        order_code.redirect_url = self.result_url(order_code.reference_order_id)
        return order_code

    def _store_charging(self, currency: str) -> SandboxStore:
        stores = list(self.stores.values())
        return next((store for store in stores if store.currency == currency), stores[0])

    def entry_code(self, store: SandboxStore) -> str:
        return ENTRY_CODE_PREFIX + store.store_id

    def order_by_reference(self, reference_order_id: str) -> OrderCode | None:
        return next((c for c in self.order_codes.values() if c.reference_order_id == reference_order_id), None)

    def order_status(self, order_code: OrderCode) -> str:
        """What the merchant knows: success / fail from notifyPayment or a final pay answer, else
        processing once paid for, waiting before anyone decoded the code."""
        if order_code.payment is None:
            return "waiting"
        request_id = order_code.payment.payment_request_id
        results = [NotifyPaymentRequest.model_validate(r.body).payment_result for r in self._notices(request_id)]
        results += [e.response.result for e in self.payments(request_id) if e.response and e.response.result.is_final]
        if any(result.is_success for result in results):
            return "success"
        return "fail" if results else "processing"

    def _notices(self, payment_request_id: str) -> list[Received]:
        return self.peer.notifications(payment_request_id) if self.peer else []

    # --- addresses ------------------------------------------------------------------------

    def cashier_url(self, store_id: str) -> str:
        return f"{self.base_url}/sandbox/merchant/cashier/{store_id}"

    def result_url(self, reference_order_id: str) -> str:
        return f"{self.base_url}/sandbox/merchant/result?{urlencode({'referenceOrderId': reference_order_id})}"

    def alipayplus_url(self, code_value: str) -> str:
        """The "Alipay+ URL" the merchant redirects to and the client SDK intercepts (seed 003, step 14)."""
        return f"{self.base_url}/aplus/decode?{urlencode({'codeValue': code_value})}"

    def logo_url(self, name: str) -> str:
        return f"{self.base_url}/sandbox/logos/{logo_slug(name)}.svg"
