"""Ownership checks other capabilities use (playtime, achievements, game settings, downloads, ...).

Each takes a `Db` (`uow.db`, a read unit's) or, for callers written before `Db`, the unit's session."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from psycopg import AsyncCursor
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import Db, db_of
from server.core.errors import ProductAccessDenied

_OWNED = "SELECT product_id FROM library_items WHERE user_id = %s AND revoked_at IS NULL"
_OWNS = f"{_OWNED} AND product_id = %s"
_OWNED_TEXT = "SELECT product_id::text FROM library_items WHERE user_id = %s AND revoked_at IS NULL"


async def owns(db: Db | AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID) -> bool:
    """Whether the user owns the product now (an active, not revoked, library item)."""
    db = await db_of(db)
    return await db.one(_OWNS, (user_id, product_id)) is not None


async def require_owned(db: Db | AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID) -> None:
    """Raises PERMISSION_DENIED PRODUCT_ACCESS_DENIED unless the user owns the product."""
    if not await owns(db, user_id, product_id):
        raise ProductAccessDenied(str(product_id))


class Ownership:
    """`require_owned` in the round trip of the caller's own statements: `send` queues the query in the
    caller's psycopg pipeline (`conn.pipeline()`), and `require`, once the pipeline has synced, raises as
    `require_owned` does. What the caller sent with it must be undone by its transaction's rollback."""

    __slots__ = ("_answer", "_product_id", "_user_id")

    def __init__(self, user_id: uuid.UUID, product_id: uuid.UUID):
        self._user_id, self._product_id = user_id, product_id
        self._answer: AsyncCursor | None = None

    async def send(self, db: Db) -> None:
        self._answer = await db.conn.execute(_OWNS, (self._user_id, self._product_id))

    async def require(self) -> None:
        if self._answer is None:
            raise RuntimeError("Ownership.send was not called")
        if await self._answer.fetchone() is None:
            raise ProductAccessDenied(str(self._product_id))


async def owned_product_ids(
    db: Db | AsyncSession, user_id: uuid.UUID, product_ids: Iterable[uuid.UUID] | None = None
) -> set[uuid.UUID]:
    """Which of the products the user owns now (not revoked); every owned product when `product_ids` is
    None."""
    db = await db_of(db)
    if product_ids is None:
        rows = await db.all(_OWNED, (user_id,))
    else:
        rows = await db.all(f"{_OWNED} AND product_id = ANY(%s)", (user_id, list(product_ids)))
    return {row[0] for row in rows}


async def owned_product_texts(db: Db, user_id: uuid.UUID) -> set[str]:
    """Every product the user owns now, as canonical id text (for answers that carry ids as text)."""
    rows = await db.all(_OWNED_TEXT, (user_id,))
    return {row[0] for row in rows}


async def owner_counts(db: Db, product_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many users own each product now (products nobody owns are absent): the count a trigger keeps
    in step with every grant and revoke (migration 0017_library_extras), read by key."""
    rows = await db.all(
        "SELECT product_id, owners FROM product_owner_counts WHERE product_id = ANY(%s) AND owners > 0",
        (list(product_ids),),
    )
    return dict(rows)


async def acquired_at(
    db: Db, user_id: uuid.UUID, product_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    """When the user acquired each of these products they own now (not revoked)."""
    rows = await db.all(
        "SELECT product_id, acquisition_timestamp FROM library_items WHERE user_id = %s "
        "AND revoked_at IS NULL AND product_id = ANY(%s)",
        (user_id, list(product_ids)),
    )
    return dict(rows)


async def revoked_times(
    db: Db, pairs: Iterable[tuple[uuid.UUID, uuid.UUID]]
) -> dict[tuple[uuid.UUID, uuid.UUID], datetime]:
    """When each (user, product) entitlement of these was revoked; those owned (or never held) are absent."""
    pairs = list(pairs)
    rows = await db.all(
        "SELECT li.user_id, li.product_id, li.revoked_at FROM unnest(%s::uuid[], %s::uuid[]) AS k(u, p) "
        "JOIN library_items li ON li.user_id = k.u AND li.product_id = k.p WHERE li.revoked_at IS NOT NULL",
        ([u for u, _ in pairs], [p for _, p in pairs]),
    )
    return {(u, p): when for u, p, when in rows}
