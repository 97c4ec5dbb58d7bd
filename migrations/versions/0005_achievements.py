"""achievement definitions, user progress and progress request ledger

Revision ID: 0005_achievements
Revises: 0002_library_items
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_achievements"
down_revision = "0002_library_items"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "achievement_definitions",
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("api_name", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("hidden", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("max_progress", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("icon_url", sa.Text(), server_default="", nullable=False),
        sa.Column("icon_locked_url", sa.Text(), server_default="", nullable=False),
        sa.Column("display_order", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("unlocked_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", "api_name", name="pk_achievement_definitions"),
    )
    op.create_table(
        "user_achievements",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("achievement_api_name", sa.String(length=128), nullable=False),
        sa.Column("progress", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("is_unlocked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("unlocked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "product_id", "achievement_api_name", name="pk_user_achievements"),
    )
    op.create_table(
        "achievement_progress_requests",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("request_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("response", postgresql.JSONB(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "request_id", name="pk_achievement_progress_requests"),
    )


def downgrade() -> None:
    op.drop_table("achievement_progress_requests")
    op.drop_table("user_achievements")
    op.drop_table("achievement_definitions")
