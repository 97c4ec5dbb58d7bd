"""playtime sessions and credited intervals

Revision ID: 0004_playtime
Revises: 0002_library_items
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_playtime"
down_revision = "0002_library_items"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "playtime_sessions",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("client_session_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checkpointed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credited_seconds", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("result_total_seconds", sa.BigInteger(), nullable=True),
        sa.Column("result_last_two_weeks_seconds", sa.BigInteger(), nullable=True),
        sa.Column("result_last_played_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_playtime_sessions"),
    )
    op.create_index(
        "uq_playtime_sessions_active_device",
        "playtime_sessions",
        ["user_id", "product_id", "device_id"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "uq_playtime_sessions_offline_client_session",
        "playtime_sessions",
        ["user_id", "client_session_id"],
        unique=True,
        postgresql_where=sa.text("source = 'offline'"),
    )
    op.create_index(
        "ix_playtime_sessions_active",
        "playtime_sessions",
        ["last_heartbeat_at"],
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "playtime_intervals",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("session_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ended_at >= started_at", name="ck_playtime_intervals_ordered"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["playtime_sessions.id"],
            name="fk_playtime_intervals_session_id_playtime_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_playtime_intervals"),
        sa.UniqueConstraint("session_id", "started_at", name="uq_playtime_intervals_session_id_started_at"),
    )
    op.create_index(
        "ix_playtime_intervals_user_product_end",
        "playtime_intervals",
        ["user_id", "product_id", "ended_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_playtime_intervals_user_product_end", table_name="playtime_intervals")
    op.drop_table("playtime_intervals")
    op.drop_index("ix_playtime_sessions_active", table_name="playtime_sessions")
    op.drop_index("uq_playtime_sessions_offline_client_session", table_name="playtime_sessions")
    op.drop_index("uq_playtime_sessions_active_device", table_name="playtime_sessions")
    op.drop_table("playtime_sessions")
