"""merge the content-transfer-plans and outbox-leases branches

Revision ID: 0022_merge_heads
Revises: 0021_content_transfer_plans, 0021_outbox_leases
Create Date: 2026-12-01
"""

revision = "0022_merge_heads"
down_revision = ("0021_content_transfer_plans", "0021_outbox_leases")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
