"""download content: versions, files, chunks, verification results

Revision ID: 0012_download_content
Revises: 0007_request_replays
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012_download_content"
down_revision = "0007_request_replays"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "download_chunks",
        sa.Column("chunk_id", sa.String(length=64), nullable=False),
        sa.Column("compressed_sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("compressed_size_bytes", sa.Integer(), nullable=False),
        sa.Column("verified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("chunk_id", "compressed_sha256", name=op.f("pk_download_chunks")),
    )
    op.create_table(
        "download_product_versions",
        sa.Column("version_id", sa.UUID(), nullable=False),
        sa.Column("product_id", sa.UUID(), nullable=False),
        sa.Column("version_name", sa.String(length=64), nullable=False),
        sa.Column("branch", sa.String(length=64), nullable=False),
        sa.Column("release_notes", sa.Text(), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("new_chunk_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("version_id", name=op.f("pk_download_product_versions")),
        sa.UniqueConstraint(
            "product_id", "version_name", name=op.f("uq_download_product_versions_product_id_version_name")
        ),
    )
    op.create_index(
        "ix_download_product_versions_latest",
        "download_product_versions",
        [
            "product_id",
            "branch",
            sa.literal_column("published_at DESC"),
            sa.literal_column("version_id DESC"),
        ],
        unique=False,
        postgresql_where=sa.text("state = 'committed'"),
    )
    op.create_table(
        "download_update_notices",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("product_id", sa.UUID(), nullable=False),
        sa.Column("version_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint(
            "user_id", "product_id", "version_id", name=op.f("pk_download_update_notices")
        ),
    )
    op.create_table(
        "download_verification_results",
        sa.Column("verification_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("product_id", sa.UUID(), nullable=False),
        sa.Column("version_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("checked_files_count", sa.Integer(), nullable=False),
        sa.Column("corrupted_files_count", sa.Integer(), nullable=False),
        sa.Column("missing_files_count", sa.Integer(), nullable=False),
        sa.Column("repaired_files_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("repair_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("files_requiring_redownload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("verification_id", name=op.f("pk_download_verification_results")),
    )
    op.create_index(
        op.f("ix_download_verification_results_user_id_product_id"),
        "download_verification_results",
        ["user_id", "product_id"],
        unique=False,
    )
    op.create_table(
        "download_version_chunks",
        sa.Column("version_id", sa.UUID(), nullable=False),
        sa.Column("chunk_id", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("compressed_size_bytes", sa.Integer(), nullable=False),
        sa.Column("compressed_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["download_product_versions.version_id"],
            name=op.f("fk_download_version_chunks_version_id_download_product_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "chunk_id", name=op.f("pk_download_version_chunks")),
    )
    op.create_table(
        "download_version_files",
        sa.Column("file_id", sa.UUID(), nullable=False),
        sa.Column("version_id", sa.UUID(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["download_product_versions.version_id"],
            name=op.f("fk_download_version_files_version_id_download_product_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", name=op.f("pk_download_version_files")),
        sa.UniqueConstraint("version_id", "path", name=op.f("uq_download_version_files_version_id_path")),
    )
    op.create_table(
        "download_file_chunks",
        sa.Column("file_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("chunk_id", sa.String(length=64), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["download_version_files.file_id"],
            name=op.f("fk_download_file_chunks_file_id_download_version_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "position", name=op.f("pk_download_file_chunks")),
    )


def downgrade() -> None:
    op.drop_table("download_file_chunks")
    op.drop_table("download_version_files")
    op.drop_table("download_version_chunks")
    op.drop_index(
        op.f("ix_download_verification_results_user_id_product_id"),
        table_name="download_verification_results",
    )
    op.drop_table("download_verification_results")
    op.drop_table("download_update_notices")
    op.drop_index(
        "ix_download_product_versions_latest",
        table_name="download_product_versions",
        postgresql_where=sa.text("state = 'committed'"),
    )
    op.drop_table("download_product_versions")
    op.drop_table("download_chunks")
