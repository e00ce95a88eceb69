"""Merchant-presented mode: app sessions, authCodes and the OAuth token pairs of applyToken.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_session",
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_digest"),
    )
    op.create_index("ix_app_session_customer_id", "app_session", ["customer_id"])

    op.create_table(
        "auth_code",
        sa.Column("code_digest", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code_digest"),
    )

    op.create_table(
        "oauth_token",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("access_token_digest", sa.String(64), nullable=False),
        sa.Column("refresh_token_digest", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(128), nullable=False),
        sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refresh_token_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("successor_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("access_token_digest"),
        sa.UniqueConstraint("refresh_token_digest", name="uq_oauth_token_refresh_token_digest"),
    )
    op.create_index("ix_oauth_token_customer_id", "oauth_token", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_oauth_token_customer_id", table_name="oauth_token")
    op.drop_table("oauth_token")
    op.drop_table("auth_code")
    op.drop_index("ix_app_session_customer_id", table_name="app_session")
    op.drop_table("app_session")
