"""Wire rules: every scalar a string, optional fields omitted, amounts in integer minor units."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from alipayplus import (
    Amount,
    ApplyTokenRequest,
    CancelPaymentRequest,
    InquiryPaymentRequest,
    Message,
    PaymentFactor,
    PayRequest,
    PayResponse,
    RefundRequest,
    Result,
    ResultCode,
    minor_unit_exponent,
)
from alipayplus.nfc import AdjustRefundRequest, TokenActivationNotificationRequest
from api.inbound import describe
from sandbox.alipayplus.driver import sample_requests
from tests.api.conftest import BodyEdit, set_at
from wallet.records import PaymentRecord


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


# --- input that can never succeed is refused by the types, naming the field ------------------


def _pay(*edits: BodyEdit) -> PayRequest:
    """Seed 004's order sample with ``edits`` applied, parsed as it arrives over the wire."""
    body = json.loads(sample_requests()[1])
    for edit in edits:
        edit(body)
    return PayRequest.from_wire(json.dumps(body), inbound=True)


def _token_notice(**fields: object) -> TokenActivationNotificationRequest:
    body = {
        "tokenReferenceId": "DAPLMC0123456789",
        "serviceRequestTime": "2026-11-22T12:01:01+08:00",
        "tokenActivatedTime": "2026-11-22T12:01:27+08:00",
        "tokenData": {"tokenPanSuffix": "4321"},
        **fields,
    }
    return TokenActivationNotificationRequest.from_wire(json.dumps(body), inbound=True)


