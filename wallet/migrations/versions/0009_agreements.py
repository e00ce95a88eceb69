"""Agreements: Auto Debit bindings (prepare, consent, applyToken) and Easy Pay one-click consents,
their revocation (cancelToken, the user unbinding in the app), and the tokens that name them.

Every existing Easy Pay access token gets the agreement it stood for, active. Users gain the KYC and
payments-a-day checks every pay makes (spec §2.5).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agreement",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("auth_client_id", sa.String(64), nullable=False),
        sa.Column("reference_agreement_id", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scopes", sa.String(128), nullable=False),
        sa.Column("auth_client_name", sa.String(256), nullable=True),
        sa.Column("reference_merchant_id", sa.String(64), nullable=True),
        sa.Column("auth_redirect_url", sa.String(2048), nullable=True),
        sa.Column("auth_state", sa.String(256), nullable=True),
        sa.Column("request_digest", sa.String(64), nullable=True),
        sa.Column("acquirer_id", sa.String(64), nullable=True),
        sa.Column("psp_id", sa.String(64), nullable=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("authorized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("auth_client_id", "reference_agreement_id", name="uq_agreement_client_reference"),
    )
    op.create_index("ix_agreement_customer_id", "agreement", ["customer_id"])
    for table in ("access_token", "oauth_token"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("agreement_id", sa.String(32), nullable=True))
            batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
            batch.create_index(f"ix_{table}_agreement_id", ["agreement_id"])
    with op.batch_alter_table("auth_code") as batch:
        batch.add_column(sa.Column("agreement_id", sa.String(32), nullable=True))
    # The risk challenge (verifyOtp): a code is used once, and a retry of that same verify is answered alike
    with op.batch_alter_table("otp_challenge") as batch:
        batch.add_column(sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
    # Every payment's checks (spec §2.5): KYC, and how many payments a day
    with op.batch_alter_table("wallet_user") as batch:
        batch.add_column(sa.Column("kyc_verified", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch.add_column(sa.Column("daily_payment_count_limit", sa.Integer(), server_default="100", nullable=False))
    # Easy Pay consents given before agreements existed: one active agreement each, named by the
    # first 32 characters of the token's digest (unique, as the digest is).
    op.execute(
        "INSERT INTO agreement (id, auth_client_id, reference_agreement_id, origin, status, scopes,"
        " customer_id, created_at, authorized_at)"
        " SELECT substr(token_digest, 1, 32), auth_client_id, reference_agreement_id, 'EASY_PAY', 'ACTIVE',"
        " 'AGREEMENT_PAY', customer_id, created_at, created_at FROM access_token"
    )
    op.execute("UPDATE access_token SET agreement_id = substr(token_digest, 1, 32)")


def downgrade() -> None:
    with op.batch_alter_table("otp_challenge") as batch:
        batch.drop_column("verified_at")
    with op.batch_alter_table("wallet_user") as batch:
        batch.drop_column("daily_payment_count_limit")
        batch.drop_column("kyc_verified")
    with op.batch_alter_table("auth_code") as batch:
        batch.drop_column("agreement_id")
    for table in ("oauth_token", "access_token"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_agreement_id")
            batch.drop_column("revoked_at")
            batch.drop_column("agreement_id")
    op.drop_index("ix_agreement_customer_id", table_name="agreement")
    op.drop_table("agreement")
