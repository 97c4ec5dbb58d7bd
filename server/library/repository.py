"""SQL of the library: items with their cached product, categories, wishlist, orders and the product cache.

Reads return `views` values; writes are single statements whose conflicts (a duplicate category name, a
product already wished or owned) are reported by what they return, never by a failed transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.library import keyset
from server.library.tables import (
    AppliedOrder,
    Category,
    LibraryItem,
    LibraryItemCategory,
    Product,
    WishlistItem,
)
from server.library.views import CategoryView, LibraryItemView, ProductInfo, WishlistItemView

NAME_ASC, LAST_PLAYED_DESC, ADDED_AT_DESC = "name_asc", "last_played_desc", "added_at_desc"

_product_name = func.lower(func.coalesce(Product.name, ""))
_ITEM_SORTS: dict[str, list[keyset.SortKey]] = {
    NAME_ASC: [keyset.SortKey(_product_name), keyset.id_key(LibraryItem.id)],
    LAST_PLAYED_DESC: [
        keyset.time_key(LibraryItem.last_played_timestamp, descending=True, nullable=True),
        keyset.SortKey(_product_name),
        keyset.id_key(LibraryItem.id),
    ],
    ADDED_AT_DESC: [
        keyset.time_key(LibraryItem.added_to_library_at, descending=True),
        keyset.id_key(LibraryItem.id),
    ],
}
_CATEGORY_SORT = [keyset.SortKey(func.lower(Category.name)), keyset.id_key(Category.id)]
_WISHLIST_SORT = [
    keyset.time_key(WishlistItem.added_timestamp, descending=True),
    keyset.id_key(WishlistItem.id),
]


def product_info(product: Product | None) -> ProductInfo | None:
    if product is None:
        return None
    return ProductInfo(
        product_id=product.product_id,
        name=product.name,
        product_type=product.product_type,
        cover_image_url=product.cover_image_url,
        icon_url=product.icon_url,
        developer=product.developer,
        publisher=product.publisher,
        release_date=product.release_date,
        genres=list(product.genres),
        updated_at=product.updated_at,
    )


def _item_view(item: LibraryItem, product: Product | None, category_ids: list[uuid.UUID]) -> LibraryItemView:
    return LibraryItemView(
        id=item.id,
        product_id=item.product_id,
        product=product_info(product),
        acquisition_type=item.acquisition_type,
        acquisition_timestamp=item.acquisition_timestamp,
        added_to_library_at=item.added_to_library_at,
        last_played_timestamp=item.last_played_timestamp,
        total_playtime_seconds=item.total_playtime_seconds,
        installation_status=item.installation_status,
        installed_version_id=item.installed_version_id,
        is_hidden=item.is_hidden,
        category_ids=category_ids,
    )


def _category_view(category: Category) -> CategoryView:
    return CategoryView(id=category.id, name=category.name, created_at=category.created_at)


def _wishlist_view(item: WishlistItem, product: Product | None) -> WishlistItemView:
    return WishlistItemView(
        id=item.id,
        product_id=item.product_id,
        product=product_info(product),
        added_timestamp=item.added_timestamp,
        priority=item.priority,
        notes=item.notes,
    )


def _active_items(user_id: uuid.UUID) -> Select[Any]:
    return (
        select(LibraryItem, Product)
        .outerjoin(Product, Product.product_id == LibraryItem.product_id)
        .where(LibraryItem.user_id == user_id, LibraryItem.revoked_at.is_(None))
    )


async def _with_categories(session: AsyncSession, rows: Sequence[Any]) -> list[LibraryItemView]:
    item_ids = [row[0].id for row in rows]
    memberships: dict[uuid.UUID, list[uuid.UUID]] = {item_id: [] for item_id in item_ids}
    if item_ids:
        links = await session.execute(
            select(LibraryItemCategory.library_item_id, LibraryItemCategory.category_id)
            .join(Category, Category.id == LibraryItemCategory.category_id)
            .where(LibraryItemCategory.library_item_id.in_(item_ids))
            .order_by(func.lower(Category.name), Category.id)
        )
        for item_id, category_id in links:
            memberships[item_id].append(category_id)
    return [_item_view(row[0], row[1], memberships[row[0].id]) for row in rows]


async def list_items(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    installation_status: str | None,
    category_id: uuid.UUID | None,
    name_pattern: str | None,
    include_hidden: bool,
    sort: str,
    cursor: list[Any] | None,
    page_size: int,
) -> tuple[list[LibraryItemView], list[Any] | None, int]:
    stmt = _active_items(user_id)
    if installation_status is not None:
        stmt = stmt.where(LibraryItem.installation_status == installation_status)
    if category_id is not None:
        stmt = stmt.where(
            LibraryItem.id.in_(
                select(LibraryItemCategory.library_item_id).where(
                    LibraryItemCategory.category_id == category_id
                )
            )
        )
    if name_pattern is not None:
        stmt = stmt.where(Product.name.ilike(name_pattern, escape="\\"))
    if not include_hidden:
        stmt = stmt.where(LibraryItem.is_hidden.is_(False))
    rows, next_cursor, total = await keyset.fetch_page(session, stmt, _ITEM_SORTS[sort], cursor, page_size)
    return await _with_categories(session, rows), next_cursor, total


async def item_for_update(
    session: AsyncSession, user_id: uuid.UUID, item_id: uuid.UUID
) -> tuple[LibraryItem, Product | None] | None:
    """The user's active item (locked for the update) with its product; None if not theirs or revoked."""
    row = (
        await session.execute(
            _active_items(user_id).where(LibraryItem.id == item_id).with_for_update(of=LibraryItem)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def item_view(session: AsyncSession, item: LibraryItem, product: Product | None) -> LibraryItemView:
    return (await _with_categories(session, [(item, product)]))[0]


async def owned_items(
    session: AsyncSession, user_id: uuid.UUID, product_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, LibraryItemView]:
    """The user's active items for these products, by product id."""
    rows = (
        await session.execute(_active_items(user_id).where(LibraryItem.product_id.in_(product_ids)))
    ).all()
    return {view.product_id: view for view in await _with_categories(session, rows)}


async def own_category_ids(
    session: AsyncSession, user_id: uuid.UUID, category_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these ids are the user's categories."""
    if not category_ids:
        return set()
    found = await session.scalars(
        select(Category.id).where(Category.user_id == user_id, Category.id.in_(category_ids))
    )
    return set(found)


async def replace_item_categories(
    session: AsyncSession, item_id: uuid.UUID, category_ids: Sequence[uuid.UUID]
) -> None:
    await session.execute(delete(LibraryItemCategory).where(LibraryItemCategory.library_item_id == item_id))
    if category_ids:
        await session.execute(
            pg_insert(LibraryItemCategory).values(
                [{"library_item_id": item_id, "category_id": c} for c in category_ids]
            )
        )


async def add_item(
    session: AsyncSession,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    acquisition_type: str,
    acquired_at: datetime,
    added_at: datetime,
    order_id: str | None,
) -> bool:
    """Adds the product to the library, or restores a revoked entitlement; False when already owned."""
    values = dict(
        acquisition_type=acquisition_type,
        acquisition_timestamp=acquired_at,
        added_to_library_at=added_at,
        order_id=order_id,
    )
    inserted = await session.scalar(
        pg_insert(LibraryItem)
        .values(id=uuid.uuid4(), user_id=user_id, product_id=product_id, **values)
        .on_conflict_do_nothing()
        .returning(LibraryItem.id)
    )
    if inserted is not None:
        return True
    restored = await session.scalar(
        update(LibraryItem)
        .where(
            LibraryItem.user_id == user_id,
            LibraryItem.product_id == product_id,
            LibraryItem.revoked_at.is_not(None),
        )
        .values(revoked_at=None, revoke_reason=None, revoked_order_id=None, is_hidden=False, **values)
        .returning(LibraryItem.id)
    )
    return restored is not None


async def revoke_item(
    session: AsyncSession,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    reason: str,
    order_id: str | None,
    when: datetime,
) -> bool:
    revoked = await session.scalar(
        update(LibraryItem)
        .where(
            LibraryItem.user_id == user_id,
            LibraryItem.product_id == product_id,
            LibraryItem.revoked_at.is_(None),
        )
        .values(revoked_at=when, revoke_reason=reason, revoked_order_id=order_id)
        .returning(LibraryItem.id)
    )
    return revoked is not None


async def mark_installed(
    session: AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID, version_id: uuid.UUID
) -> bool:
    marked = await session.scalar(
        update(LibraryItem)
        .where(
            LibraryItem.user_id == user_id,
            LibraryItem.product_id == product_id,
            LibraryItem.revoked_at.is_(None),
        )
        .values(installation_status="installed", installed_version_id=version_id)
        .returning(LibraryItem.id)
    )
    return marked is not None


async def claim_order(session: AsyncSession, order_id: str, user_id: uuid.UUID) -> bool:
    """Records the order as applied; False when it already was (a concurrent duplicate waits, then False)."""
    claimed = await session.scalar(
        pg_insert(AppliedOrder)
        .values(order_id=order_id, user_id=user_id)
        .on_conflict_do_nothing()
        .returning(AppliedOrder.order_id)
    )
    return claimed is not None


async def list_categories(
    session: AsyncSession, user_id: uuid.UUID, cursor: list[Any] | None, page_size: int
) -> tuple[list[CategoryView], list[Any] | None, int]:
    stmt = select(Category).where(Category.user_id == user_id)
    rows, next_cursor, total = await keyset.fetch_page(session, stmt, _CATEGORY_SORT, cursor, page_size)
    return [_category_view(row[0]) for row in rows], next_cursor, total


async def add_category(session: AsyncSession, user_id: uuid.UUID, name: str) -> CategoryView | None:
    """The new category, or None when the user has one with that name (case-insensitively)."""
    category = await session.scalar(
        pg_insert(Category)
        .values(id=uuid.uuid4(), user_id=user_id, name=name)
        .on_conflict_do_nothing()
        .returning(Category)
    )
    return None if category is None else _category_view(category)


async def list_wishlist(
    session: AsyncSession, user_id: uuid.UUID, cursor: list[Any] | None, page_size: int
) -> tuple[list[WishlistItemView], list[Any] | None, int]:
    stmt = (
        select(WishlistItem, Product)
        .outerjoin(Product, Product.product_id == WishlistItem.product_id)
        .where(WishlistItem.user_id == user_id)
    )
    rows, next_cursor, total = await keyset.fetch_page(session, stmt, _WISHLIST_SORT, cursor, page_size)
    return [_wishlist_view(row[0], row[1]) for row in rows], next_cursor, total


async def add_wishlist_item(
    session: AsyncSession,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    priority: int,
    notes: str,
    added_at: datetime,
) -> WishlistItemView | None:
    """The new wishlist item, or None when the product is on the wishlist already."""
    item = await session.scalar(
        pg_insert(WishlistItem)
        .values(
            id=uuid.uuid4(),
            user_id=user_id,
            product_id=product_id,
            priority=priority,
            notes=notes,
            added_timestamp=added_at,
        )
        .on_conflict_do_nothing()
        .returning(WishlistItem)
    )
    if item is None:
        return None
    product = await session.get(Product, product_id)
    return _wishlist_view(item, product)


async def remove_wishlist_item(session: AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID) -> bool:
    removed = await session.scalar(
        delete(WishlistItem)
        .where(WishlistItem.user_id == user_id, WishlistItem.product_id == product_id)
        .returning(WishlistItem.id)
    )
    return removed is not None


async def upsert_products(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Inserts or updates cache entries (every row with the same columns); an entry older than the cached
    one (`updated_at`) is left alone. Returns how many rows were written."""
    if not rows:
        return 0
    stmt = pg_insert(Product).values(list(rows))
    columns = [c for c in rows[0] if c != "product_id"]
    stmt = stmt.on_conflict_do_update(
        index_elements=[Product.product_id],
        set_={c: stmt.excluded[c] for c in columns},
        where=Product.updated_at <= stmt.excluded.updated_at,
    ).returning(Product.product_id)
    return len((await session.scalars(stmt)).all())
