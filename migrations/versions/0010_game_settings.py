"""game settings documents, one per (user, product), with a compare-and-swap version

Revision ID: 0010_game_settings
Revises: 0007_request_replays
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_game_settings"
down_revision = "0007_request_replays"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_game_settings",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("settings_payload", postgresql.JSONB(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_by_device_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("version > 0", name="version_positive"),
        sa.PrimaryKeyConstraint("user_id", "product_id", name="pk_user_game_settings"),
    )


def downgrade() -> None:
    op.drop_table("user_game_settings")
