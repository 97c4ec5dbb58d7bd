"""transfer plans that stay cheap for big versions: the totals of each (version, installed version) pair,
computed once (committed versions never change); what a session's client already has when it named files
on disk instead of a version (the target's chunks it holds and files it keeps), which the session's
manifest pages read; and an index on the files' SHA-256 (files on disk are matched by content)

Revision ID: 0021_content_transfer_plans
Revises: 0020_merge_heads
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_content_transfer_plans"
down_revision = "0020_merge_heads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "download_transfer_totals",
        sa.Column("version_id", sa.UUID(), nullable=False),
        sa.Column("installed_version_id", sa.UUID(), nullable=False),
        sa.Column("bytes_to_download", sa.BigInteger(), nullable=False),
        sa.Column("chunks_to_download", sa.Integer(), nullable=False),
        sa.Column("bytes_to_write", sa.BigInteger(), nullable=False),
        sa.Column("files_to_write", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["download_product_versions.version_id"],
            name="fk_download_transfer_totals_version",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["installed_version_id"],
            ["download_product_versions.version_id"],
            name="fk_download_transfer_totals_installed",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "version_id", "installed_version_id", name=op.f("pk_download_transfer_totals")
        ),
    )
    op.create_table(
        "download_session_held_chunks",
        sa.Column("download_id", sa.UUID(), nullable=False),
        sa.Column("chunk_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["download_id"],
            ["download_sessions.id"],
            name="fk_download_session_held_chunks_session",
            ondelete="CASCADE",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.PrimaryKeyConstraint("download_id", "chunk_id", name=op.f("pk_download_session_held_chunks")),
    )
    op.create_table(
        "download_session_kept_files",
        sa.Column("download_id", sa.UUID(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["download_id"],
            ["download_sessions.id"],
            name="fk_download_session_kept_files_session",
            ondelete="CASCADE",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.PrimaryKeyConstraint("download_id", "path", name=op.f("pk_download_session_kept_files")),
    )
    op.create_index("ix_download_version_files_sha256", "download_version_files", ["sha256", "size_bytes"])


def downgrade() -> None:
    op.drop_index("ix_download_version_files_sha256", table_name="download_version_files")
    op.drop_table("download_session_kept_files")
    op.drop_table("download_session_held_chunks")
    op.drop_table("download_transfer_totals")
