"""SQL of the library: items with their cached product, categories, wishlist, orders and the product cache.

Reads return `views` values; writes are single statements whose conflicts (a duplicate category name, a
product already wished or owned) are reported by what they return, never by a failed transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import Db
from server.library import keyset
from server.library.tables import AppliedOrder, LibraryItem, Product
from server.library.views import CategoryView, LibraryItemView, ProductInfo, WishlistItemView

NAME_ASC, LAST_PLAYED_DESC, ADDED_AT_DESC = "name_asc", "last_played_desc", "added_at_desc"

# Reads select ids as text (`::text`, the canonical form the contract carries): the driver then makes a str,
# not a uuid.UUID that the servicer would print again (docs/ARCHITECTURE.md, "Database access").
# A product's columns as `product_info` reads them (p: products, left-joined: all NULL when not cached).
_PRODUCT = (
    "p.product_id::text, p.name, p.product_type, p.cover_image_url, p.icon_url, p.developer, p.publisher, "
    "p.release_date, p.genres, p.updated_at, p.base_product_id::text"
)
# An item's columns in LibraryItemView's order: the item's, its product's, its category ids (by name).
_ITEM = (
    "li.id::text, li.product_id::text, li.acquisition_type, li.acquisition_timestamp, "
    "li.added_to_library_at, li.last_played_timestamp, li.total_playtime_seconds, li.installation_status, "
    f"li.installed_version_id::text, li.is_hidden, {_PRODUCT}, "
    "ARRAY(SELECT lic.category_id::text FROM library_item_categories lic "
    "JOIN library_categories c ON c.id = lic.category_id WHERE lic.library_item_id = li.id "
    "ORDER BY lower(c.name), c.id), li.lender_user_id::text"
)
_ACTIVE_ITEMS = "library_items li LEFT JOIN products p ON p.product_id = li.product_id"
_ACTIVE = "li.user_id = %s AND li.revoked_at IS NULL"

_product_name = "lower(coalesce(p.name, ''))"
_ITEM_LISTINGS: dict[str, keyset.Listing] = {
    NAME_ASC: keyset.Listing(_ITEM, _ACTIVE_ITEMS, [keyset.SortKey(_product_name), keyset.id_key("li.id")]),
    LAST_PLAYED_DESC: keyset.Listing(
        _ITEM,
        _ACTIVE_ITEMS,
        [
            keyset.time_key("li.last_played_timestamp", descending=True, nullable=True),
            keyset.SortKey(_product_name),
            keyset.id_key("li.id"),
        ],
    ),
    ADDED_AT_DESC: keyset.Listing(
        _ITEM,
        _ACTIVE_ITEMS,
        [keyset.time_key("li.added_to_library_at", descending=True), keyset.id_key("li.id")],
    ),
}
_CATEGORIES = keyset.Listing(
    "c.id::text, c.name, c.created_at",
    "library_categories c",
    [keyset.SortKey("lower(c.name)"), keyset.id_key("c.id")],
)
_WISH = f"w.id::text, w.product_id::text, w.added_timestamp, w.priority, w.notes, {_PRODUCT}"
_WISHLIST = keyset.Listing(
    _WISH,
    "wishlist_items w LEFT JOIN products p ON p.product_id = w.product_id",
    [keyset.time_key("w.added_timestamp", descending=True), keyset.id_key("w.id")],
)


# Row values are made positionally from the columns above, which are in their fields' order (keyword
# arguments cost a microsecond or two more per row).
def product_info(row: Sequence[Any], at: int) -> ProductInfo | None:
    """The product of `row` (its _PRODUCT columns, from `at`); None when the product is not cached."""
    if row[at] is None:
        return None
    return ProductInfo._make(row[at : at + 11])


def _item_view(row: Sequence[Any]) -> LibraryItemView:
    return LibraryItemView(*row[:10], product_info(row, 10), row[21], row[22])


def _category_view(row: Sequence[Any]) -> CategoryView:
    return CategoryView(row[0], row[1], row[2])


def _wishlist_view(row: Sequence[Any]) -> WishlistItemView:
    return WishlistItemView(*row[:5], product_info(row, 5))


async def list_items(
    db: Db,
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
    conditions, params = [_ACTIVE], [user_id]
    if installation_status is not None:
        conditions.append("li.installation_status = %s")
        params.append(installation_status)
    if category_id is not None:
        conditions.append(
            "li.id IN (SELECT library_item_id FROM library_item_categories WHERE category_id = %s)"
        )
        params.append(category_id)
    if name_pattern is not None:
        conditions.append("p.name ILIKE %s ESCAPE '\\'")
        params.append(name_pattern)
    if not include_hidden:
        conditions.append("li.is_hidden IS false")
    rows, next_cursor, total = await _ITEM_LISTINGS[sort].page(db, conditions, params, cursor, page_size)
    return [_item_view(row) for row in rows], next_cursor, total


async def lock_item(db: Db, user_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    """Locks the user's active item for an update; False if it is not theirs or revoked."""
    row = await db.one(
        f"SELECT li.id FROM library_items li WHERE {_ACTIVE} AND li.id = %s FOR UPDATE", (user_id, item_id)
    )
    return row is not None


