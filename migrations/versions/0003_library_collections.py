"""library categories, wishlist, applied orders and request replays

Revision ID: 0003_library_collections
Revises: 0002_library_items
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_library_collections"
down_revision = "0002_library_items"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("library_items", sa.Column("revoke_reason", sa.String(length=32), nullable=True))
    op.add_column("library_items", sa.Column("revoked_order_id", sa.Text(), nullable=True))
    op.create_table(
        "library_categories",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_library_categories"),
    )
    op.create_index(
        "uq_library_categories_user_name",
        "library_categories",
        ["user_id", sa.text("lower(name)")],
        unique=True,
    )
    op.create_table(
        "library_item_categories",
        sa.Column("library_item_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("category_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["library_item_id"],
            ["library_items.id"],
            name="fk_library_item_categories_library_item_id_library_items",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["library_categories.id"],
            name="fk_library_item_categories_category_id_library_categories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("library_item_id", "category_id", name="pk_library_item_categories"),
    )
    op.create_index("ix_library_item_categories_category_id", "library_item_categories", ["category_id"])
    op.create_table(
        "wishlist_items",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column(
            "added_timestamp", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_wishlist_items"),
        sa.UniqueConstraint("user_id", "product_id", name="uq_wishlist_items_user_id_product_id"),
    )
    op.create_index("ix_wishlist_items_user_added", "wishlist_items", ["user_id", "added_timestamp"])
    op.create_table(
        "library_applied_orders",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_library_applied_orders"),
    )
    op.create_table(
        "library_request_replays",
        sa.Column("caller", sa.Text(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("request_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("response", postgresql.JSONB(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("caller", "method", "request_id", name="pk_library_request_replays"),
    )


def downgrade() -> None:
    op.drop_table("library_request_replays")
    op.drop_table("library_applied_orders")
    op.drop_index("ix_wishlist_items_user_added", table_name="wishlist_items")
    op.drop_table("wishlist_items")
    op.drop_index("ix_library_item_categories_category_id", table_name="library_item_categories")
    op.drop_table("library_item_categories")
    op.drop_index("uq_library_categories_user_name", table_name="library_categories")
    op.drop_table("library_categories")
    op.drop_column("library_items", "revoked_order_id")
    op.drop_column("library_items", "revoke_reason")
