"""Ownership checks other capabilities use (playtime, achievements)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import ProductAccessDenied
from server.library.tables import LibraryItem


async def owned_item(session: AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID) -> LibraryItem | None:
    """The caller's active library item for the product, or None when not owned (or revoked)."""
    return await session.scalar(
        select(LibraryItem).where(
            LibraryItem.user_id == user_id,
            LibraryItem.product_id == product_id,
            LibraryItem.revoked_at.is_(None),
        )
    )


async def require_owned(session: AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID) -> LibraryItem:
    """Raises PERMISSION_DENIED PRODUCT_ACCESS_DENIED unless the user owns the product."""
    item = await owned_item(session, user_id, product_id)
    if item is None:
        raise ProductAccessDenied(str(product_id))
    return item


async def owned_product_ids(
    session: AsyncSession, user_id: uuid.UUID, product_ids: Iterable[uuid.UUID] | None = None
) -> set[uuid.UUID]:
    """Which of the products the user owns now (not revoked); every owned product when `product_ids` is
    None."""
    query = select(LibraryItem.product_id).where(
        LibraryItem.user_id == user_id, LibraryItem.revoked_at.is_(None)
    )
    if product_ids is not None:
        query = query.where(LibraryItem.product_id.in_(list(product_ids)))
    return set(await session.scalars(query))
