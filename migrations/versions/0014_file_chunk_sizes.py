"""download file chunks carry the compressed object that serves them (denormalised from the version's
distinct chunks at commit), so a manifest page is one index range scan over a few files' chunks instead
of a join with every distinct chunk of the version

Revision ID: 0014_file_chunk_sizes
Revises: 0013_download_sessions
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_file_chunk_sizes"
down_revision = "0013_download_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("download_file_chunks", sa.Column("compressed_size_bytes", sa.Integer(), nullable=True))
    op.add_column("download_file_chunks", sa.Column("compressed_sha256", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE download_file_chunks fc SET compressed_size_bytes = vc.compressed_size_bytes, "
        "compressed_sha256 = vc.compressed_sha256 "
        "FROM download_version_files f, download_version_chunks vc "
        "WHERE f.file_id = fc.file_id AND vc.version_id = f.version_id AND vc.chunk_id = fc.chunk_id"
    )
    op.alter_column("download_file_chunks", "compressed_size_bytes", nullable=False)
    op.alter_column("download_file_chunks", "compressed_sha256", nullable=False)


def downgrade() -> None:
    op.drop_column("download_file_chunks", "compressed_sha256")
    op.drop_column("download_file_chunks", "compressed_size_bytes")
