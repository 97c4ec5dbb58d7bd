"""Playtime SQL: sessions, credited intervals, and the playtime columns of library items."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from server.core.db import Db
from server.core.uow import UnitOfWork
from server.library.tables import LibraryItem
from server.playtime.rules import DeviceInterval, Interval
from server.playtime.tables import SOURCE_OFFLINE, PlaytimeInterval, PlaytimeSession


@dataclass(frozen=True, slots=True)
class PlayedInterval:
    session_id: uuid.UUID
    product_id: uuid.UUID
    played: DeviceInterval


@dataclass(frozen=True, slots=True)
class ActiveSession:
    id: uuid.UUID
    product_id: uuid.UUID
    device_id: str
    user_id: uuid.UUID | None = None


_PLAYED = (
    "SELECT session_id, product_id, device_id, started_at, ended_at FROM playtime_intervals "
    "WHERE user_id = %s"
)


async def played(
    db: Db, user_id: uuid.UUID, product_ids: list[uuid.UUID] | None = None
) -> list[PlayedInterval]:
    """The user's credited intervals (of these products)."""
    if product_ids is None:
        rows = await db.all(_PLAYED, (user_id,))
    else:
        rows = await db.all(f"{_PLAYED} AND product_id = ANY(%s)", (user_id, product_ids))
    return [PlayedInterval(s, p, DeviceInterval(d, Interval(start, end))) for s, p, d, start, end in rows]


_ACTIVE = "SELECT id, product_id, device_id FROM playtime_sessions WHERE ended_at IS NULL AND user_id = %s"


async def active_sessions_of(
    db: Db, user_id: uuid.UUID, product_ids: list[uuid.UUID] | None = None
) -> list[ActiveSession]:
    """The user's active sessions (of these products)."""
    if product_ids:
        rows = await db.all(f"{_ACTIVE} AND product_id = ANY(%s)", (user_id, product_ids))
    else:
        rows = await db.all(_ACTIVE, (user_id,))
    return [ActiveSession(*row) for row in rows]


async def active_sessions_of_users(db: Db, user_ids: list[uuid.UUID]) -> list[ActiveSession]:
    """The active sessions of these users (family sharing: who plays from one library)."""
    rows = await db.all(
        "SELECT id, product_id, device_id, user_id FROM playtime_sessions "
        "WHERE ended_at IS NULL AND user_id = ANY(%s)",
        (user_ids,),
    )
    return [ActiveSession(*row) for row in rows]


class PlaytimeRepository:
    """The ORM side of playtime: sessions are loaded, changed and flushed by the use cases and workers."""

    def __init__(self, uow: UnitOfWork):
        self._session = uow.session
        self._db = uow.db

    def add(self, row: PlaytimeSession) -> None:
        self._session.add(row)

    async def flush(self) -> None:
        await self._session.flush()

    async def get(self, session_id: uuid.UUID, *, for_update: bool = False) -> PlaytimeSession | None:
        query = select(PlaytimeSession).where(PlaytimeSession.id == session_id)
        if for_update:
            query = query.with_for_update()
        return await self._session.scalar(query)

    async def lock_active(self, session_id: uuid.UUID) -> PlaytimeSession | None:
        """The session if still active, locked; None if it ended or another worker holds it."""
        return await self._session.scalar(
            select(PlaytimeSession)
            .where(PlaytimeSession.id == session_id, PlaytimeSession.ended_at.is_(None))
            .with_for_update(skip_locked=True)
        )

    async def active_on_device(
        self, user_id: uuid.UUID, product_id: uuid.UUID, device_id: str
    ) -> PlaytimeSession | None:
        return await self._session.scalar(
            select(PlaytimeSession)
            .where(
                PlaytimeSession.user_id == user_id,
                PlaytimeSession.product_id == product_id,
                PlaytimeSession.device_id == device_id,
                PlaytimeSession.ended_at.is_(None),
            )
            .with_for_update()
        )

    async def active_sessions(
        self, user_id: uuid.UUID | None = None, product_ids: list[uuid.UUID] | None = None
    ) -> list[PlaytimeSession]:
        """Active sessions of a user (or of everyone, for the sweeper), optionally of some products."""
        query = select(PlaytimeSession).where(PlaytimeSession.ended_at.is_(None))
        if user_id is not None:
            query = query.where(PlaytimeSession.user_id == user_id)
        if product_ids:
            query = query.where(PlaytimeSession.product_id.in_(product_ids))
        return list(await self._session.scalars(query))

    async def offline_client_sessions(
        self, user_id: uuid.UUID, client_session_ids: Iterable[uuid.UUID]
    ) -> set[uuid.UUID]:
        """Which of these client session ids were already recorded as offline sessions."""
        found = await self._session.scalars(
            select(PlaytimeSession.client_session_id).where(
                PlaytimeSession.user_id == user_id,
                PlaytimeSession.source == SOURCE_OFFLINE,
                PlaytimeSession.client_session_id.in_(list(client_session_ids)),
            )
        )
        return set(found)

    async def lock_product(self, user_id: uuid.UUID, product_id: uuid.UUID) -> None:
        """Serialises crediting of one (user, product) so totals computed from the union are exact."""
        await self._session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"playtime:{user_id}:{product_id}"},
        )

    async def save_segments(self, row: PlaytimeSession, segments: Iterable[Interval]) -> None:
        """Upserts credited segments of a session; a segment's end only moves forward."""
        values = [
            {
                "session_id": row.id,
                "user_id": row.user_id,
                "product_id": row.product_id,
                "device_id": row.device_id,
                "started_at": s.start,
                "ended_at": s.end,
            }
            for s in segments
        ]
        if not values:
            return
        stmt = insert(PlaytimeInterval).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[PlaytimeInterval.session_id, PlaytimeInterval.started_at],
            set_={"ended_at": func.greatest(PlaytimeInterval.ended_at, stmt.excluded.ended_at)},
        )
        await self._session.execute(stmt)

    async def played(
        self, user_id: uuid.UUID, product_ids: list[uuid.UUID] | None = None
    ) -> list[PlayedInterval]:
        return await played(self._db, user_id, product_ids)

    async def update_library_item(
        self, user_id: uuid.UUID, product_id: uuid.UUID, total_seconds: int, last_played_at: datetime | None
    ) -> None:
        """Copies the product's totals to its library item (a table of the library capability)."""
        await self._session.execute(
            update(LibraryItem)
            .where(LibraryItem.user_id == user_id, LibraryItem.product_id == product_id)
            .values(total_playtime_seconds=total_seconds, last_played_timestamp=last_played_at)
        )
