"""merge the family-sharing, library-extras, outbox-partitions and playtime-scale branches

Revision ID: 0020_merge_heads
Revises: 0016_family_sharing, 0017_library_extras, 0018_outbox_partitions, 0019_playtime_scale
Create Date: 2026-12-01
"""

revision = "0020_merge_heads"
down_revision = (
    "0016_family_sharing",
    "0017_library_extras",
    "0018_outbox_partitions",
    "0019_playtime_scale",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
