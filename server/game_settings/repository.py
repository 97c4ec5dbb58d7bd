"""SQL of game settings: read one document, and the compare-and-swap write."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.game_settings.tables import UserGameSetting


async def find(session: AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID) -> UserGameSetting | None:
    return await session.scalar(
        select(UserGameSetting)
        .where(UserGameSetting.user_id == user_id, UserGameSetting.product_id == product_id)
        .execution_options(populate_existing=True)
    )


async def swap(
    session: AsyncSession,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    expected_version: int,
    payload: dict[str, Any],
    device_id: str,
    now: datetime,
) -> bool:
    """Writes the document as version `expected_version + 1` if it is still at `expected_version` (0: does
    not exist yet); False when another write changed it first.

    Under READ COMMITTED a concurrent writer of the same row waits for the first one's commit and then
    re-checks the condition against the committed row, so exactly one of two racing writers succeeds.
    """
    values = {
        "settings_payload": payload,
        "version": expected_version + 1,
        "updated_by_device_id": device_id,
        "last_synced_at": now,
    }
    if expected_version == 0:
        statement = (
            pg_insert(UserGameSetting)
            .values(user_id=user_id, product_id=product_id, **values)
            .on_conflict_do_nothing()
            .returning(UserGameSetting.version)
        )
    else:
        statement = (
            update(UserGameSetting)
            .where(
                UserGameSetting.user_id == user_id,
                UserGameSetting.product_id == product_id,
                UserGameSetting.version == expected_version,
            )
            .values(**values)
            .returning(UserGameSetting.version)
        )
    return await session.scalar(statement) is not None
