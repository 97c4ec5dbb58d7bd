"""download settings per user (concurrency, bandwidth, schedule window, branch per product) with a
compare-and-swap version

Revision ID: 0011_download_settings
Revises: 0007_request_replays
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011_download_settings"
down_revision = "0007_request_replays"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "download_settings",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("max_concurrent_downloads", sa.Integer(), nullable=False),
        sa.Column("bandwidth_limit_kbps", sa.Integer(), nullable=False),
        sa.Column("schedule_start", sa.Time(), nullable=True),
        sa.Column("schedule_end", sa.Time(), nullable=True),
        sa.Column("schedule_time_zone", sa.String(length=64), nullable=True),
        sa.Column(
            "product_branches", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_by_device_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("max_concurrent_downloads BETWEEN 1 AND 10", name="max_concurrent_range"),
        sa.CheckConstraint("bandwidth_limit_kbps >= 0", name="bandwidth_not_negative"),
        sa.CheckConstraint(
            "(schedule_start IS NULL) = (schedule_end IS NULL) "
            "AND (schedule_start IS NULL) = (schedule_time_zone IS NULL)",
            name="schedule_complete",
        ),
        sa.CheckConstraint("version > 0", name="version_positive"),
        sa.PrimaryKeyConstraint("user_id", name="pk_download_settings"),
    )


def downgrade() -> None:
    op.drop_table("download_settings")
