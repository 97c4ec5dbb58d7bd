"""SQL of the achievements capability."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.achievements.rules import Definition, Progress, ProgressChange
from server.achievements.tables import AchievementDefinition
from server.core.db import Db

D = AchievementDefinition


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


_RECORD_PROGRESS = (
    "INSERT INTO user_achievements AS ua "
    "(user_id, product_id, achievement_api_name, progress, is_unlocked, unlocked_at, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (user_id, product_id, achievement_api_name) DO UPDATE SET "
    "progress = greatest(ua.progress, excluded.progress), is_unlocked = excluded.is_unlocked, "
    "unlocked_at = excluded.unlocked_at, updated_at = excluded.updated_at "
    "WHERE ua.is_unlocked IS false AND (excluded.is_unlocked OR excluded.progress > ua.progress) "
    "RETURNING ua.is_unlocked"
)
UNLOCK_COUNT_SHARDS = 16
_COUNT_UNLOCK = (
    "INSERT INTO achievement_unlock_counts AS c (product_id, api_name, shard, unlocked_count) "
    "VALUES (%s, %s, %s, 1) ON CONFLICT (product_id, api_name, shard) "
    "DO UPDATE SET unlocked_count = c.unlocked_count + 1"
)


def unlock_count_shard(user_id: uuid.UUID) -> int:
    """The counter row a user's unlocks count in: fixed per user, spread evenly over the shards."""
    return user_id.int % UNLOCK_COUNT_SHARDS


async def record_progress(
    db: Db,
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
    unlocked_at = now if change.unlocks else None
    unlocked = await db.value(
        _RECORD_PROGRESS, (user_id, product_id, api_name, change.progress, change.unlocks, unlocked_at, now)
    )
    if unlocked:
        await db.execute(_COUNT_UNLOCK, (product_id, api_name, unlock_count_shard(user_id)))
    return bool(unlocked)


@dataclass(slots=True)
class StatusRow:
    definition: Definition
    progress: Progress
    unlocked_count: int
    position: int


# position: where the definition's product is in the requested list (0-based), the first sort key
_STATUS_COLUMNS = (
    "d.product_id::text, d.api_name, d.display_name, d.description, d.hidden, d.max_progress, d.icon_url, "
    "d.icon_locked_url, d.display_order, "
    "(SELECT coalesce(sum(c.unlocked_count), 0)::bigint FROM achievement_unlock_counts c "
    "WHERE c.product_id = d.product_id AND c.api_name = d.api_name), "
    "ua.progress, ua.is_unlocked, ua.unlocked_at, "
    "array_position(%s::uuid[], d.product_id) - 1 AS position"
)
_STATUS_SOURCE = (
    "achievement_definitions d LEFT JOIN user_achievements ua ON ua.user_id = %s "
    "AND ua.product_id = d.product_id AND ua.achievement_api_name = d.api_name "
    "WHERE d.product_id = ANY(%s)"
)
_STATUS_ORDER = "ORDER BY position, d.display_order, d.api_name"


def _status_row(row: Sequence[Any]) -> StatusRow:
    """Positionally, from _STATUS_COLUMNS (in Definition's and Progress's field order; keyword arguments
    cost more per row: docs/ARCHITECTURE.md, "Database access")."""
    return StatusRow(
        Definition(*row[:9]),
        Progress(*row[10:13]) if row[10] is not None else Progress(),
        row[9],
        row[13],
    )


async def status_page(
    db: Db,
    user_id: uuid.UUID,
    product_ids: list[uuid.UUID],
    *,
    after: tuple[int, int, str] | None,
    limit: int,
) -> tuple[list[StatusRow], int]:
    """Up to `limit` definitions of the products with the user's progress, ordered by product (in the given
    order), display_order, api_name, after (position, display_order, api_name); and how many definitions
    the products have (counted with the first page, by a statement of its own for the others)."""
    params: tuple[Any, ...] = (product_ids, user_id, product_ids)
    if after is None:
        rows = await db.all(
            f"SELECT {_STATUS_COLUMNS}, count(*) OVER () FROM {_STATUS_SOURCE} {_STATUS_ORDER} LIMIT %s",
            (*params, limit),
        )
        return [_status_row(row) for row in rows], rows[0][-1] if rows else 0
    total = await db.value(
        "SELECT count(*) FROM achievement_definitions WHERE product_id = ANY(%s)", (product_ids,)
    )
    rows = await db.all(
        f"SELECT {_STATUS_COLUMNS} FROM {_STATUS_SOURCE} "
        f"AND (array_position(%s::uuid[], d.product_id) - 1, d.display_order, d.api_name) > (%s, %s, %s) "
        f"{_STATUS_ORDER} LIMIT %s",
        (*params, product_ids, *after, limit),
    )
    return [_status_row(row) for row in rows], total


async def status_row(db: Db, user_id: uuid.UUID, product_id: uuid.UUID, api_name: str) -> StatusRow | None:
    """One definition of the product with the user's progress; None when the product has no such one."""
    row = await db.one(
        f"SELECT {_STATUS_COLUMNS} FROM {_STATUS_SOURCE} AND d.api_name = %s",
        ([product_id], user_id, [product_id], api_name),
    )
    return None if row is None else _status_row(row)
