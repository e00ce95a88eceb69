"""A payment order's steps: account checks, the ledger, records and user verification.

Thin: each one is a single side effect with a stable idempotency key, so a retry after
a crash repeats nothing. Synchronous (SQL); the worker runs them in a thread pool.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import Engine, func, insert, select, update
from sqlmodel import Session, col
from temporalio.exceptions import ApplicationError

from alipayplus import Amount, PayRequest, PayResponse, Result, ResultCode
from wallet.agreements import Agreements
from wallet.credentials import Attempt, Credentials
from wallet.evaluation import evaluate_account
from wallet.ledger import InsufficientFunds, Ledger, PostingRefused
from wallet.nfc_tokens import NfcTokens, tap_result_code
from wallet.oauth import access_token_owner
from wallet.records import Agreement, AgreementStatus, OtpChallenge, PaymentRecord, WalletUser
from wallet.secrets import keyed_digest, pin_verifier_matches
from wallet.sms import SmsGateway
from wallet.states import PaymentStatus, VerificationMethod
from wallet.telemetry.metrics import NFC_TAPS
from wallet.users import UserStore


class AccountCheck(BaseModel):
    """Who pays and whether they can: the answer to pay #1 and the first step of pay #2."""

    result_code: ResultCode
    customer_id: str | None = None
    verification_method: VerificationMethod | None = None
    phone_hint: str | None = None
    agreement_id: str | None = None  # Auto Debit: the agreement whose token names the payer


def evaluation_answer(request: PayRequest, check: AccountCheck) -> PayResponse:
    """pay #1's answer: the account check's result, the payer and the amounts asked about."""
    return PayResponse(
        result=Result.of(check.result_code),
        payment_request_id=request.payment_request_id,
        customer_id=check.customer_id,
        payment_amount=request.payment_amount,
        pay_to_amount=request.pay_to_amount,
    )


class PaymentRecordUpdate(BaseModel):
    request: PayRequest
    now: datetime  # the workflow's clock: the payment's own times follow it, so windows are consistent
    payment_id: str
    product: str
    status: PaymentStatus
    customer_id: str | None = None
    result_code: ResultCode | None = None
    result_message: str | None = None
    payment_time: datetime | None = None
    payment_expiry_time: datetime | None = None


class PayerCheck(StrEnum):
    """How a product's pay names its payer."""

    LOGIN = "login"  # Easy Pay: the login (or our customer id) the user gave at checkout
    ACCESS_TOKEN = "access-token"  # MPM: the access token our applyToken gave Alipay+
    CUSTOMER = "customer"  # NFC: the customer the acquirer turned the tapped token into
    AGREEMENT = "agreement"  # Auto Debit: the agreement's access token (paymentMethodId) we issued


class OrderOpening(BaseModel):
    """A new payment order: check its payer, then record it (``record.status`` PROCESSING)."""

    payer: PayerCheck
    record: PaymentRecordUpdate


class OrderOpened(BaseModel):
    check: AccountCheck
    status: PaymentStatus | None = None  # as recorded (CLOSED if Alipay+ cancelled first); None: refused, not recorded


class OtpRequest(BaseModel):
    challenge_id: str
    payment_request_id: str
    customer_id: str
    amount: Amount
    merchant_name: str | None = None


class OtpSent(BaseModel):
    challenge_id: str
    sent_to: str
    expires_at: datetime


class CodeCheck(BaseModel):
    customer_id: str
    method: VerificationMethod
    challenge_id: str | None
    code_digest: str


class CodeAttempt(CodeCheck):
    """A typed PIN or OTP, counted once under ``attempt_key`` however often the check is retried."""

    attempt_key: str


class DebitRequest(BaseModel):
    payment_request_id: str
    customer_id: str
    amount: Amount
    paid_at: datetime  # the workflow's clock; the refund and cancel windows count from it
    agreement_id: str | None = None  # Auto Debit: debited only while this agreement is still active


class DebitResult(BaseModel):
    result_code: ResultCode
    payment_time: datetime | None = None


def otp_code(secret_key: bytes, challenge_id: str) -> str:
    """Six digits derived from the challenge: an activity retry re-sends the same code."""
    mac = hmac.new(secret_key, f"otp-code:{challenge_id}".encode(), "sha256").digest()
    return f"{int.from_bytes(mac[:8], 'big') % 1_000_000:06d}"


def mask_phone(phone: str) -> str:
    return phone[:4] + "*" * max(len(phone) - 8, 0) + phone[-4:]


