"""one request_id replay store for every capability

Revision ID: 0007_request_replays
Revises: 0006_merge_capabilities
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_request_replays"
down_revision = "0006_merge_capabilities"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_replays",
        sa.Column("caller", sa.Text(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("request_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("response", postgresql.JSONB(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("caller", "method", "request_id", name="pk_request_replays"),
    )
    op.execute(
        "INSERT INTO request_replays (caller, method, request_id, response, created_at) "
        "SELECT caller, method, request_id, response, created_at FROM library_request_replays"
    )
    op.execute(
        "INSERT INTO request_replays (caller, method, request_id, response, created_at) "
        "SELECT user_id::text, 'UpdateAchievementProgress', request_id, response, created_at "
        "FROM achievement_progress_requests"
    )
    op.drop_table("library_request_replays")
    op.drop_table("achievement_progress_requests")


def downgrade() -> None:
    op.create_table(
        "achievement_progress_requests",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("request_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("response", postgresql.JSONB(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "request_id", name="pk_achievement_progress_requests"),
    )
    op.create_table(
        "library_request_replays",
        sa.Column("caller", sa.Text(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("request_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("response", postgresql.JSONB(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("caller", "method", "request_id", name="pk_library_request_replays"),
    )
    op.execute(
        "INSERT INTO achievement_progress_requests (user_id, request_id, response, created_at) "
        "SELECT caller::uuid, request_id, response, created_at FROM request_replays "
        "WHERE method = 'UpdateAchievementProgress'"
    )
    op.execute(
        "INSERT INTO library_request_replays (caller, method, request_id, response, created_at) "
        "SELECT caller, method, request_id, response, created_at FROM request_replays "
        "WHERE method <> 'UpdateAchievementProgress'"
    )
    op.drop_table("request_replays")
