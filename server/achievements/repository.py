"""SQL of the achievements capability."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.achievements.rules import Definition, Progress, ProgressChange
from server.achievements.tables import AchievementDefinition, UserAchievement
from server.library.tables import LibraryItem

D = AchievementDefinition
UA = UserAchievement


def _definition(row: AchievementDefinition) -> Definition:
    return Definition(
        product_id=str(row.product_id),
        api_name=row.api_name,
        display_name=row.display_name,
        description=row.description,
        hidden=row.hidden,
        max_progress=row.max_progress,
        icon_url=row.icon_url,
        icon_locked_url=row.icon_locked_url,
        display_order=row.display_order,
    )


async def upsert_definitions(
    session: AsyncSession, product_id: uuid.UUID, definitions: list[Definition]
) -> int:
    """Inserts or updates by api_name; the unlock counter and other definitions are left alone."""
    stmt = insert(D).values(
        [
            {
                "product_id": product_id,
                "api_name": d.api_name,
                "display_name": d.display_name,
                "description": d.description,
                "hidden": d.hidden,
                "max_progress": d.max_progress,
                "icon_url": d.icon_url,
                "icon_locked_url": d.icon_locked_url,
                "display_order": d.display_order,
            }
            for d in definitions
        ]
    )
    updated = (
        "display_name",
        "description",
        "hidden",
        "max_progress",
        "icon_url",
        "icon_locked_url",
        "display_order",
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[D.product_id, D.api_name],
        set_={**{c: stmt.excluded[c] for c in updated}, "updated_at": func.now()},
    )
    return len((await session.scalars(stmt.returning(D.api_name))).all())


async def record_progress(
    session: AsyncSession,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    api_name: str,
    change: ProgressChange,
    now: datetime,
) -> bool:
    """Writes a progress change; True only for the one transaction that performs the unlock.

    A single INSERT … ON CONFLICT DO UPDATE … WHERE NOT is_unlocked: concurrent writers of the same row
    queue on its lock and each re-checks the condition against the latest committed version, so exactly
    one of them sees the row still locked and returns it unlocked. GREATEST keeps progress monotonic even
    when the snapshot the change was computed from is stale.
    """
    stmt = insert(UA).values(
        user_id=user_id,
        product_id=product_id,
        achievement_api_name=api_name,
        progress=change.progress,
        is_unlocked=change.unlocks,
        unlocked_at=now if change.unlocks else None,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[UA.user_id, UA.product_id, UA.achievement_api_name],
        set_={
            "progress": func.greatest(UA.progress, stmt.excluded.progress),
            "is_unlocked": stmt.excluded.is_unlocked,
            "unlocked_at": stmt.excluded.unlocked_at,
            "updated_at": stmt.excluded.updated_at,
        },
        where=and_(
            UA.is_unlocked.is_(False),
            stmt.excluded.is_unlocked | (stmt.excluded.progress > UA.progress),
        ),
    ).returning(UA.is_unlocked)
    unlocked = await session.scalar(stmt)
    if unlocked:
        await session.execute(
            update(D)
            .where(D.product_id == product_id, D.api_name == api_name)
            .values(unlocked_count=D.unlocked_count + 1)
        )
    return bool(unlocked)


@dataclass(frozen=True, slots=True)
class StatusRow:
    definition: Definition
    progress: Progress
    unlocked_count: int
    position: int


async def count_definitions(session: AsyncSession, product_ids: list[uuid.UUID]) -> int:
    return await session.scalar(select(func.count()).select_from(D).where(D.product_id.in_(product_ids)))


async def status_rows(
    session: AsyncSession,
    user_id: uuid.UUID,
    product_ids: list[uuid.UUID],
    *,
    after: tuple[int, int, str] | None = None,
    limit: int | None = None,
    api_name: str | None = None,
) -> list[StatusRow]:
    """Definitions of the products with the user's progress, ordered by product (in the given order),
    display_order, api_name; keyset-paginated after (position, display_order, api_name)."""
    position = case({pid: i for i, pid in enumerate(product_ids)}, value=D.product_id)
    stmt = (
        select(D, UA.progress, UA.is_unlocked, UA.unlocked_at, position.label("position"))
        .outerjoin(
            UA,
            and_(UA.user_id == user_id, UA.product_id == D.product_id, UA.achievement_api_name == D.api_name),
        )
        .where(D.product_id.in_(product_ids))
        .order_by(position, D.display_order, D.api_name)
    )
    if api_name is not None:
        stmt = stmt.where(D.api_name == api_name)
    if after is not None:
        stmt = stmt.where(tuple_(position, D.display_order, D.api_name) > tuple_(*after))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = (await session.execute(stmt)).all()
    return [
        StatusRow(
            definition=_definition(d),
            progress=Progress(progress=p, is_unlocked=u, unlocked_at=at) if p is not None else Progress(),
            unlocked_count=d.unlocked_count,
            position=pos,
        )
        for d, p, u, at, pos in rows
    ]


async def owner_counts(session: AsyncSession, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many users own each product now (products nobody owns are absent)."""
    rows = await session.execute(
        select(LibraryItem.product_id, func.count())
        .where(LibraryItem.product_id.in_(product_ids), LibraryItem.revoked_at.is_(None))
        .group_by(LibraryItem.product_id)
    )
    return {product_id: count for product_id, count in rows}