@dataclass(frozen=True)
class Payers:
    """Who pays and whether they can, as of now: reads only, no money moves (pay #1, answered by
    the API itself, and the first step of every payment order)."""

    users: UserStore
    ledger: Ledger
    agreements: Agreements

    def check_login(self, request: PayRequest) -> AccountCheck:
        """Easy Pay: the payer by ``paymentMethodId`` (our customer id) or the login given at checkout.
        When ``paymentMethodId`` is an agreement token of ours (a returning one-click user), the token
        names the payer: it must be live, and the login given, if any, must be its user's."""
        token = request.payment_method.payment_method_id
        agreement = self.agreements.token_owner(token) if token else None
        metadata = request.payment_method.payment_method_meta_data
        login_id = metadata.user_login_id if metadata else None
        login_id_type = metadata.user_login_id_type if metadata else None
        if agreement is not None and agreement.customer_id is not None:
            if agreement.result_code is not ResultCode.SUCCESS:
                return AccountCheck(result_code=agreement.result_code)
            named = self.users.find(None, login_id, login_id_type) if login_id else None
            if login_id and (named is None or named.customer_id != agreement.customer_id):
                return AccountCheck(result_code=ResultCode.INVALID_TOKEN)
            user = self.users.get(agreement.customer_id)
        else:
            user = self.users.find(request.payment_method.payment_method_id, login_id, login_id_type)
        if user is None:
            return AccountCheck(result_code=ResultCode.USER_NOT_EXIST)
        return AccountCheck(
            result_code=self.standing(user, request.pay_to_amount),
            customer_id=user.customer_id,
            verification_method=VerificationMethod(user.verification_method),
            phone_hint=mask_phone(user.phone),
        )

    def check_agreement(self, request: PayRequest) -> AccountCheck:
        """Auto Debit: the agreement token in ``paymentMethodId`` names the payer
        (``paymentMethod.customerId``, if sent, must be the same user), then the same checks as every payer."""
        owner = self.agreements.token_owner(request.payment_method.payment_method_id or "")
        if owner.result_code is not ResultCode.SUCCESS:
            return AccountCheck(result_code=owner.result_code)
        named = request.payment_method.customer_id
        if named and named != owner.customer_id:
            return AccountCheck(result_code=ResultCode.INVALID_TOKEN)
        check = self.check_customer(owner.customer_id, request.pay_to_amount)
        return check.model_copy(update={"agreement_id": owner.agreement_id})

    def check_customer(self, customer_id: str | None, amount: Amount) -> AccountCheck:
        user = self.users.get(customer_id) if customer_id else None
        if user is None:
            return AccountCheck(result_code=ResultCode.USER_NOT_EXIST)
        return AccountCheck(
            result_code=self.standing(user, amount), customer_id=user.customer_id, phone_hint=mask_phone(user.phone)
        )

    def standing(self, user: WalletUser, amount: Amount) -> ResultCode:
        """Status, currency, limits and balance, as of now."""
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        debited_today, payments_today = self.ledger.debits_since(user.account_id, midnight)
        return evaluate_account(
            user,
            amount,
            debited_today=debited_today,
            balance=self.ledger.balance(user.account_id),
            payments_today=payments_today,
        )


