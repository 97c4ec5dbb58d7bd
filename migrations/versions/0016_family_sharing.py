"""family sharing: links, the lender of a borrowed library item, the base game of a DLC

Revision ID: 0016_family_sharing
Revises: 0015_merge_heads
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0016_family_sharing"
down_revision = "0015_merge_heads"
branch_labels = None
depends_on = None

_UUID = postgresql.UUID(as_uuid=True)
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "family_links",
        sa.Column("link_id", _UUID, nullable=False),
        sa.Column("owner_user_id", _UUID, nullable=False),
        sa.Column("shared_user_id", _UUID, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("accepted_at", _TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending_approval', 'active', 'revoked')", name="ck_family_links_status"
        ),
        sa.CheckConstraint("owner_user_id <> shared_user_id", name="ck_family_links_distinct_users"),
        sa.PrimaryKeyConstraint("link_id", name="pk_family_links"),
    )
    op.create_index(
        "uq_family_links_live_pair",
        "family_links",
        ["owner_user_id", "shared_user_id"],
        unique=True,
        postgresql_where=sa.text("status <> 'revoked'"),
    )
    op.create_index(
        "ix_family_links_owner_created", "family_links", ["owner_user_id", "created_at", "link_id"]
    )
    op.create_index(
        "ix_family_links_shared_created", "family_links", ["shared_user_id", "created_at", "link_id"]
    )
    op.add_column("library_items", sa.Column("lender_user_id", _UUID, nullable=True))
    op.create_index(
        "ix_library_items_lender",
        "library_items",
        ["lender_user_id"],
        postgresql_where=sa.text("lender_user_id IS NOT NULL"),
    )
    op.add_column("products", sa.Column("base_product_id", _UUID, nullable=True))


def downgrade() -> None:
    op.drop_column("products", "base_product_id")
    op.drop_index("ix_library_items_lender", table_name="library_items")
    op.drop_column("library_items", "lender_user_id")
    op.drop_table("family_links")
