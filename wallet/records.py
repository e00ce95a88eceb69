"""The wallet's tables: users, the ledger, payment and refund records, OTPs, tokens, app sessions and auth codes.

Money columns hold integer minor units as BIGINT (IDR sums outgrow 32 bits), never floats.
Every datetime column is a ``UtcDateTime``: callers pass timezone-aware datetimes and always
read back aware UTC, on SQLite as on PostgreSQL. The schema is created by the Alembic migrations in
``wallet/migrations`` (``wallet.db.migrate``), not by ``create_all``.
"""

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    ForeignKeyConstraint,
    UniqueConstraint,
    true,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, Session, SQLModel, col, select

from alipayplus import Amount

from .states import AccountKind, PaymentStatus, UserStatus, VerificationMethod


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always comes back timezone-aware (UTC).

    SQLite has no time zones: SQLAlchemy would store an aware datetime's wall clock and
    drop its offset, so values are converted to UTC first and tagged UTC on the way out.
    Naive datetimes are refused: their meaning depends on the machine's clock settings.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime (e.g. datetime.now(UTC))")
        utc = value.astimezone(UTC)
        # SQLite would keep only the wall clock anyway; store it as naive UTC explicitly
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _string_enum(enum: type[StrEnum]) -> SqlEnum:
    # A VARCHAR holding the value, not a native PostgreSQL ENUM type: adding a member
    # later needs no DDL. Reads come back as enum members.
    return SqlEnum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


class Account(SQLModel, table=True):
    """A ledger account. Its balance moves only through balanced postings (see ``Ledger``)."""

    __tablename__ = "account"
    __table_args__ = (
        # The database itself refuses a negative balance where one is not allowed.
        CheckConstraint("allow_negative OR balance >= 0", name="ck_account_balance_not_negative"),
    )

    id: str = Field(primary_key=True, max_length=128)  # "user:…", "settlement:alipayplus:IDR", "funding:IDR"
    kind: AccountKind = Field(sa_type=_string_enum(AccountKind))
    currency: str = Field(max_length=3)
    balance: int = Field(default=0, sa_type=BigInteger)
    allow_negative: bool = Field(default=False)


class WalletUser(SQLModel, table=True):
    __tablename__ = "wallet_user"
    __table_args__ = (
        UniqueConstraint("login_id", "login_id_type", name="uq_wallet_user_login"),
        ForeignKeyConstraint(["account_id"], ["account.id"], name="fk_wallet_user_account_id_account"),
    )

    customer_id: str = Field(primary_key=True, max_length=64)
    login_id: str = Field(index=True, max_length=64)
    login_id_type: str = Field(max_length=32)  # "MOBILE", "EMAIL", …; stored upper case
    status: UserStatus = Field(sa_type=_string_enum(UserStatus))
    phone: str = Field(max_length=32)
    verification_method: VerificationMethod = Field(sa_type=_string_enum(VerificationMethod))
    pin_digest: str | None = Field(default=None, max_length=160)  # secrets.pin_verifier (older rows: keyed_digest)
    currency: str = Field(max_length=3)
    single_payment_limit: int = Field(sa_type=BigInteger)
    daily_limit: int = Field(sa_type=BigInteger)
    account_id: str = Field(max_length=128)
    kyc_verified: bool = Field(default=True, sa_column_kwargs={"server_default": true()})  # else USER_KYC_NOT_QUALIFIED
    daily_payment_count_limit: int = Field(default=100, sa_column_kwargs={"server_default": "100"})


class Posting(SQLModel, table=True):
    """One balanced movement of money; its entries sum to zero."""

    __tablename__ = "posting"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_posting_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200)
    kind: str = Field(max_length=32)  # "PAYMENT_DEBIT", "TOP_UP", …
    reference: str = Field(index=True, max_length=200)  # e.g. the paymentRequestId
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class Entry(SQLModel, table=True):
    __tablename__ = "entry"
    __table_args__ = (
        ForeignKeyConstraint(["posting_id"], ["posting.id"], name="fk_entry_posting_id_posting"),
        ForeignKeyConstraint(["account_id"], ["account.id"], name="fk_entry_account_id_account"),
    )

    id: int | None = Field(default=None, primary_key=True)
    posting_id: int = Field(index=True)
    account_id: str = Field(index=True, max_length=128)
    currency: str = Field(max_length=3)
    amount: int = Field(sa_type=BigInteger)  # signed: negative means money leaves the account


