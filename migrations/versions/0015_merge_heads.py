"""merge the cloud-save, game-settings, download-settings and download-content branches

Revision ID: 0015_merge_heads
Revises: 0009_cloud_saves, 0010_game_settings, 0011_download_settings, 0014_file_chunk_sizes
Create Date: 2026-12-01
"""

revision = "0015_merge_heads"
down_revision = ("0009_cloud_saves", "0010_game_settings", "0011_download_settings", "0014_file_chunk_sizes")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
