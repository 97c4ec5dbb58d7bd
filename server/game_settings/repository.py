"""SQL of game settings: one document, and its compare-and-swap write (server/core/versioned.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from server.core import versioned
from server.core.db import Db
from server.core.versioned import Values, VersionedTable

TABLE = VersionedTable(
    "user_game_settings",
    key=("user_id", "product_id"),
    columns=("settings_payload", "updated_by_device_id", "last_synced_at"),
    json=frozenset({"settings_payload"}),
)


async def find(db: Db, user_id: uuid.UUID, product_id: uuid.UUID) -> tuple[int, Values] | None:
    """(version, columns) of the document, or None when never written."""
    return await versioned.read(db, TABLE, (user_id, product_id))


async def write(
    db: Db,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    etag: str,
    build: Callable[[Values | None], Values],
) -> tuple[int, Values]:
    return await versioned.write(db, TABLE, (user_id, product_id), etag=etag, build=build)
