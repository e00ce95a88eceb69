"""NFC payments: the tap's token and custom data on the payment record (the app finds its payment by
the custom data), and the adjustRefund record (excess and unlinked refunds).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment_record") as table:
        table.add_column(sa.Column("nfc_token_reference_id", sa.String(64), nullable=True))
        table.add_column(sa.Column("nfc_custom_data", sa.String(28), nullable=True))
    op.create_index("ix_payment_record_nfc_custom_data", "payment_record", ["nfc_custom_data"])

    op.create_table(
        "adjust_refund_record",
        sa.Column("refund_request_id", sa.String(64), nullable=False),
        sa.Column("refund_id", sa.String(64), nullable=False),
        sa.Column("sub_scenario_type", sa.String(32), nullable=False),
        sa.Column("payment_request_id", sa.String(64), nullable=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("key_fields_digest", sa.String(64), nullable=False),
        sa.Column("result_code", sa.String(64), nullable=False),
        sa.Column("result_message", sa.String(), nullable=True),
        sa.Column("refund_amount_currency", sa.String(3), nullable=False),
        sa.Column("refund_amount_value", sa.BigInteger(), nullable=False),
        sa.Column("credited_currency", sa.String(3), nullable=True),
        sa.Column("credited_value", sa.BigInteger(), nullable=False),
        sa.Column("refund_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("refund_request_id"),
    )
    op.create_index("ix_adjust_refund_record_payment_request_id", "adjust_refund_record", ["payment_request_id"])
    op.create_index("ix_adjust_refund_record_customer_id", "adjust_refund_record", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_adjust_refund_record_customer_id", table_name="adjust_refund_record")
    op.drop_index("ix_adjust_refund_record_payment_request_id", table_name="adjust_refund_record")
    op.drop_table("adjust_refund_record")
    op.drop_index("ix_payment_record_nfc_custom_data", table_name="payment_record")
    with op.batch_alter_table("payment_record") as table:
        table.drop_column("nfc_custom_data")
        table.drop_column("nfc_token_reference_id")