def _refused(error: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    """(the field's wire path, why) as PARAM_ILLEGAL's resultMessage will say it (``describe``)."""
    field, _, why = describe(error.value).partition(": ")
    return field, why


OUT_OF_RANGE = "must be between 2000-01-01 and 2100-01-01 (UTC)"


@pytest.mark.parametrize(
    "sent",
    [
        "0001-01-01T00:00:00+14:00",  # parses, but is before datetime.min once in UTC
        "9999-12-31T23:59:59-14:00",  # parses, but is after datetime.max once in UTC
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
        "2000-01-01T07:59:59+08:00",  # 1999-12-31T23:59:59Z
        "2100-01-01T00:00:00Z",
        "2100-01-01T08:00:00+08:00",  # 2100-01-01T00:00:00Z
        "2999-01-01T00:00:00+08:00",
    ],
)
def test_a_time_outside_the_accepted_range_is_refused_naming_the_field(sent: str) -> None:
    with pytest.raises(ValidationError) as expiry:
        _pay(set_at("paymentExpiryTime", sent))
    with pytest.raises(ValidationError) as requested:
        _token_notice(serviceRequestTime=sent)
    with pytest.raises(ValidationError) as activated:
        _token_notice(tokenActivatedTime=sent)

    assert _refused(expiry) == ("paymentExpiryTime", OUT_OF_RANGE)
    assert _refused(requested) == ("serviceRequestTime", OUT_OF_RANGE)
    assert _refused(activated) == ("tokenActivatedTime", OUT_OF_RANGE)


@pytest.mark.parametrize(
    "sent",
    [
        "2000-01-01T00:00:00Z",
        "2000-01-01T08:00:00+08:00",
        "2000-01-01T00:00:00-14:00",
        "2099-12-31T23:59:59.999999Z",
        "2100-01-01T07:59:59+08:00",
        "2023-09-18T09:47:51+08:00",
    ],
)
def test_a_time_within_the_range_is_kept_with_its_own_offset(sent: str) -> None:
    expiry = _pay(set_at("paymentExpiryTime", sent)).payment_expiry_time

    assert expiry == datetime.fromisoformat(sent)
    assert expiry is not None and expiry.utcoffset() == datetime.fromisoformat(sent).utcoffset()
    assert _token_notice(tokenActivatedTime=sent).token_activated_time == datetime.fromisoformat(sent)


def test_times_we_build_ourselves_need_an_offset_but_no_calendar_range() -> None:
    """The range is a rule for requests to this MPP; our own times follow the workflow clock, which
    the time-skipping test server runs decades ahead, and peers and Temporal read them back."""
    late = datetime(2120, 1, 1, tzinfo=UTC)
    assert PayResponse(result=Result.success(), payment_time=late).payment_time == late
    assert PayResponse.model_validate_json(PayResponse(result=Result.success(), payment_time=late).to_wire())
    assert PayResponse.from_wire(PayResponse(result=Result.success(), payment_time=late).to_wire())  # Alipay+ reads
    with pytest.raises(ValidationError) as from_a_peer:
        PayResponse.from_wire(PayResponse(result=Result.success(), payment_time=late).to_wire(), inbound=True)
    with pytest.raises(ValidationError) as naive:
        PayResponse(result=Result.success(), payment_time=datetime(2026, 1, 1))
    assert _refused(from_a_peer) == ("paymentTime", OUT_OF_RANGE)
    assert _refused(naive) == ("payment_time", "must carry a UTC offset")


IDENTIFIERS = {  # the wire path of an id-like field of the order sample, and its value there
    "paymentRequestId": ("paymentRequestId",),
    "acquirerId": ("acquirerId",),
    "order.referenceOrderId": ("order", "referenceOrderId"),
    "order.merchant.referenceMerchantId": ("order", "merchant", "referenceMerchantId"),
    "order.merchant.merchantMCC": ("order", "merchant", "merchantMCC"),
    "paymentMethod.paymentMethodType": ("paymentMethod", "paymentMethodType"),
    "paymentMethod.paymentMethodMetaData.userLoginId": ("paymentMethod", "paymentMethodMetaData", "userLoginId"),
    "paymentMethod.paymentMethodMetaData.userLoginIdType": (
        "paymentMethod",
        "paymentMethodMetaData",
        "userLoginIdType",
    ),
    "authorizationInfo.referenceAgreementId": ("authorizationInfo", "referenceAgreementId"),
    "paymentRedirectUrl": ("paymentRedirectUrl",),
}


def inside(path: tuple[str, ...], character: str) -> BodyEdit:
    """An edit putting ``character`` into the middle of the string at ``path``."""

    def change(body: dict[str, Any]) -> None:
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = parent[path[-1]][:3] + character + parent[path[-1]][3:]

    return change


@pytest.mark.parametrize("character", ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f"])
@pytest.mark.parametrize("field", list(IDENTIFIERS))
def test_a_control_character_in_an_identifier_is_refused_naming_the_field(field: str, character: str) -> None:
    with pytest.raises(ValidationError) as error:
        _pay(inside(IDENTIFIERS[field], character))

    named, message = _refused(error)
    assert named == field
    assert message == f"must not contain control characters (U+{ord(character):04X} at position 3)"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (set_at("paymentMethod", "paymentMethodId", "abc\x00def"), "paymentMethod.paymentMethodId"),
        (set_at("paymentMethod", "customerId", "2160\n2200"), "paymentMethod.customerId"),
        (set_at("paymentNotifyUrl", "https://acquirer.example/\r\nX-Injected: 1"), "paymentNotifyUrl"),
        (set_at("paymentQuote", {"quoteId": "Q\x7f1"}), "paymentQuote.quoteId"),
        (set_at("order", "env", {"clientIp": "10.0.0.1\x00"}), "order.env.clientIp"),
    ],
    ids=["paymentMethodId", "customerId", "paymentNotifyUrl", "quoteId", "clientIp"],
)
def test_optional_identifiers_refuse_control_characters_too(edit: BodyEdit, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        _pay(edit)
    assert _refused(error)[0] == field and "control characters" in _refused(error)[1]


@pytest.mark.parametrize(
    ("notice", "field"),
    [
        ({"tokenReferenceId": "DAPL\x00MC"}, "tokenReferenceId"),
        ({"customerId": "2160\n220037535021"}, "customerId"),
        ({"walletId": "21\x006"}, "walletId"),
        ({"tokenRequestorId": "5011\t0030273"}, "tokenRequestorId"),
        ({"secureElementId": "SE\x7f1"}, "secureElementId"),
    ],
)
def test_the_nfc_identifiers_refuse_control_characters(notice: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        _token_notice(**notice)
    assert _refused(error)[0] == field and "control characters" in _refused(error)[1]


@pytest.mark.parametrize(
    "path",
    [
        ("order", "orderDescription"),
        ("order", "merchant", "merchantName"),
        ("authorizationInfo", "authState"),
        ("extendInfo",),
        ("passThroughInfo",),
    ],
)
def test_a_nul_in_free_text_is_refused_naming_the_field(path: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as error:
        _pay(inside(path, "\x00"))

    assert _refused(error) == (".".join(path), "must not contain NUL (U+0000 at position 3)")


def test_free_text_keeps_other_characters_identifiers_keep_spaces_and_unicode() -> None:
    request = _pay(
        set_at("order", "orderDescription", "Two\tkopi\r\nand a kaya toast"),
        set_at("paymentMethod", "paymentMethodMetaData", "userLoginId", "chan tai man@例え.jp"),
    )
    assert request.order.order_description == "Two\tkopi\r\nand a kaya toast"
    assert request.payment_method.payment_method_meta_data is not None
    assert request.payment_method.payment_method_meta_data.user_login_id == "chan tai man@例え.jp"


def test_a_nul_anywhere_in_token_data_is_refused() -> None:
    with pytest.raises(ValidationError) as error:
        _token_notice(tokenData={"tokenPanSuffix": "4321", "nested": {"list": ["ok", "n\x00"]}})
    assert _refused(error) == ("tokenData", "must not contain NUL (U+0000), found in 'nested'")
    assert _token_notice(tokenData={"nested": {"list": ["ok"]}}).token_data.model_extra == {"nested": {"list": ["ok"]}}


def test_other_requests_refuse_a_nul_in_their_ids_and_text() -> None:
    refund = {
        "acquirerId": "1022188000000000001",
        "pspId": "1022160000000000000",
        "paymentRequestId": "PR-1",
        "paymentId": "P-1",
        "refundRequestId": "RR-\x00",
        "refundAmount": {"currency": "IDR", "value": "1"},
    }
    cases: list[tuple[type[Message], dict[str, Any], str]] = [
        (RefundRequest, refund, "refundRequestId"),
        (RefundRequest, {**refund, "refundRequestId": "RR-1", "refundReason": "\x00"}, "refundReason"),
        (CancelPaymentRequest, {**refund, "paymentRequestId": "PR-\x00"}, "paymentRequestId"),
        (InquiryPaymentRequest, {**refund, "paymentRequestId": "PR-\x00"}, "paymentRequestId"),
        (
            AdjustRefundRequest,
            {**refund, "refundRequestId": "AR-\x00", "subScenarioType": "UNLINKED_REFUND", "customerId": "1"},
            "refundRequestId",
        ),
        (
            ApplyTokenRequest,
            {**refund, "grantType": "AUTHORIZATION_CODE", "authCode": "663A\x008FA9"},
            "authCode",
        ),
        (
            ApplyTokenRequest,
            {**refund, "grantType": "REFRESH_TOKEN", "refreshToken": "r\x00"},
            "refreshToken",
        ),
    ]
    for message, body, field in cases:
        with pytest.raises(ValidationError) as error:
            message.from_wire(json.dumps(body))
        assert _refused(error)[0] == field, (message, field)


@pytest.mark.parametrize("field", ["paymentRedirectUrl", "paymentNotifyUrl"])
def test_a_url_longer_than_its_column_is_refused_naming_the_field(field: str) -> None:
    column = PaymentRecord.__table__.columns["redirect_url"].type.length  # type: ignore[attr-defined]
    longest = "https://acquirer.example/result?order=" + "x" * (column - 38)
    assert len(longest) == column == 2048

    with pytest.raises(ValidationError) as error:
        _pay(set_at(field, longest + "x"))
    accepted = json.loads(_pay(set_at(field, longest)).to_wire())

    assert _refused(error) == (field, "String should have at most 2048 characters")
    assert accepted[field] == longest
