"""NFC: the tokenActivationNotification record, one per tokenReferenceId.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "token_activation",
        sa.Column("token_reference_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("wallet_id", sa.String(16), nullable=True),
        sa.Column("token_requestor_id", sa.String(16), nullable=True),
        sa.Column("secure_element_id", sa.String(128), nullable=True),
        sa.Column("account_source", sa.String(32), nullable=True),
        sa.Column("service_request_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_activated_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_data", sa.String(), nullable=False),
        sa.Column("notification_digest", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_reference_id"),
    )
    op.create_index("ix_token_activation_customer_id", "token_activation", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_token_activation_customer_id", table_name="token_activation")
    op.drop_table("token_activation")
