"""SQL of download settings: one user's row, and its compare-and-swap write (server/core/versioned.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from server.core import versioned
from server.core.db import Db
from server.core.versioned import Values, VersionedTable

TABLE = VersionedTable(
    "download_settings",
    key=("user_id",),
    columns=(
        "max_concurrent_downloads",
        "bandwidth_limit_kbps",
        "schedule_start",
        "schedule_end",
        "schedule_time_zone",
        "product_branches",
        "updated_by_device_id",
        "updated_at",
    ),
    json=frozenset({"product_branches"}),
)


async def find(db: Db, user_id: uuid.UUID) -> tuple[int, Values] | None:
    """(version, columns) of the user's settings, or None while they are the defaults."""
    return await versioned.read(db, TABLE, (user_id,))


async def write(
    db: Db, user_id: uuid.UUID, *, etag: str, build: Callable[[Values | None], Values]
) -> tuple[int, Values]:
    return await versioned.write(db, TABLE, (user_id,), etag=etag, build=build)