class PaymentRecord(SQLModel, table=True):
    """A payment's lasting state: what inquiryPayment answers from once its workflow is gone.

    The row also arbitrates races between a payment, its refunds and its cancellation: the
    debit, each refund and the cancel change it with conditional updates in the same
    transaction as their ledger posting. A cancel for a payment never seen leaves a
    tombstone (no amounts, ``cancelled_at`` set) so that a late pay is closed at once.
    """

    __tablename__ = "payment_record"
    __table_args__ = (UniqueConstraint("payment_id", name="uq_payment_record_payment_id"),)

    payment_request_id: str = Field(primary_key=True, max_length=64)
    payment_id: str | None = Field(default=None, max_length=64)
    product: str | None = Field(default=None, max_length=32)  # "EASY_PAY", …
    customer_id: str | None = Field(default=None, max_length=64)
    status: PaymentStatus = Field(sa_type=_string_enum(PaymentStatus))
    result_code: str | None = Field(default=None, max_length=64)  # paymentResult.resultCode
    result_message: str | None = Field(default=None)
    key_fields_digest: str | None = Field(default=None, max_length=64)  # sha256 hex of the idempotency key fields
    payment_amount_currency: str | None = Field(default=None, max_length=3)
    payment_amount_value: int | None = Field(default=None, sa_type=BigInteger)
    pay_to_amount_currency: str | None = Field(default=None, max_length=3)
    pay_to_amount_value: int | None = Field(default=None, sa_type=BigInteger)
    payment_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    payment_expiry_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    redirect_url: str | None = Field(default=None, max_length=2048)
    refunded_payment_value: int = Field(default=0, sa_type=BigInteger)  # sum of refundAmount (payment currency)
    refunded_pay_to_value: int = Field(default=0, sa_type=BigInteger)  # credited back to the user (payTo currency)
    cancelled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # NFC: the token tapped, and the custom data the phone put on the tap (upper-case hex) so the
    # app can find the payment its tap became (spec §10.1, step 10)
    nfc_token_reference_id: str | None = Field(default=None, max_length=64)
    nfc_custom_data: str | None = Field(default=None, index=True, max_length=28)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


def stored_amount(currency: str | None, value: int | None) -> Amount | None:
    """An amount from the records; a tombstone (cancelled before the payment came) has none."""
    return Amount(currency=currency, value=value) if currency and value is not None else None


def read_payment(engine: Engine, payment_request_id: str) -> PaymentRecord | None:
    """The payment's record as committed now (refunds and cancels reread it after losing a race)."""
    with Session(engine) as session:
        return session.get(PaymentRecord, payment_request_id)


def payment_by_custom_data(engine: Engine, customer_id: str, custom_data: str) -> PaymentRecord | None:
    """The customer's latest NFC payment whose tap carried ``custom_data`` (hex, any case)."""
    with Session(engine) as session:
        return session.exec(
            select(PaymentRecord)
            .where(
                col(PaymentRecord.nfc_custom_data) == custom_data.upper(),
                col(PaymentRecord.customer_id) == customer_id,
            )
            .order_by(col(PaymentRecord.created_at).desc())
        ).first()


