"""SQL of game settings: one document, and its compare-and-swap write (server/core/versioned.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core import versioned
from server.game_settings.tables import UserGameSetting


def _key(user_id: uuid.UUID, product_id: uuid.UUID) -> dict[str, Any]:
    return {"user_id": user_id, "product_id": product_id}


async def find(session: AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID) -> UserGameSetting | None:
    return await versioned.read(session, UserGameSetting, _key(user_id, product_id))


async def write(
    session: AsyncSession,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    etag: str,
    build: Callable[[UserGameSetting | None], dict[str, Any]],
) -> tuple[int, dict[str, Any]]:
    return await versioned.write(session, UserGameSetting, _key(user_id, product_id), etag=etag, build=build)
