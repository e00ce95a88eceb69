"""NFC token ownership: the token table (owner, device, status mirror), the devices a customer
activates on (the quota) and the ATCs paid (a replayed tap is refused).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "nfc_token",
        sa.Column("token_reference_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_reference_id"),
    )
    op.create_index("ix_nfc_token_customer_id", "nfc_token", ["customer_id"])
    op.create_table(
        "nfc_device",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("customer_id", "device_id"),
    )
    op.create_table(
        "nfc_tap",
        sa.Column("token_reference_id", sa.String(64), nullable=False),
        sa.Column("atc", sa.Integer(), nullable=False),
        sa.Column("payment_request_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("token_reference_id", "atc"),
    )


def downgrade() -> None:
    op.drop_table("nfc_tap")
    op.drop_table("nfc_device")
    op.drop_index("ix_nfc_token_customer_id", table_name="nfc_token")
    op.drop_table("nfc_token")
