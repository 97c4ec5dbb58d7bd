"""SQL of download settings: one user's row, and its compare-and-swap write (server/core/versioned.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core import versioned
from server.downloads.settings_tables import DownloadSettingsRow


async def find(session: AsyncSession, user_id: uuid.UUID) -> DownloadSettingsRow | None:
    return await versioned.read(session, DownloadSettingsRow, {"user_id": user_id})


async def write(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    etag: str,
    build: Callable[[DownloadSettingsRow | None], dict[str, Any]],
) -> tuple[int, dict[str, Any]]:
    return await versioned.write(session, DownloadSettingsRow, {"user_id": user_id}, etag=etag, build=build)
