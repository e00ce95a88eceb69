"""Refunds and cancellation: refunded sums and cancellation on the payment record,
tombstones for cancels of payments never seen (so their payment fields become nullable),
and the refund record.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOMBSTONE_NULLABLE: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("payment_id", sa.String(64)),
    ("product", sa.String(32)),
    ("key_fields_digest", sa.String(64)),
    ("payment_amount_currency", sa.String(3)),
    ("payment_amount_value", sa.BigInteger()),
    ("pay_to_amount_currency", sa.String(3)),
    ("pay_to_amount_value", sa.BigInteger()),
]


def upgrade() -> None:
    with op.batch_alter_table("payment_record") as table:
        for name, type_ in _TOMBSTONE_NULLABLE:
            table.alter_column(name, existing_type=type_, nullable=True)
        table.add_column(sa.Column("refunded_payment_value", sa.BigInteger(), nullable=False, server_default="0"))
        table.add_column(sa.Column("refunded_pay_to_value", sa.BigInteger(), nullable=False, server_default="0"))
        table.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "refund_record",
        sa.Column("refund_request_id", sa.String(64), nullable=False),
        sa.Column("refund_id", sa.String(64), nullable=False),
        sa.Column("payment_request_id", sa.String(64), nullable=False),
        sa.Column("key_fields_digest", sa.String(64), nullable=False),
        sa.Column("result_code", sa.String(64), nullable=False),
        sa.Column("result_message", sa.String(), nullable=True),
        sa.Column("credited_value", sa.BigInteger(), nullable=False),
        sa.Column("refund_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("refund_request_id"),
    )
    op.create_index("ix_refund_record_payment_request_id", "refund_record", ["payment_request_id"])


def downgrade() -> None:
    op.drop_index("ix_refund_record_payment_request_id", table_name="refund_record")
    op.drop_table("refund_record")
    with op.batch_alter_table("payment_record") as table:
        table.drop_column("cancelled_at")
        table.drop_column("refunded_pay_to_value")
        table.drop_column("refunded_payment_value")
        for name, type_ in _TOMBSTONE_NULLABLE:
            table.alter_column(name, existing_type=type_, nullable=False)
