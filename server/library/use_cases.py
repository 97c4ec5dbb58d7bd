"""Library use cases: each runs in one unit of work; events go to the outbox in the same transaction.

Self-service use cases take the caller's user id (the JWT subject) and touch only that user's rows; the
entitlement use cases are called by the internal RPCs and by the payment consumer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from server.core import replay
from server.core.deps import Deps
from server.core.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from server.core.pagination import decode_page_token, encode_page_token, query_fingerprint
from server.core.replay import request_key
from server.core.uow import UnitOfWork
from server.library import repository, rules
from server.library.views import (
    CategoryView,
    GrantResult,
    LibraryItemView,
    Page,
    RevokeResult,
    UpsertResult,
    WishlistItemView,
)


@dataclass(frozen=True)
class LibraryQuery:
    installation_status: str | None
    category_id: uuid.UUID | None
    search: str
    sort: str
    include_hidden: bool
    page_size: int
    page_token: str


async def list_library_items(deps: Deps, user_id: uuid.UUID, query: LibraryQuery) -> Page[LibraryItemView]:
    fingerprint = query_fingerprint(
        "library-items", user_id, query.installation_status, query.category_id, query.search, query.sort,
        query.include_hidden,
    )  # fmt: skip
    cursor = decode_page_token(query.page_token, fingerprint)
    async with deps.uow.read() as db:
        items, next_cursor, total = await repository.list_items(
            db,
            user_id,
            installation_status=query.installation_status,
            category_id=query.category_id,
            name_pattern=rules.name_search_pattern(query.search) if query.search else None,
            include_hidden=query.include_hidden,
            sort=query.sort,
            cursor=cursor,
            page_size=query.page_size,
        )
    return Page(items, encode_page_token(next_cursor, fingerprint) if next_cursor else "", total)


@dataclass(frozen=True)
class ItemChanges:
    """The fields UpdateLibraryItem changes (`fields`) and their new values."""

    fields: frozenset[str]
    is_hidden: bool
    category_ids: list[uuid.UUID]
    installation_status: str | None


async def update_library_item(
    deps: Deps, user_id: uuid.UUID, item_id: uuid.UUID, changes: ItemChanges
) -> LibraryItemView:
    async with deps.uow() as uow:
        if not await repository.lock_item(uow.db, user_id, item_id):
            raise NotFound("library item not found", reason="LIBRARY_ITEM_NOT_FOUND")
        if rules.CATEGORY_IDS in changes.fields:
            category_ids = list(dict.fromkeys(changes.category_ids))
            own = await repository.own_category_ids(uow.db, user_id, category_ids)
            unknown = [i for i, c in enumerate(changes.category_ids) if c not in own]
            if unknown:
                raise InvalidArgument(
                    [FieldViolation(f"category_ids[{i}]", "unknown category") for i in unknown]
                )
            await repository.replace_item_categories(uow.db, item_id, category_ids)
        await repository.update_item(
            uow.db,
            item_id,
            is_hidden=changes.is_hidden if rules.IS_HIDDEN in changes.fields else None,
            installation_status=(
                changes.installation_status if rules.INSTALLATION_STATUS in changes.fields else None
            ),
        )
        view = await repository.item_view(uow.db, user_id, item_id)
        await uow.commit()
    return view


async def list_categories(
    deps: Deps, user_id: uuid.UUID, page_size: int, page_token: str
) -> Page[CategoryView]:
    fingerprint = query_fingerprint("categories", user_id)
    cursor = decode_page_token(page_token, fingerprint)
    async with deps.uow.read() as db:
        items, next_cursor, total = await repository.list_categories(db, user_id, cursor, page_size)
    return Page(items, encode_page_token(next_cursor, fingerprint) if next_cursor else "", total)


async def create_category(
    deps: Deps, user_id: uuid.UUID, name: str, request_id: uuid.UUID | None
) -> CategoryView:
    key = request_key(user_id, "CreateCategory", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, CategoryView)) is not None:
            return first
        category = await repository.add_category(uow.db, user_id, name)
        if category is None:
            raise AlreadyExists("a category with this name exists", reason="CATEGORY_ALREADY_EXISTS")
        await replay.remember(uow, key, category)
        await uow.commit()
    return category


def category_not_found() -> NotFound:
    return NotFound("category not found", reason="CATEGORY_NOT_FOUND")


async def update_category(deps: Deps, user_id: uuid.UUID, category_id: uuid.UUID, name: str) -> CategoryView:
    async with deps.uow() as uow:
        category = await repository.rename_category(uow.db, user_id, category_id, name)
        if category is None:
            raise category_not_found()
        if category == repository.CATEGORY_TAKEN:
            raise AlreadyExists("a category with this name exists", reason="CATEGORY_ALREADY_EXISTS")
        await uow.commit()
    return category


async def delete_category(deps: Deps, user_id: uuid.UUID, category_id: uuid.UUID) -> None:
    """Deletes the category; its items stay in the library with their other categories."""
    async with deps.uow() as uow:
        if not await repository.delete_category(uow.db, user_id, category_id):
            raise category_not_found()
        await uow.commit()


async def list_wishlist(
    deps: Deps, user_id: uuid.UUID, page_size: int, page_token: str
) -> Page[WishlistItemView]:
    fingerprint = query_fingerprint("wishlist", user_id)
    cursor = decode_page_token(page_token, fingerprint)
    async with deps.uow.read() as db:
        items, next_cursor, total = await repository.list_wishlist(db, user_id, cursor, page_size)
    return Page(items, encode_page_token(next_cursor, fingerprint) if next_cursor else "", total)


async def add_wishlist_item(
    deps: Deps,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    priority: int,
    notes: str,
    request_id: uuid.UUID | None,
) -> WishlistItemView:
    key = request_key(user_id, "AddWishlistItem", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, WishlistItemView)) is not None:
            return first
        now = deps.clock()
        item = await repository.add_wishlist_item(
            uow.db, user_id, product_id, priority=priority, notes=notes, added_at=now
        )
        if item is None:
            raise AlreadyExists(
                "the product is on the wishlist already", reason="WISHLIST_ITEM_ALREADY_EXISTS"
            )
        uow.add_event(rules.WISHLIST_ITEM_ADDED, user_id, rules.wishlist_payload(user_id, product_id, now))
        await replay.remember(uow, key, item)
        await uow.commit()
    return item


async def remove_wishlist_item(deps: Deps, user_id: uuid.UUID, product_id: uuid.UUID) -> bool:
    async with deps.uow() as uow:
        removed = await repository.remove_wishlist_item(uow.db, user_id, product_id)
        if removed:
            payload = rules.wishlist_payload(user_id, product_id, deps.clock())
            uow.add_event(rules.WISHLIST_ITEM_REMOVED, user_id, payload)
        await uow.commit()
    return removed


@dataclass(frozen=True)
class WishChanges:
    """The fields UpdateWishlistItem changes (`fields`) and their new values."""

    fields: frozenset[str]
    priority: int
    notes: str


async def update_wishlist_item(
    deps: Deps, user_id: uuid.UUID, product_id: uuid.UUID, changes: WishChanges
) -> WishlistItemView:
    """Changes priority and/or notes in place; one `wishlist.item.updated` event when a value changed."""
    async with deps.uow() as uow:
        item = await repository.lock_wishlist_item(uow.db, user_id, product_id)
        if item is None:
            raise NotFound("the product is not on the wishlist", reason="WISHLIST_ITEM_NOT_FOUND")
        updated = replace(
            item,
            priority=changes.priority if rules.PRIORITY in changes.fields else item.priority,
            notes=changes.notes if rules.NOTES in changes.fields else item.notes,
        )
        if updated != item:
            await repository.set_wishlist_item(
                uow.db, item.id, priority=updated.priority, notes=updated.notes
            )
            payload = rules.wishlist_updated_payload(
                user_id, product_id, updated.priority, updated.notes, deps.clock()
            )
            uow.add_event(rules.WISHLIST_ITEM_UPDATED, user_id, payload)
        await uow.commit()
    return updated


@dataclass(frozen=True)
class Grant:
    product_id: uuid.UUID
    acquisition_type: str


async def grant_in(
    uow: UnitOfWork,
    user_id: uuid.UUID,
    grants: Sequence[Grant],
    *,
    order_id: str | None,
    acquired_at: datetime,
    now: datetime,
) -> GrantResult:
    """Grants inside the caller's unit of work (shared by GrantEntitlements and the payment consumer).

    An order is applied once: a second grant for it changes nothing and reports the current items."""
    newly: list[uuid.UUID] = []
    if order_id is None or await repository.claim_order(uow.session, order_id, user_id):
        for grant in grants:
            added = await repository.add_item(
                uow.session,
                user_id,
                grant.product_id,
                acquisition_type=grant.acquisition_type,
                acquired_at=acquired_at,
                added_at=now,
                order_id=order_id,
            )
            if added:
                newly.append(grant.product_id)
                payload = rules.item_added_payload(user_id, grant.product_id, grant.acquisition_type, now)
                uow.add_event(rules.ITEM_ADDED, user_id, payload)
    if newly:
        # a product now owned leaves the wishlist (SPEC §6)
        for product_id in await repository.remove_wishes(uow.db, user_id, newly):
            uow.add_event(
                rules.WISHLIST_ITEM_REMOVED, user_id, rules.wishlist_payload(user_id, product_id, now)
            )
    owned = await repository.owned_items(uow.db, user_id, [g.product_id for g in grants])
    return GrantResult([owned[g.product_id] for g in grants if g.product_id in owned], newly)


async def grant_entitlements(
    deps: Deps,
    caller: str,
    user_id: uuid.UUID,
    grants: Sequence[Grant],
    *,
    order_id: str | None,
    request_id: uuid.UUID | None,
) -> GrantResult:
    key = request_key(caller, "GrantEntitlements", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, GrantResult)) is not None:
            return first
        now = deps.clock()
        result = await grant_in(uow, user_id, grants, order_id=order_id, acquired_at=now, now=now)
        await replay.remember(uow, key, result)
        await uow.commit()
    return result


async def revoke_entitlement(
    deps: Deps,
    caller: str,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    reason: str,
    order_id: str | None,
    request_id: uuid.UUID | None,
) -> RevokeResult:
    key = request_key(caller, "RevokeEntitlement", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, RevokeResult)) is not None:
            return first
        now = deps.clock()
        revoked = await revoke_in(uow, user_id, [product_id], reason=reason, order_id=order_id, now=now)
        result = RevokeResult(bool(revoked))
        await replay.remember(uow, key, result)
        await uow.commit()
    return result


async def revoke_in(
    uow: UnitOfWork,
    user_id: uuid.UUID,
    product_ids: Sequence[uuid.UUID] | None,
    *,
    reason: str,
    order_id: str | None,
    now: datetime,
    of_order: bool = False,
) -> list[uuid.UUID]:
    """Revokes inside the caller's unit of work (RevokeEntitlement, the refund consumer): each product
    revoked emits `item.revoked` once; what is already revoked changes nothing. `of_order`: only items
    the order granted (a refund of one order never takes a later purchase of the same product)."""
    revoked = await repository.revoke_items(
        uow.db, user_id, product_ids, reason=reason, order_id=order_id, when=now, of_order=of_order
    )
    for product_id in revoked:
        uow.add_event(
            rules.ITEM_REVOKED, user_id, rules.item_revoked_payload(user_id, product_id, reason, now)
        )
    return revoked


async def refund_in(uow: UnitOfWork, refund: rules.RefundedOrder, now: datetime) -> list[uuid.UUID]:
    """The payment service's refund of an order: revokes what the user still holds from it."""
    return await revoke_in(
        uow,
        refund.user_id,
        refund.product_ids,
        reason=refund.reason,
        order_id=refund.order_id,
        now=now,
        of_order=True,
    )


