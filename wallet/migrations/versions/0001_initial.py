"""The initial schema: users, the double-entry ledger, payment records, OTPs, access tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Column types are the plain SQL types the models store (``UtcDateTime`` is a
``TIMESTAMP WITH TIME ZONE``, the enums are ``VARCHAR(16)``), so this file never has to
import application code.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("allow_negative", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        # the database itself refuses a negative balance where one is not allowed
        sa.CheckConstraint("allow_negative OR balance >= 0", name="ck_account_balance_not_negative"),
    )

    op.create_table(
        "wallet_user",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("login_id", sa.String(64), nullable=False),
        sa.Column("login_id_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("verification_method", sa.String(16), nullable=False),
        sa.Column("pin_digest", sa.String(64), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("single_payment_limit", sa.BigInteger(), nullable=False),
        sa.Column("daily_limit", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
        sa.UniqueConstraint("login_id", "login_id_type", name="uq_wallet_user_login"),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name="fk_wallet_user_account_id_account"),
    )
    op.create_index("ix_wallet_user_login_id", "wallet_user", ["login_id"])

    op.create_table(
        "posting",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        # a retried posting can never be applied twice
        sa.UniqueConstraint("idempotency_key", name="uq_posting_idempotency_key"),
    )
    op.create_index("ix_posting_reference", "posting", ["reference"])

    op.create_table(
        "entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("posting_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["posting_id"], ["posting.id"], name="fk_entry_posting_id_posting"),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name="fk_entry_account_id_account"),
    )
    op.create_index("ix_entry_posting_id", "entry", ["posting_id"])
    op.create_index("ix_entry_account_id", "entry", ["account_id"])

    op.create_table(
        "payment_record",
        sa.Column("payment_request_id", sa.String(64), nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("product", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result_code", sa.String(64), nullable=True),
        sa.Column("result_message", sa.String(), nullable=True),
        sa.Column("key_fields_digest", sa.String(64), nullable=False),
        sa.Column("payment_amount_currency", sa.String(3), nullable=False),
        sa.Column("payment_amount_value", sa.BigInteger(), nullable=False),
        sa.Column("pay_to_amount_currency", sa.String(3), nullable=False),
        sa.Column("pay_to_amount_value", sa.BigInteger(), nullable=False),
        sa.Column("payment_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payment_expiry_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redirect_url", sa.String(2048), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("payment_request_id"),
        sa.UniqueConstraint("payment_id", name="uq_payment_record_payment_id"),
    )

    op.create_table(
        "otp_challenge",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("payment_request_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("code_digest", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_otp_challenge_payment_request_id", "otp_challenge", ["payment_request_id"])

    op.create_table(
        "access_token",
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("reference_agreement_id", sa.String(64), nullable=False),
        sa.Column("auth_client_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("refresh_token_digest", sa.String(64), nullable=False),
        sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refresh_token_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_digest"),
        sa.UniqueConstraint("reference_agreement_id", name="uq_access_token_reference_agreement_id"),
        sa.UniqueConstraint("refresh_token_digest", name="uq_access_token_refresh_token_digest"),
    )


def downgrade() -> None:
    op.drop_table("access_token")
    op.drop_index("ix_otp_challenge_payment_request_id", table_name="otp_challenge")
    op.drop_table("otp_challenge")
    op.drop_table("payment_record")
    op.drop_index("ix_entry_account_id", table_name="entry")
    op.drop_index("ix_entry_posting_id", table_name="entry")
    op.drop_table("entry")
    op.drop_index("ix_posting_reference", table_name="posting")
    op.drop_table("posting")
    op.drop_index("ix_wallet_user_login_id", table_name="wallet_user")
    op.drop_table("wallet_user")
    op.drop_table("account")
