"""Guessing PINs and OTPs: failure counters per account and client address, counted failures, the
lockout audit; PINs stored as scrypt verifiers (a wider column; older digests are upgraded on use).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("wallet_user") as table:
        table.alter_column("pin_digest", existing_type=sa.String(64), type_=sa.String(160), existing_nullable=True)

    op.create_table(
        "credential_counter",
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject"),
    )
    op.create_table(
        "credential_failure",
        sa.Column("attempt_key", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("attempt_key", "subject"),
    )
    op.create_table(
        "credential_lockout",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_credential_lockout_subject", "credential_lockout", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_credential_lockout_subject", table_name="credential_lockout")
    op.drop_table("credential_lockout")
    op.drop_table("credential_failure")
    op.drop_table("credential_counter")
    with op.batch_alter_table("wallet_user") as table:
        table.alter_column("pin_digest", existing_type=sa.String(160), type_=sa.String(64), existing_nullable=True)
