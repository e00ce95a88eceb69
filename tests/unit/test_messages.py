"""Wire rules: every scalar a string, optional fields omitted, amounts in integer minor units."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from alipayplus import Amount, PaymentFactor, PayRequest, Result, ResultCode, minor_unit_exponent
from sandbox.alipayplus.driver import sample_requests


def _scalars(value: object) -> list[object]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _scalars(v)]
    if isinstance(value, list):
        return [s for v in value for s in _scalars(v)]
    return [value]


def test_seed_samples_parse_and_serialise_as_strings_only() -> None:
    for raw in sample_requests():
        request = PayRequest.from_wire(raw)
        wire = json.loads(request.to_wire())
        assert all(isinstance(scalar, str) for scalar in _scalars(wire))
        assert "" not in _scalars(wire)  # the sample's "paymentMethodId": "" is read as absent, never sent
        assert wire["payToAmount"] == {"currency": "IDR", "value": "50"}


def test_flags_are_the_strings_true_and_false() -> None:
    assert PaymentFactor(is_agreement_payment=True).to_wire() == (
        b'{"isAgreementPayment":"true","isEasyPayScenario":"false","isPaymentEvaluation":"false",'
        b'"isAuthorizationAndPay":"false","isInStorePayment":"false","isCashierPayment":"false"}'
    )
    with pytest.raises(ValidationError):
        PaymentFactor.from_wire(b'{"isAgreementPayment": true}')


@pytest.mark.parametrize("value", ["50", '"1e309"', '"-1"', '"1.5"', '""', '"12345678901234567890"', "null"])
def test_amount_values_must_be_digit_strings(value: str) -> None:
    with pytest.raises(ValidationError) as error:
        Amount.from_wire(f'{{"currency": "IDR", "value": {value}}}')
    assert error.value.errors()[0]["loc"] == ("value",)


def test_amount_currency_must_be_iso_4217() -> None:
    with pytest.raises(ValidationError):
        Amount.from_wire('{"currency": "ZZZ", "value": "1"}')


@pytest.mark.parametrize(
    "currency,exponent,shown", [("JPY", 0, "JPY 5,000"), ("USD", 2, "USD 50.00"), ("KWD", 3, "KWD 5.000")]
)
def test_minor_units_follow_the_iso_4217_exponent(currency: str, exponent: int, shown: str) -> None:
    assert minor_unit_exponent(currency) == exponent
    assert str(Amount(currency=currency, value=5000)) == shown


def test_result_statuses_follow_their_codes() -> None:
    assert json.loads(Result.of(ResultCode.PAYMENT_IN_PROCESS).to_wire())["resultStatus"] == "U"
    assert Result.of(ResultCode.USER_BALANCE_NOT_ENOUGH).result_status == "F"
    assert Result.from_wire('{"resultStatus": "u", "resultCode": "PAYMENT_IN_PROCESS"}').result_status == "U"


def test_idempotency_digest_covers_key_fields_only() -> None:
    request = PayRequest.from_wire(sample_requests()[1])
    assert request.key_fields_digest() == request.model_copy(update={"pass_through_info": "other"}).key_fields_digest()
    changed = request.model_copy(update={"pay_to_amount": Amount(currency="IDR", value=51)})
    assert request.key_fields_digest() != changed.key_fields_digest()