class RefundRecord(SQLModel, table=True):
    """A refund's answer, kept so that a repeat of its refundRequestId gets the same one."""

    __tablename__ = "refund_record"

    refund_request_id: str = Field(primary_key=True, max_length=64)
    refund_id: str = Field(max_length=64)
    payment_request_id: str = Field(index=True, max_length=64)
    key_fields_digest: str = Field(max_length=64)
    result_code: str = Field(max_length=64)
    result_message: str | None = Field(default=None)
    credited_value: int = Field(default=0, sa_type=BigInteger)  # minor units of the payTo currency
    refund_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class AdjustRefundRecord(SQLModel, table=True):
    """An adjustRefund's answer and credit (spec §13.3), written with its ledger posting."""

    __tablename__ = "adjust_refund_record"

    refund_request_id: str = Field(primary_key=True, max_length=64)
    refund_id: str = Field(max_length=64)
    sub_scenario_type: str = Field(max_length=32)  # EXCEED_REFUND | UNLINKED_REFUND
    payment_request_id: str | None = Field(default=None, index=True, max_length=64)  # EXCEED_REFUND
    customer_id: str | None = Field(default=None, index=True, max_length=64)  # who was credited
    key_fields_digest: str = Field(max_length=64)
    result_code: str = Field(max_length=64)
    result_message: str | None = Field(default=None)
    refund_amount_currency: str = Field(max_length=3)
    refund_amount_value: int = Field(sa_type=BigInteger)  # as Alipay+ sent it
    credited_currency: str | None = Field(default=None, max_length=3)  # the user's account currency
    credited_value: int = Field(default=0, sa_type=BigInteger)
    refund_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class OtpChallenge(SQLModel, table=True):
    __tablename__ = "otp_challenge"

    id: str = Field(primary_key=True, max_length=64)
    payment_request_id: str = Field(index=True, max_length=64)
    customer_id: str = Field(max_length=64)
    code_digest: str = Field(max_length=64)  # keyed_digest(key, "otp", id, code); never the code
    expires_at: datetime = Field(sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    verified_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # a risk challenge's code, used once


class AccessToken(SQLModel, table=True):
    """An Easy Pay authorization. Tokens are kept only as sha256 digests (``token_digest``)."""

    __tablename__ = "access_token"
    __table_args__ = (
        UniqueConstraint("reference_agreement_id", name="uq_access_token_reference_agreement_id"),
        UniqueConstraint("refresh_token_digest", name="uq_access_token_refresh_token_digest"),
    )

    token_digest: str = Field(primary_key=True, max_length=64)
    reference_agreement_id: str = Field(max_length=64)
    auth_client_id: str = Field(max_length=64)
    customer_id: str = Field(max_length=64)
    refresh_token_digest: str = Field(max_length=64)
    access_token_expires_at: datetime = Field(sa_type=UtcDateTime)
    refresh_token_expires_at: datetime = Field(sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    agreement_id: str | None = Field(default=None, index=True, max_length=32)  # Agreement.id
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # cancelToken or the user unbound


class AgreementStatus(StrEnum):
    PREPARED = "PREPARED"  # prepare answered: waiting for our user's consent
    AUTHORIZED = "AUTHORIZED"  # the user consented: an authCode is out, waiting for applyToken
    ACTIVE = "ACTIVE"  # a token pair is out: the merchant may charge the user
    CANCELLED = "CANCELLED"  # revoked (cancelToken or the user unbound): no token of it works again


class Agreement(SQLModel, table=True):
    """A merchant's standing authorisation to charge one of our users without them (Auto Debit
    binding via prepare, or Easy Pay's one-click consent). One per authClientId + referenceAgreementId,
    the idempotency key of prepare (spec §1.9); its tokens name it (``agreement_id``)."""

    __tablename__ = "agreement"
    __table_args__ = (
        UniqueConstraint("auth_client_id", "reference_agreement_id", name="uq_agreement_client_reference"),
    )

    id: str = Field(primary_key=True, max_length=32)
    auth_client_id: str = Field(max_length=64)
    reference_agreement_id: str = Field(max_length=64)
    origin: str = Field(max_length=16)  # AUTO_DEBIT (prepare) or EASY_PAY (one-click consent)
    status: str = Field(max_length=16)  # AgreementStatus
    scopes: str = Field(max_length=128)  # space-separated Scope values
    auth_client_name: str | None = Field(default=None, max_length=256)
    reference_merchant_id: str | None = Field(default=None, max_length=64)
    auth_redirect_url: str | None = Field(default=None, max_length=2048)
    auth_state: str | None = Field(default=None, max_length=256)  # echoed in AUTHCODE_CREATED
    request_digest: str | None = Field(default=None, max_length=64)  # prepare's key fields
    acquirer_id: str | None = Field(default=None, max_length=64)
    psp_id: str | None = Field(default=None, max_length=64)
    customer_id: str | None = Field(default=None, index=True, max_length=64)  # set by the user's consent
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    authorized_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    cancelled_by: str | None = Field(default=None, max_length=16)  # MERCHANT (cancelToken) or USER (the app)


class AppSession(SQLModel, table=True):
    """A wallet app login. The bearer token is kept only as its sha256 digest."""

    __tablename__ = "app_session"

    token_digest: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(index=True, max_length=64)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class AuthCode(SQLModel, table=True):
    """An authCode the app handed Alipay+'s client SDK (seed 003, step 1.1): single use, short-lived."""

    __tablename__ = "auth_code"

    code_digest: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(max_length=64)
    scopes: str = Field(max_length=128)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # set once, by a conditional UPDATE
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    agreement_id: str | None = Field(default=None, max_length=32)  # an Auto Debit binding's code


class OAuthToken(SQLModel, table=True):
    """A token pair applyToken gave Alipay+ (seed 003, step 1.2), kept only as digests.

    A refresh retires the pair and names its successor, so the same old refresh token
    replayed within the grace period gets the same new pair back.
    """

    __tablename__ = "oauth_token"
    __table_args__ = (UniqueConstraint("refresh_token_digest", name="uq_oauth_token_refresh_token_digest"),)

    id: str = Field(primary_key=True, max_length=32)  # the tokens are derived from it with the server secret
    access_token_digest: str = Field(unique=True, max_length=64)
    refresh_token_digest: str = Field(max_length=64)
    customer_id: str = Field(index=True, max_length=64)
    scopes: str = Field(max_length=128)
    access_token_expires_at: datetime = Field(sa_type=UtcDateTime)
    refresh_token_expires_at: datetime = Field(sa_type=UtcDateTime)
    retired_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    successor_id: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    agreement_id: str | None = Field(default=None, index=True, max_length=32)  # an Auto Debit binding's pair
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # cancelToken or the user unbound


class TokenActivation(SQLModel, table=True):
    """A tokenActivationNotification as received (seed 002): one per tokenReferenceId."""

    __tablename__ = "token_activation"

    token_reference_id: str = Field(primary_key=True, max_length=64)
    customer_id: str | None = Field(default=None, index=True, max_length=64)
    wallet_id: str | None = Field(default=None, max_length=16)
    token_requestor_id: str | None = Field(default=None, max_length=16)
    secure_element_id: str | None = Field(default=None, max_length=128)
    account_source: str | None = Field(default=None, max_length=32)
    service_request_time: datetime = Field(sa_type=UtcDateTime)
    token_activated_time: datetime = Field(sa_type=UtcDateTime)
    token_data: str  # the tokenData object as received (JSON): seed 002 hides its fields
    notification_digest: str = Field(max_length=64)  # sha256 of the notification: a repeat must match
    received_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class CredentialCounter(SQLModel, table=True):
    """Wrong PINs and OTPs in a row for one subject: ``customer:{id}`` or ``address:{ip}`` (``credentials``)."""

    __tablename__ = "credential_counter"

    subject: str = Field(primary_key=True, max_length=80)
    failures: int = 0
    last_failure_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    blocked_until: datetime | None = Field(default=None, sa_type=UtcDateTime)  # backoff: no answer checked before
    locked_until: datetime | None = Field(default=None, sa_type=UtcDateTime)  # lockout


class CredentialFailure(SQLModel, table=True):
    """One counted wrong answer: a retried check with the same attempt key is not counted again."""

    __tablename__ = "credential_failure"

    attempt_key: str = Field(primary_key=True, max_length=200)
    subject: str = Field(primary_key=True, max_length=80)
    channel: str = Field(max_length=32)  # "login", "easypay", "nfc-activation", …
    verdict: str = Field(max_length=16)  # what the attempt was answered
    at: datetime = Field(sa_type=UtcDateTime)


class CredentialLockout(SQLModel, table=True):
    """Audit: every lockout, and who lifted it early."""

    __tablename__ = "credential_lockout"

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(index=True, max_length=80)
    channel: str = Field(max_length=32)  # where the failure that locked it was typed
    failures: int
    locked_at: datetime = Field(sa_type=UtcDateTime)
    locked_until: datetime = Field(sa_type=UtcDateTime)
    lifted_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    lifted_by: str | None = Field(default=None, max_length=64)


class NfcTokenStatus(StrEnum):
    ACTIVE = "ACTIVE"
    LOCKED = "LOCKED"
    DELETED = "DELETED"


class NfcToken(SQLModel, table=True):
    """Whose an NFC token is: recorded by the activation that obtained it (``activation/{customer}/{device}``).

    The token's workflow stays the record of its state; ``status`` mirrors it so that a tap's pay can
    be cross-checked without asking the workflow (spec §18 item 6: the token table)."""

    __tablename__ = "nfc_token"

    token_reference_id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(index=True, max_length=64)
    device_id: str | None = Field(default=None, max_length=64)  # None: known from Alipay+'s notice only
    status: NfcTokenStatus = Field(default=NfcTokenStatus.ACTIVE, sa_type=_string_enum(NfcTokenStatus))
    recorded_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class NfcDevice(SQLModel, table=True):
    """A device a customer started an activation on: the per-customer quota counts these."""

    __tablename__ = "nfc_device"

    customer_id: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(primary_key=True, max_length=64)
    started_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    released_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # its token deleted: a free slot


class NfcTap(SQLModel, table=True):
    """One ATC of a token, paid once: a second pay with the same ATC is a replayed tap."""

    __tablename__ = "nfc_tap"

    token_reference_id: str = Field(primary_key=True, max_length=64)
    atc: int = Field(primary_key=True)
    payment_request_id: str = Field(max_length=64)


class DeliveryAttempt(SQLModel, table=True):
    """One call of a notifyPayment / authNotify delivery and how Alipay+ answered it (``wallet.delivery_log``).

    Never the message, a token or a person's data: authNotify's request carries the tokens. One row per
    activity run: a second execution of the same run's activity (``run_id``, ``activity_id``) adds none."""

    __tablename__ = "delivery_attempt"
    __table_args__ = (UniqueConstraint("run_id", "activity_id", name="uq_delivery_attempt_run_activity"),)

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(index=True, max_length=128)  # the workflow id: notify/… or auth/…
    kind: str = Field(max_length=16)  # notifyPayment, authNotify
    run_id: str = Field(max_length=64)
    activity_id: str = Field(max_length=64)
    attempted_at: datetime = Field(sa_type=UtcDateTime)
    answer: str = Field(max_length=16)  # S, F, U, NO_ANSWER
    result_code: str | None = Field(default=None, max_length=64)
    detail: str = Field(max_length=200)  # e.g. "S/SUCCESS" or why there was no answer, truncated
    latency_ms: int