async def check_entitlement(deps: Deps, user_id: uuid.UUID, product_id: uuid.UUID) -> LibraryItemView | None:
    async with deps.uow.read() as db:
        owned = await repository.owned_items(db, user_id, [product_id])
    return owned.get(product_id)


async def mark_installed_in(
    uow: UnitOfWork, user_id: uuid.UUID, product_id: uuid.UUID, version_id: uuid.UUID
) -> bool:
    """Download completion (inside the downloads' unit of work): the user's item is installed, at this
    version. False when the user has no active item for the product (nothing to mark)."""
    return await repository.mark_installed(uow.session, user_id, product_id, version_id)


async def upsert_products_in(uow: UnitOfWork, rows: Sequence[dict]) -> UpsertResult:
    written = await repository.upsert_products(uow.session, rows)
    return UpsertResult(written, len(rows) - written)


async def upsert_products(deps: Deps, rows: Sequence[dict]) -> UpsertResult:
    async with deps.uow() as uow:
        result = await upsert_products_in(uow, rows)
        await uow.commit()
    return result


async def announce_sale_in(uow: UnitOfWork, sale: rules.Sale) -> bool:
    """Records a catalog sale for the fan-out worker (inside the consumer's unit of work); False when
    this sale was announced before."""
    return await repository.open_sale(uow.db, sale.product_id, sale.key, sale.percent, sale.product_name)


async def fan_out_sale_batch(deps: Deps, batch_size: int) -> bool:
    """Announces one pending sale to its next `batch_size` wishers, in one transaction of bounded size:
    their `wishlistGameOnSale` notifications go to the outbox and the sale's cursor moves past them
    together, so a crash or a second worker never tells anyone twice. False when no sale is pending."""
    async with deps.uow() as uow:
        sale = await repository.lock_pending_sale(uow.db)
        if sale is None:
            return False
        wishers = await repository.wishers_after(uow.db, sale.product_id, sale.cursor_user_id, batch_size)
        payload = rules.sale_notification(sale.product_id, sale.product_name, sale.discount_percent)
        for user_id in wishers:
            uow.notify(user_id, rules.WISHLIST_GAME_ON_SALE, payload)
        finished = deps.clock() if len(wishers) < batch_size else None
        await repository.advance_sale(
            uow.db, sale.id, wishers[-1] if wishers else None, len(wishers), finished_at=finished
        )
        await uow.commit()
    return True