async def update_item(
    db: Db, item_id: uuid.UUID, *, is_hidden: bool | None, installation_status: str | None
) -> None:
    """Sets the given fields (None: unchanged); an item no longer installed has no installed version."""
    assignments, params = [], []
    if is_hidden is not None:
        assignments.append("is_hidden = %s")
        params.append(is_hidden)
    if installation_status is not None:
        assignments.append("installation_status = %s")
        params.append(installation_status)
        if installation_status == "not_installed":
            assignments.append("installed_version_id = NULL")
    if assignments:
        await db.execute(
            f"UPDATE library_items SET {', '.join(assignments)} WHERE id = %s", (*params, item_id)
        )


async def item_view(db: Db, user_id: uuid.UUID, item_id: uuid.UUID) -> LibraryItemView:
    """The user's active item as it is now in this transaction."""
    [row] = await db.all(
        f"SELECT {_ITEM} FROM {_ACTIVE_ITEMS} WHERE {_ACTIVE} AND li.id = %s", (user_id, item_id)
    )
    return _item_view(row)


async def owned_items(
    db: Db, user_id: uuid.UUID, product_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, LibraryItemView]:
    """The user's active items for these products, by product id."""
    rows = await db.all(
        f"SELECT {_ITEM} FROM {_ACTIVE_ITEMS} WHERE {_ACTIVE} AND li.product_id = ANY(%s)",
        (user_id, list(product_ids)),
    )
    return {uuid.UUID(row[1]): _item_view(row) for row in rows}


async def own_category_ids(db: Db, user_id: uuid.UUID, category_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these ids are the user's categories."""
    if not category_ids:
        return set()
    rows = await db.all(
        "SELECT id FROM library_categories WHERE user_id = %s AND id = ANY(%s)", (user_id, list(category_ids))
    )
    return {row[0] for row in rows}


async def replace_item_categories(db: Db, item_id: uuid.UUID, category_ids: Sequence[uuid.UUID]) -> None:
    await db.execute("DELETE FROM library_item_categories WHERE library_item_id = %s", (item_id,))
    if category_ids:
        await db.execute(
            "INSERT INTO library_item_categories (library_item_id, category_id) "
            "SELECT %s, unnest(%s::uuid[])",
            (item_id, list(category_ids)),
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
    """Adds the product to the library, restores a revoked entitlement or makes a borrowed one the user's
    own; False when already owned."""
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
            # a borrowed (family-shared) game the user now gets becomes their own, playtime and all
            LibraryItem.revoked_at.is_not(None) | (LibraryItem.acquisition_type == "family_shared"),
        )
        .values(
            revoked_at=None,
            revoke_reason=None,
            revoked_order_id=None,
            is_hidden=False,
            lender_user_id=None,
            **values,
        )
        .returning(LibraryItem.id)
    )
    return restored is not None


