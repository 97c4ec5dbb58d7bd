"""Ownership for tests: a library item inserted directly, as an entitlement grant would leave it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.library.tables import LibraryItem

# When a directly inserted item was acquired, unless told: long enough ago that offline sessions of the
# last weeks are after the acquisition.
ACQUIRED_AGO = timedelta(days=60)


async def grant(
    sessions: async_sessionmaker[AsyncSession],
    user_id: uuid.UUID,
    *product_ids: uuid.UUID,
    acquired_at: datetime | None = None,
) -> None:
    acquired_at = acquired_at or datetime.now(UTC) - ACQUIRED_AGO
    async with sessions() as session, session.begin():
        session.add_all(
            LibraryItem(
                user_id=user_id,
                product_id=product_id,
                acquisition_type="purchase",
                acquisition_timestamp=acquired_at,
            )
            for product_id in product_ids
        )
