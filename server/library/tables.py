"""Library tables (seed 000 §4.1): library items (entitlements), the local product cache, user categories,
the wishlist, the ledger of applied orders that makes an order's grant idempotent, the owner count per
product and the wishlist sales being announced."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base


class Product(Base):
    """Catalog metadata cached locally (UpsertProducts, catalog.product.updated events)."""

    __tablename__ = "products"

    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, server_default="")
    product_type: Mapped[str] = mapped_column(String(32), server_default="game")
    cover_image_url: Mapped[str] = mapped_column(Text, server_default="")
    icon_url: Mapped[str] = mapped_column(Text, server_default="")
    developer: Mapped[str] = mapped_column(Text, server_default="")
    publisher: Mapped[str] = mapped_column(Text, server_default="")
    release_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    genres: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    # A DLC's base game (family sharing lends a DLC only with its base game).
    base_product_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LibraryItem(Base):
    """One owned product of one user. A revoked entitlement keeps its row with `revoked_at` set."""

    __tablename__ = "library_items"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    acquisition_type: Mapped[str] = mapped_column(String(32))
    acquisition_timestamp: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    added_to_library_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_played_timestamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total_playtime_seconds: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    installation_status: Mapped[str] = mapped_column(String(32), server_default="not_installed")
    installed_version_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    is_hidden: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    order_id: Mapped[str | None] = mapped_column(Text)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Audit of the last revocation (refund, chargeback, ...): why, and which order it refunded.
    revoke_reason: Mapped[str | None] = mapped_column(String(32))
    revoked_order_id: Mapped[str | None] = mapped_column(Text)
    # Family sharing: the lender of a borrowed item (acquisition `family_shared`); NULL for owned items.
    lender_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))

    __table_args__ = (
        UniqueConstraint("user_id", "product_id"),
        Index("ix_library_items_user_added", "user_id", "added_to_library_at"),
        Index(
            "ix_library_items_lender",
            "lender_user_id",
            postgresql_where=text("lender_user_id IS NOT NULL"),
        ),
    )


class Category(Base):
    """A user's game category (seed `UserGameCategory`); names are unique per user, case-insensitively."""

    __tablename__ = "library_categories"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("uq_library_categories_user_name", "user_id", func.lower(text("name")), unique=True),
    )


class LibraryItemCategory(Base):
    """Membership of a library item in one of its owner's categories."""

    __tablename__ = "library_item_categories"

    library_item_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("library_items.id", ondelete="CASCADE"), primary_key=True
    )
    category_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("library_categories.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (Index("ix_library_item_categories_category_id", "category_id"),)


class WishlistItem(Base):
    """A product on a user's wishlist (seed `WishlistItem`). `priority` 0 means "not set"."""

    __tablename__ = "wishlist_items"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    added_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    notes: Mapped[str] = mapped_column(Text, server_default="")

    __table_args__ = (
        UniqueConstraint("user_id", "product_id"),
        Index("ix_wishlist_items_user_added", "user_id", "added_timestamp"),
        # A sale's fan-out walks the product's wishers in user id order.
        Index("ix_wishlist_items_product_user", "product_id", "user_id"),
    )


class AppliedOrder(Base):
    """Orders whose entitlements were granted: a second grant for the same order changes nothing."""

    __tablename__ = "library_applied_orders"

    order_id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    applied_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class ProductOwnerCount(Base):
    """How many users own each product now (active library items), kept by a trigger on library_items in
    the transaction of every grant and revoke, whoever writes the row (migration 0017_library_extras). The
    denominator of global achievement unlock rates: a lookup by key instead of counting a popular game's
    owners."""

    __tablename__ = "product_owner_counts"

    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owners: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class WishlistSale(Base):
    """A sale of a product announced to its wishers (`wishlistGameOnSale`), once per (product, sale key).

    The fan-out walks the wishers in user id order in bounded batches, each batch one transaction that
    writes its notifications to the outbox and moves `cursor_user_id` past them, so a crash resumes where
    the last committed batch ended and nobody is told twice."""

    __tablename__ = "wishlist_sales"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    sale_key: Mapped[str] = mapped_column(Text)
    discount_percent: Mapped[int] = mapped_column(Integer)
    product_name: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    cursor_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    notified: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    batches: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("product_id", "sale_key"),
        Index("ix_wishlist_sales_pending", "created_at", postgresql_where=text("finished_at IS NULL")),
    )
