"""Ownership for tests: a library item inserted directly, as an entitlement grant would leave it."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.library.tables import LibraryItem


async def grant(
    sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID, *product_ids: uuid.UUID
) -> None:
    async with sessions() as session, session.begin():
        session.add_all(
            LibraryItem(user_id=user_id, product_id=product_id, acquisition_type="purchase")
            for product_id in product_ids
        )
