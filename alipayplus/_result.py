"""The ``result`` object every Alipay+ message carries, and the result codes."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from ._base import Message


class ResultStatus(StrEnum):
    SUCCESS = "S"
    FAIL = "F"
    UNKNOWN = "U"


class ResultCode(StrEnum):
    SUCCESS = "SUCCESS"
    PAYMENT_IN_PROCESS = "PAYMENT_IN_PROCESS"
    UNKNOWN_EXCEPTION = "UNKNOWN_EXCEPTION"
    REQUEST_TRAFFIC_EXCEED_LIMIT = "REQUEST_TRAFFIC_EXCEED_LIMIT"
    # transport and protocol
    PROCESS_FAIL = "PROCESS_FAIL"
    PARAM_ILLEGAL = "PARAM_ILLEGAL"
    INVALID_API = "INVALID_API"
    INVALID_CLIENT = "INVALID_CLIENT"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    ACCESS_DENIED = "ACCESS_DENIED"
    REPEAT_REQ_INCONSISTENT = "REPEAT_REQ_INCONSISTENT"
    # payments
    ORDER_NOT_EXIST = "ORDER_NOT_EXIST"
    ORDER_IS_CLOSED = "ORDER_IS_CLOSED"
    PAYMENT_AMOUNT_EXCEED_LIMIT = "PAYMENT_AMOUNT_EXCEED_LIMIT"
    USER_AMOUNT_EXCEED_LIMIT = "USER_AMOUNT_EXCEED_LIMIT"
    PAYMENT_COUNT_EXCEED_LIMIT = "PAYMENT_COUNT_EXCEED_LIMIT"
    INVALID_TOKEN = "INVALID_TOKEN"
    EXPIRED_ACCESS_TOKEN = "EXPIRED_ACCESS_TOKEN"
    USER_BALANCE_NOT_ENOUGH = "USER_BALANCE_NOT_ENOUGH"
    USER_NOT_EXIST = "USER_NOT_EXIST"
    USER_STATUS_ABNORMAL = "USER_STATUS_ABNORMAL"
    USER_KYC_NOT_QUALIFIED = "USER_KYC_NOT_QUALIFIED"
    RISK_REJECT = "RISK_REJECT"
    UNAVAILABLE_PAYMENT_METHOD = "UNAVAILABLE_PAYMENT_METHOD"
    USER_PAYMENT_VERIFICATION_FAILED = "USER_PAYMENT_VERIFICATION_FAILED"
    MERCHANT_NOT_REGISTERED = "MERCHANT_NOT_REGISTERED"
    CURRENCY_NOT_SUPPORT = "CURRENCY_NOT_SUPPORT"
    BUSINESS_NOT_SUPPORT = "BUSINESS_NOT_SUPPORT"
    # refunds and cancellation
    REFUND_AMOUNT_EXCEED = "REFUND_AMOUNT_EXCEED"
    ORDER_STATUS_INVALID = "ORDER_STATUS_INVALID"
    REFUND_WINDOW_EXCEED = "REFUND_WINDOW_EXCEED"
    CANCEL_WINDOW_EXCEED = "CANCEL_WINDOW_EXCEED"
    # applyToken (seed 003 names the refresh-token codes; the auth-code ones follow the same
    # family's EXPIRED_CODE/USED_* naming: spec §7.1 marks them unconfirmed)
    INVALID_CODE = "INVALID_CODE"
    USED_CODE = "USED_CODE"
    EXPIRED_CODE = "EXPIRED_CODE"
    INVALID_REFRESH_TOKEN = "INVALID_REFRESH_TOKEN"
    EXPIRED_REFRESH_TOKEN = "EXPIRED_REFRESH_TOKEN"
    # Alipay+ to its client SDK (sandbox): decode and sessions
    SESSION_EXPIRED = "SESSION_EXPIRED"
    # sendOtp and verifyOtp (Auto Debit risk challenge): the docs' digest names no codes of their own
    OTP_SEND_TOO_FREQUENTLY = "OTP_SEND_TOO_FREQUENTLY"  # [inferred] daily limit or resend gap
    OTP_EXPIRED = "OTP_EXPIRED"  # [inferred] verifyRequestId unknown, another user's, used or expired


_STATUS = {
    ResultCode.SUCCESS: ResultStatus.SUCCESS,
    ResultCode.PAYMENT_IN_PROCESS: ResultStatus.UNKNOWN,
    ResultCode.UNKNOWN_EXCEPTION: ResultStatus.UNKNOWN,
    ResultCode.REQUEST_TRAFFIC_EXCEED_LIMIT: ResultStatus.UNKNOWN,
}

_MESSAGES = {
    ResultCode.SUCCESS: "Success",
    ResultCode.PAYMENT_IN_PROCESS: "payment in process",
    ResultCode.UNKNOWN_EXCEPTION: "An unknown exception occurred; retry with the same request",
    ResultCode.INVALID_SIGNATURE: "The signature is invalid",
    ResultCode.INVALID_CLIENT: "The Client-Id is invalid",
    ResultCode.KEY_NOT_FOUND: "No key is registered for this Client-Id and keyVersion",
    ResultCode.REPEAT_REQ_INCONSISTENT: "The request repeats an idempotency key with different key fields",
    ResultCode.PROCESS_FAIL: "The request could not be processed; it will not succeed if sent again",
    ResultCode.ORDER_NOT_EXIST: "The order does not exist",
    ResultCode.ORDER_IS_CLOSED: "The order is closed",
    ResultCode.PAYMENT_AMOUNT_EXCEED_LIMIT: "The amount exceeds the single payment limit",
    ResultCode.USER_AMOUNT_EXCEED_LIMIT: "The amount exceeds the user's accumulated limit",
    ResultCode.USER_BALANCE_NOT_ENOUGH: "The user's balance is not enough",
    ResultCode.USER_NOT_EXIST: "The user does not exist",
    ResultCode.USER_STATUS_ABNORMAL: "The user's account is not active",
    ResultCode.USER_PAYMENT_VERIFICATION_FAILED: "The user did not pass verification",
    ResultCode.CURRENCY_NOT_SUPPORT: "The currency is not supported for this account",
    ResultCode.BUSINESS_NOT_SUPPORT: "This business is not supported",
    ResultCode.INVALID_TOKEN: "The access token is invalid",
    ResultCode.REFUND_AMOUNT_EXCEED: "The refunds would exceed the amount paid",
    ResultCode.ORDER_STATUS_INVALID: "Only a successful payment can be refunded",
    ResultCode.REFUND_WINDOW_EXCEED: "The refund window of this payment has passed",
    ResultCode.CANCEL_WINDOW_EXCEED: "The cancellation window (00:30 UTC+8 on T+1) has passed; refund instead",
    ResultCode.INVALID_CODE: "The code is not valid",
    ResultCode.USED_CODE: "The authorization code has already been used",
    ResultCode.EXPIRED_CODE: "The code has expired",
    ResultCode.INVALID_REFRESH_TOKEN: "The refresh token is invalid",
    ResultCode.EXPIRED_REFRESH_TOKEN: "The refresh token has expired",
    ResultCode.SESSION_EXPIRED: "The session has expired; create a new one",
    ResultCode.OTP_SEND_TOO_FREQUENTLY: "Too many OTPs requested for this access token; try again later",
    ResultCode.OTP_EXPIRED: "The verification request is unknown, used or expired; send a new OTP",
}


class Result(Message):
    result_status: ResultStatus
    result_code: str = Field(max_length=64)
    result_message: str | None = None

    @field_validator("result_status", mode="before")
    @classmethod
    def _upper(cls, status: object) -> object:
        # Alipay+'s own sample answers "u"; be lenient on what we receive.
        return status.upper() if isinstance(status, str) else status

    @classmethod
    def of(cls, code: ResultCode, message: str | None = None) -> Result:
        """The result for ``code``: its usual status (S/U/F) and message."""
        return cls(
            result_status=_STATUS.get(code, ResultStatus.FAIL),
            result_code=code,
            result_message=message or _MESSAGES.get(code, code.replace("_", " ").lower()),
        )

    @classmethod
    def success(cls) -> Result:
        return cls.of(ResultCode.SUCCESS)

    @property
    def is_success(self) -> bool:
        return self.result_status is ResultStatus.SUCCESS

    @property
    def is_final(self) -> bool:
        return self.result_status is not ResultStatus.UNKNOWN