_REVOKE = (
    "UPDATE library_items SET revoked_at = %s, revoke_reason = %s, revoked_order_id = %s "
    "WHERE user_id = %s AND revoked_at IS NULL"
)


async def revoke_items(
    db: Db,
    user_id: uuid.UUID,
    product_ids: Sequence[uuid.UUID] | None,
    *,
    reason: str,
    order_id: str | None,
    when: datetime,
    of_order: bool,
) -> list[uuid.UUID]:
    """Revokes the user's active items of these products (None: of every product), and with `of_order`
    only those the order granted; returns the products revoked (none when already revoked: idempotent).
    The item keeps its row, playtime, categories and achievements, hidden behind `revoked_at`."""
    sql, params = _REVOKE, [when, reason, order_id, user_id]
    if product_ids is not None:
        sql += " AND product_id = ANY(%s)"
        params.append(list(product_ids))
    if of_order:
        sql += " AND order_id = %s"
        params.append(order_id)
    rows = await db.all(f"{sql} RETURNING product_id", params)
    return [row[0] for row in rows]


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
    db: Db, user_id: uuid.UUID, cursor: list[Any] | None, page_size: int
) -> tuple[list[CategoryView], list[Any] | None, int]:
    rows, next_cursor, total = await _CATEGORIES.page(db, ["c.user_id = %s"], [user_id], cursor, page_size)
    return [_category_view(row) for row in rows], next_cursor, total


async def add_category(db: Db, user_id: uuid.UUID, name: str) -> CategoryView | None:
    """The new category, or None when the user has one with that name (case-insensitively)."""
    row = await db.one(
        "INSERT INTO library_categories (id, user_id, name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING "
        "RETURNING id::text, name, created_at",
        (uuid.uuid4(), user_id, name),
    )
    return None if row is None else _category_view(row)


CATEGORY_TAKEN = "taken"


async def rename_category(
    db: Db, user_id: uuid.UUID, category_id: uuid.UUID, name: str
) -> CategoryView | str | None:
    """The renamed category; None when the user has no such category; CATEGORY_TAKEN when another of
    their categories has the name (case-insensitively)."""
    if (
        await db.one(
            "SELECT 1 FROM library_categories WHERE user_id = %s AND id = %s FOR UPDATE",
            (user_id, category_id),
        )
        is None
    ):
        return None
    try:
        row = await db.one(
            "UPDATE library_categories SET name = %s WHERE id = %s AND NOT EXISTS (SELECT 1 FROM "
            "library_categories o WHERE o.user_id = %s AND lower(o.name) = lower(%s) AND o.id <> %s) "
            "RETURNING id::text, name, created_at",
            (name, category_id, user_id, name, category_id),
        )
    except UniqueViolation:  # a concurrent rename or create took the name after the check
        return CATEGORY_TAKEN
    return CATEGORY_TAKEN if row is None else _category_view(row)


async def delete_category(db: Db, user_id: uuid.UUID, category_id: uuid.UUID) -> bool:
    """Deletes the user's category (its memberships go with it; the items stay). False if none."""
    deleted = await db.execute(
        "DELETE FROM library_categories WHERE user_id = %s AND id = %s", (user_id, category_id)
    )
    return deleted > 0


async def list_wishlist(
    db: Db, user_id: uuid.UUID, cursor: list[Any] | None, page_size: int
) -> tuple[list[WishlistItemView], list[Any] | None, int]:
    rows, next_cursor, total = await _WISHLIST.page(db, ["w.user_id = %s"], [user_id], cursor, page_size)
    return [_wishlist_view(row) for row in rows], next_cursor, total


_ADD_WISH = (
    "WITH added AS (INSERT INTO wishlist_items (id, user_id, product_id, priority, notes, added_timestamp) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
    "RETURNING id, product_id, added_timestamp, priority, notes) "
    f"SELECT {_WISH} FROM added w LEFT JOIN products p ON p.product_id = w.product_id"
)