@dataclass
class Payments:
    engine: Engine
    ledger: Ledger
    users: UserStore
    secret_key: bytes
    sms: SmsGateway
    otp_ttl: timedelta
    credentials: Credentials
    nfc_tokens: NfcTokens

    @property
    def payers(self) -> Payers:
        return Payers(self.users, self.ledger, self.agreements)

    @property
    def agreements(self) -> Agreements:
        return Agreements(self.engine, self.secret_key)

    def check_account(self, request: PayRequest) -> AccountCheck:
        """Does the account exist, is it active, within limits, with enough balance? No money moves."""
        return self.payers.check_login(request)

    def check_agreement_account(self, request: PayRequest) -> AccountCheck:
        """Auto Debit: the payer is the user of the agreement token in ``paymentMethodId``."""
        return self.payers.check_agreement(request)

    def check_token_account(self, request: PayRequest) -> AccountCheck:
        """MPM (seed 003, step 5): the payer is the customer of the access token our applyToken
        gave Alipay+ (``paymentMethodId``); ``paymentMethod.customerId`` must name the same one.
        Without a token, the signed request's ``customerId`` alone names the payer."""
        method = request.payment_method
        customer_id = method.customer_id
        if method.payment_method_id:
            owner = access_token_owner(self.engine, method.payment_method_id, datetime.now(UTC))
            if owner.result_code is not ResultCode.SUCCESS:
                return AccountCheck(result_code=owner.result_code)
            if customer_id and customer_id != owner.customer_id:
                return AccountCheck(result_code=ResultCode.INVALID_TOKEN)
            customer_id = owner.customer_id
        return self.payers.check_customer(customer_id, request.pay_to_amount)

    def check_customer_account(self, request: PayRequest) -> AccountCheck:
        """NFC (spec §10.1, step 15): the acquirer has turned the tapped token into our user,
        ``paymentMethod.customerId``; the tap is checked against our token record (owner, state,
        ATC used once), then the same checks as every payer; no money moves."""
        customer_id, tap = request.payment_method.customer_id, request.nfc_payment_info
        if tap is not None:
            refusal = self.nfc_tokens.tap_check(tap, customer_id, request.payment_request_id)
            if refusal is not None:
                NFC_TAPS.labels(outcome=refusal.value).inc()
                return AccountCheck(result_code=tap_result_code(refusal), customer_id=customer_id)
        check = self.payers.check_customer(customer_id, request.pay_to_amount)
        # accepted: on to the debit (whose answer PAYMENTS_FINISHED{product="NFC"} counts);
        # payer_refused: the account's checks (status, limits, balance) said no
        NFC_TAPS.labels(outcome="accepted" if check.result_code is ResultCode.SUCCESS else "payer_refused").inc()
        return check

    def open_order(self, opening: OrderOpening) -> OrderOpened:
        """A payment order's first step in one call: the payer check and, if it passes, the first
        record (a read, then one short write: on SQLite the read does not hold the write lock)."""
        checks = {
            PayerCheck.LOGIN: self.check_account,
            PayerCheck.ACCESS_TOKEN: self.check_token_account,
            PayerCheck.CUSTOMER: self.check_customer_account,
            PayerCheck.AGREEMENT: self.check_agreement_account,
        }
        change = opening.record
        check = checks[opening.payer](change.request)
        if check.result_code is not ResultCode.SUCCESS:
            return OrderOpened(check=check)
        recorded = change.model_copy(update={"customer_id": check.customer_id})
        return OrderOpened(check=check, status=self.record_payment(recorded))

    def record_payment(self, change: PaymentRecordUpdate) -> PaymentStatus:
        """Mirror the payment's state into the records inquiryPayment reads; returns the stored
        status, which stays CLOSED once Alipay+ has cancelled the payment (even before it came).

        Every write is conditional on no cancel, so a cancel that commits between this
        activity's statements is never overwritten, on PostgreSQL as on SQLite.
        """
        request = change.request
        tap = request.nfc_payment_info
        this_payment = col(PaymentRecord.payment_request_id) == request.payment_request_id
        mirrored = {
            "status": change.status,
            "customer_id": change.customer_id,
            "result_code": change.result_code,
            "result_message": change.result_message,
            "payment_expiry_time": change.payment_expiry_time,
            "updated_at": change.now,
        }
        # An opening write (PROCESSING) never replaces a final status: a workflow task retried after
        # the debit wrote SUCCESS runs its open again, and the record must stay as the debit left it.
        not_backwards = (
            [col(PaymentRecord.status) == PaymentStatus.PROCESSING] if change.status is PaymentStatus.PROCESSING else []
        )
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(PaymentRecord)
                .where(this_payment, col(PaymentRecord.cancelled_at).is_(None), *not_backwards)
                .values(**mirrored, payment_time=func.coalesce(col(PaymentRecord.payment_time), change.payment_time))
            ).rowcount
            if changed == 1:
                return change.status
            stored = connection.execute(select(col(PaymentRecord.status)).where(this_payment)).scalar()
            if stored is not None:
                return PaymentStatus(stored)  # cancelled: it stays closed; final: it stays final
            connection.execute(  # a concurrent tombstone makes this fail: the retry then sees it
                insert(PaymentRecord).values(
                    payment_request_id=request.payment_request_id,
                    payment_id=change.payment_id,
                    product=change.product,
                    key_fields_digest=request.key_fields_digest(),
                    payment_amount_currency=request.payment_amount.currency,
                    payment_amount_value=request.payment_amount.value,
                    pay_to_amount_currency=request.pay_to_amount.currency,
                    pay_to_amount_value=request.pay_to_amount.value,
                    redirect_url=request.payment_redirect_url,
                    payment_time=change.payment_time,
                    refunded_payment_value=0,
                    refunded_pay_to_value=0,
                    nfc_token_reference_id=tap.token_reference_id if tap else None,
                    nfc_custom_data=tap.custom_data if tap else None,
                    created_at=change.now,
                    **mirrored,
                )
            )
        return change.status

    def send_otp(self, request: OtpRequest) -> OtpSent:
        """Issue a one-time code for this challenge and text it to the user."""
        user = self.users.get(request.customer_id)
        if user is None:
            raise ApplicationError(f"unknown customer {request.customer_id}", non_retryable=True)
        code = otp_code(self.secret_key, request.challenge_id)
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            challenge = session.get(OtpChallenge, request.challenge_id)
            if challenge is None:
                challenge = OtpChallenge(
                    id=request.challenge_id,
                    payment_request_id=request.payment_request_id,
                    customer_id=request.customer_id,
                    code_digest=keyed_digest(self.secret_key, "otp", request.challenge_id, code),
                    expires_at=now + self.otp_ttl,
                    created_at=now,
                )
                session.add(challenge)
                session.commit()
                session.refresh(challenge)
            expires_at = challenge.expires_at
        merchant = f" at {request.merchant_name}" if request.merchant_name else ""
        self.sms.send(
            user.phone,
            f"{code} is your code to pay {request.amount}{merchant}. It expires in "
            f"{int(self.otp_ttl.total_seconds() // 60)} minutes. Never share it.",
            request.challenge_id,
        )
        return OtpSent(challenge_id=request.challenge_id, sent_to=mask_phone(user.phone), expires_at=expires_at)

    def verify_code(self, attempt: CodeAttempt) -> Attempt:
        """Check what the user typed against the PIN or the live OTP, under the account's guessing limits."""
        if attempt.method is VerificationMethod.PIN:
            return self.credentials.check_pin(attempt.customer_id, attempt.code_digest, attempt.attempt_key, "easypay")
        return self.credentials.check_otp(
            attempt.customer_id, attempt.challenge_id, attempt.code_digest, attempt.attempt_key, "easypay"
        )

    def check_code(self, check: CodeCheck) -> bool:
        """Before guesses were counted (``verify_code``): kept for a check a payment began then."""
        with Session(self.engine) as session:
            if check.method is VerificationMethod.PIN:
                user = session.get(WalletUser, check.customer_id)
                return pin_verifier_matches(user.pin_digest if user else None, check.code_digest)
            challenge = session.get(OtpChallenge, check.challenge_id) if check.challenge_id else None
        live = challenge is not None and challenge.expires_at > datetime.now(UTC)
        return live and challenge is not None and hmac.compare_digest(challenge.code_digest, check.code_digest)

    def debit(self, request: DebitRequest) -> DebitResult:
        """Move payToAmount from the user to the Alipay+ settlement account, exactly once."""
        user = self.users.get(request.customer_id)
        if user is None:
            return DebitResult(result_code=ResultCode.USER_NOT_EXIST)
        key = f"pay/{request.payment_request_id}/debit"
        if self.ledger.receipt(key) is None:  # a retry after the posting must not re-check the balance
            code = self.payers.standing(user, request.amount)
            if code is not ResultCode.SUCCESS:
                return DebitResult(result_code=code)
        paid_at = request.paid_at
        still_open = (  # a cancel that committed first closed the record: then nothing is debited
            update(PaymentRecord)
            .where(
                col(PaymentRecord.payment_request_id) == request.payment_request_id,
                col(PaymentRecord.status) == PaymentStatus.PROCESSING,
                col(PaymentRecord.cancelled_at).is_(None),
            )
            .values(  # the result too: an inquiry between the debit and the final record reads S
                status=PaymentStatus.SUCCESS,
                result_code=ResultCode.SUCCESS,
                result_message=None,
                payment_time=paid_at,
                updated_at=paid_at,
            )
        )
        conditions = [(still_open, "cancelled")]
        if request.agreement_id is not None:  # a revocation that commits first leaves nothing to debit
            still_bound = (
                update(Agreement)
                .where(col(Agreement.id) == request.agreement_id, col(Agreement.status) == AgreementStatus.ACTIVE)
                .values(status=AgreementStatus.ACTIVE)
            )
            conditions.append((still_bound, "revoked"))
        try:
            self.ledger.debit_user_to_settlement(
                key, request.payment_request_id, user.account_id, request.amount, conditions
            )
        except InsufficientFunds:
            return DebitResult(result_code=ResultCode.USER_BALANCE_NOT_ENOUGH)
        except PostingRefused as refused:
            revoked = refused.reason == "revoked"
            return DebitResult(result_code=ResultCode.INVALID_TOKEN if revoked else ResultCode.ORDER_IS_CLOSED)
        with Session(self.engine) as session:  # the time the record holds, also on a retry
            record = session.get(PaymentRecord, request.payment_request_id)
        return DebitResult(result_code=ResultCode.SUCCESS, payment_time=record.payment_time if record else paid_at)
