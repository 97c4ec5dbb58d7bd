"""library items (entitlements) and product cache

Revision ID: 0002_library_items
Revises: 0001_outbox
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_library_items"
down_revision = "0001_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("product_type", sa.String(length=32), server_default="game", nullable=False),
        sa.Column("cover_image_url", sa.Text(), server_default="", nullable=False),
        sa.Column("icon_url", sa.Text(), server_default="", nullable=False),
        sa.Column("developer", sa.Text(), server_default="", nullable=False),
        sa.Column("publisher", sa.Text(), server_default="", nullable=False),
        sa.Column("release_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("genres", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name="pk_products"),
    )
    op.create_table(
        "library_items",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("acquisition_type", sa.String(length=32), nullable=False),
        sa.Column(
            "acquisition_timestamp", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "added_to_library_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("last_played_timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total_playtime_seconds", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "installation_status", sa.String(length=32), server_default="not_installed", nullable=False
        ),
        sa.Column("installed_version_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("is_hidden", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_library_items"),
        sa.UniqueConstraint("user_id", "product_id", name="uq_library_items_user_id_product_id"),
    )
    op.create_index("ix_library_items_user_added", "library_items", ["user_id", "added_to_library_at"])


def downgrade() -> None:
    op.drop_index("ix_library_items_user_added", table_name="library_items")
    op.drop_table("library_items")
    op.drop_table("products")