async def add_wishlist_item(
    db: Db,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    priority: int,
    notes: str,
    added_at: datetime,
) -> WishlistItemView | None:
    """The new wishlist item (with its cached product), or None when the product is on the wishlist
    already."""
    row = await db.one(_ADD_WISH, (uuid.uuid4(), user_id, product_id, priority, notes, added_at))
    return None if row is None else _wishlist_view(row)


async def lock_wishlist_item(db: Db, user_id: uuid.UUID, product_id: uuid.UUID) -> WishlistItemView | None:
    """The user's wishlist item of the product (with its cached product), locked for an update."""
    row = await db.one(
        f"SELECT {_WISH} FROM wishlist_items w LEFT JOIN products p ON p.product_id = w.product_id "
        "WHERE w.user_id = %s AND w.product_id = %s FOR UPDATE OF w",
        (user_id, product_id),
    )
    return None if row is None else _wishlist_view(row)


async def set_wishlist_item(db: Db, item_id: uuid.UUID, *, priority: int, notes: str) -> None:
    await db.execute(
        "UPDATE wishlist_items SET priority = %s, notes = %s WHERE id = %s", (priority, notes, item_id)
    )


async def remove_wishes(db: Db, user_id: uuid.UUID, product_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Takes these products off the user's wishlist; the ones that were on it."""
    rows = await db.all(
        "DELETE FROM wishlist_items WHERE user_id = %s AND product_id = ANY(%s) RETURNING product_id",
        (user_id, list(product_ids)),
    )
    return [row[0] for row in rows]


async def remove_wishlist_item(db: Db, user_id: uuid.UUID, product_id: uuid.UUID) -> bool:
    removed = await db.execute(
        "DELETE FROM wishlist_items WHERE user_id = %s AND product_id = %s", (user_id, product_id)
    )
    return removed > 0


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


# ---------------------------------------------------------------------------------------- wishlist sales
@dataclass(frozen=True)
class PendingSale:
    id: uuid.UUID
    product_id: uuid.UUID
    product_name: str
    discount_percent: int
    cursor_user_id: uuid.UUID | None


async def open_sale(db: Db, product_id: uuid.UUID, key: str, percent: int, product_name: str) -> bool:
    """Records a sale to announce; False when this sale of the product was recorded before. The name is
    the event's, else the cached product's."""
    row = await db.one(
        "INSERT INTO wishlist_sales (id, product_id, sale_key, discount_percent, product_name) "
        "VALUES (%s, %s, %s, %s, coalesce(nullif(%s, ''), "
        "(SELECT name FROM products WHERE product_id = %s), '')) "
        "ON CONFLICT DO NOTHING RETURNING id",
        (uuid.uuid4(), product_id, key, percent, product_name, product_id),
    )
    return row is not None


async def lock_pending_sale(db: Db) -> PendingSale | None:
    """The oldest sale still being announced that no other worker holds, locked."""
    row = await db.one(
        "SELECT id, product_id, product_name, discount_percent, cursor_user_id FROM wishlist_sales "
        "WHERE finished_at IS NULL ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    return None if row is None else PendingSale(*row)


async def wishers_after(
    db: Db, product_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """The next `limit` users wishing for the product, in user id order, after `after`."""
    if after is None:
        rows = await db.all(
            "SELECT user_id FROM wishlist_items WHERE product_id = %s ORDER BY user_id LIMIT %s",
            (product_id, limit),
        )
    else:
        rows = await db.all(
            "SELECT user_id FROM wishlist_items WHERE product_id = %s AND user_id > %s "
            "ORDER BY user_id LIMIT %s",
            (product_id, after, limit),
        )
    return [row[0] for row in rows]


async def advance_sale(
    db: Db, sale_id: uuid.UUID, cursor: uuid.UUID | None, notified: int, *, finished_at: datetime | None
) -> None:
    await db.execute(
        "UPDATE wishlist_sales SET cursor_user_id = coalesce(%s, cursor_user_id), notified = notified + %s, "
        "batches = batches + 1, finished_at = %s WHERE id = %s",
        (cursor, notified, finished_at, sale_id),
    )
