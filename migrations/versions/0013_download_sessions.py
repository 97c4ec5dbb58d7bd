"""download sessions (the per-user queue) and update history

Revision ID: 0013_download_sessions
Revises: 0012_download_content
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013_download_sessions"
down_revision = "0012_download_content"
branch_labels = None
depends_on = None

_UUID = postgresql.UUID(as_uuid=True)
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "download_sessions",
        sa.Column("id", _UUID, nullable=False),
        sa.Column("user_id", _UUID, nullable=False),
        sa.Column("product_id", _UUID, nullable=False),
        sa.Column("version_id", _UUID, nullable=False),
        sa.Column("installed_version_id", _UUID, nullable=True),
        sa.Column("branch", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("start_now", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("installation_path", sa.Text(), nullable=False),
        sa.Column("device_id", sa.Text(), server_default="", nullable=False),
        sa.Column("total_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("downloaded_bytes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("error_message", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("completed_at", _TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'downloading', 'paused', 'completed', 'failed', 'cancelled')",
            name="ck_download_sessions_status",
        ),
        sa.CheckConstraint("priority BETWEEN 0 AND 100", name="ck_download_sessions_priority"),
        sa.CheckConstraint(
            "downloaded_bytes >= 0 AND total_size_bytes >= 0", name="ck_download_sessions_sizes"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["download_product_versions.version_id"],
            name="fk_download_sessions_version_id_download_product_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_download_sessions"),
    )
    op.create_index("ix_download_sessions_user_created", "download_sessions", ["user_id", "created_at", "id"])
    op.create_index(
        "ix_download_sessions_queued",
        "download_sessions",
        ["user_id"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_table(
        "update_history",
        sa.Column("id", _UUID, nullable=False),
        sa.Column("user_id", _UUID, nullable=False),
        sa.Column("product_id", _UUID, nullable=False),
        sa.Column("applied_version_id", _UUID, nullable=False),
        sa.Column("previous_version_id", _UUID, nullable=True),
        sa.Column("download_session_id", _UUID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("applied_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("status IN ('success', 'failed')", name="ck_update_history_status"),
        sa.ForeignKeyConstraint(
            ["applied_version_id"],
            ["download_product_versions.version_id"],
            name="fk_update_history_applied_version_id_download_product_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_update_history"),
    )
    op.create_index("ix_update_history_user_product", "update_history", ["user_id", "product_id"])


def downgrade() -> None:
    op.drop_table("update_history")
    op.drop_table("download_sessions")
