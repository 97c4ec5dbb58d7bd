"""cloud saves: save games, the per-(user, product) lock rows, the S3 object deletion queue

Revision ID: 0009_cloud_saves
Revises: 0007_request_replays
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_cloud_saves"
down_revision = "0007_request_replays"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "savegames",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("slot_name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=True),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("file_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_hash_sha256", sa.String(length=64), nullable=False),
        sa.Column("s3_object_key", sa.Text(), nullable=False),
        sa.Column("client_modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("server_uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("playtime_seconds", sa.BigInteger(), nullable=True),
        sa.Column("progress_percentage", sa.Double(), nullable=True),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("conflict_policy", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("auto_resolved", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("reserved_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'committed', 'conflict', 'discarded')", name="status"),
        sa.PrimaryKeyConstraint("id", name="pk_savegames"),
        sa.UniqueConstraint("s3_object_key", name="uq_savegames_s3_object_key"),
    )
    op.create_index("ix_savegames_owner_slot", "savegames", ["user_id", "product_id", "slot_name", "status"])
    op.create_index(
        "ix_savegames_pending_until",
        "savegames",
        ["reserved_until"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "uq_savegames_slot_version",
        "savegames",
        ["user_id", "product_id", "slot_name", "version_number"],
        unique=True,
        postgresql_where=sa.text("version_number IS NOT NULL"),
    )
    op.create_table(
        "savegame_owners",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "product_id", name="pk_savegame_owners"),
    )
    op.create_table(
        "savegame_object_deletions",
        sa.Column("s3_object_key", sa.Text(), nullable=False),
        sa.Column("delete_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("s3_object_key", name="pk_savegame_object_deletions"),
    )
    op.create_index("ix_savegame_object_deletions_due", "savegame_object_deletions", ["delete_after"])


def downgrade() -> None:
    op.drop_table("savegame_object_deletions")
    op.drop_table("savegame_owners")
    op.drop_table("savegames")
