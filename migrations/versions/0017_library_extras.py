"""library extras: owner counts per product, wishlist sales, order ids in canonical form

Revision ID: 0017_library_extras
Revises: 0015_merge_heads
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017_library_extras"
down_revision = "0015_merge_heads"
branch_labels = None
depends_on = None

# A library item counts as an owner while it is not revoked; the trigger keeps product_owner_counts in
# step with every insert, revoke, restore and delete of library_items, in the writer's transaction.
_OWNER_COUNT_FUNCTION = """
CREATE FUNCTION library_owner_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.revoked_at IS NULL THEN
        UPDATE product_owner_counts SET owners = owners - 1 WHERE product_id = OLD.product_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.revoked_at IS NULL THEN
        INSERT INTO product_owner_counts AS c (product_id, owners) VALUES (NEW.product_id, 1)
        ON CONFLICT (product_id) DO UPDATE SET owners = c.owners + 1;
    END IF;
    RETURN NULL;
END $$
"""
_OWNER_COUNT_TRIGGER = (
    "CREATE TRIGGER library_items_owner_count AFTER INSERT OR DELETE OR UPDATE OF revoked_at, product_id "
    "ON library_items FOR EACH ROW EXECUTE FUNCTION library_owner_count()"
)
# Order ids that are UUIDs in any spelling Postgres accepts (case, braces, no hyphens) → canonical form,
# the one key GrantEntitlements and the payment consumer now share. A duplicate spelling of an order
# already recorded canonically is dropped (the order was applied either way).
_HEX = "[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}"
_UUID_SPELLING = f"'^({_HEX}|\\{{{_HEX}\\}})$'"


def _canonical(column: str) -> str:
    """The column's canonical UUID text, NULL when it is not a UUID (CASE: the cast runs only then)."""
    return (
        f"CASE WHEN {column} ~ {_UUID_SPELLING} THEN lower(trim(both '{{}}' from {column}))::uuid::text END"
    )


def upgrade() -> None:
    op.create_table(
        "product_owner_counts",
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("owners", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name="pk_product_owner_counts"),
    )
    op.execute("LOCK TABLE library_items IN SHARE ROW EXCLUSIVE MODE")
    op.execute(
        "INSERT INTO product_owner_counts (product_id, owners) SELECT product_id, count(*) "
        "FROM library_items WHERE revoked_at IS NULL GROUP BY product_id"
    )
    op.execute(_OWNER_COUNT_FUNCTION)
    op.execute(_OWNER_COUNT_TRIGGER)

    op.create_table(
        "wishlist_sales",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("sale_key", sa.Text(), nullable=False),
        sa.Column("discount_percent", sa.Integer(), nullable=False),
        sa.Column("product_name", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("cursor_user_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("notified", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("batches", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_wishlist_sales"),
        sa.UniqueConstraint("product_id", "sale_key", name="uq_wishlist_sales_product_id_sale_key"),
    )
    op.create_index(
        "ix_wishlist_sales_pending",
        "wishlist_sales",
        ["created_at"],
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    op.create_index("ix_wishlist_items_product_user", "wishlist_items", ["product_id", "user_id"])

    applied, items = _canonical("a.order_id"), _canonical("order_id")
    op.execute(
        f"DELETE FROM library_applied_orders a WHERE {applied} <> a.order_id "
        f"AND EXISTS (SELECT 1 FROM library_applied_orders b WHERE b.order_id = {applied})"
    )
    op.execute(f"UPDATE library_applied_orders a SET order_id = {applied} WHERE {applied} <> a.order_id")
    op.execute(f"UPDATE library_items SET order_id = {items} WHERE {items} <> order_id")


def downgrade() -> None:
    op.drop_index("ix_wishlist_items_product_user", table_name="wishlist_items")
    op.drop_index("ix_wishlist_sales_pending", table_name="wishlist_sales")
    op.drop_table("wishlist_sales")
    op.execute("DROP TRIGGER library_items_owner_count ON library_items")
    op.execute("DROP FUNCTION library_owner_count()")
    op.drop_table("product_owner_counts")
