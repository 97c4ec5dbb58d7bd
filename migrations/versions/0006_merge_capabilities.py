"""merge the library, playtime and achievement branches

Revision ID: 0006_merge_capabilities
Revises: 0003_library_collections, 0004_playtime, 0005_achievements
Create Date: 2026-11-22
"""

revision = "0006_merge_capabilities"
down_revision = ("0003_library_collections", "0004_playtime", "0005_achievements")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
