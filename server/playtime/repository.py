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
from server.library import entitlements
from server.library.tables import LibraryItem
from server.playtime.rules import DeviceInterval, Interval
from server.playtime.tables import PlaytimeInterval, PlaytimeSession


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


def _product_lock_key(user_id: uuid.UUID, product_id: uuid.UUID) -> str:
    return f"playtime:{user_id}:{product_id}"


@dataclass(frozen=True, slots=True)
class NewOfflineSession:
    id: uuid.UUID
    client_session_id: uuid.UUID
    product_id: uuid.UUID
    device_id: str
    interval: Interval


async def recorded_offline(
    db: Db, user_id: uuid.UUID, client_session_ids: Iterable[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these client session ids were already recorded as offline sessions of the user."""
    rows = await db.all(
        "SELECT client_session_id FROM playtime_sessions WHERE user_id = %s AND source = 'offline' "
        "AND client_session_id = ANY(%s)",
        (user_id, list(client_session_ids)),
    )
    return {row[0] for row in rows}


async def insert_offline(db: Db, user_id: uuid.UUID, sessions: list[NewOfflineSession]) -> set[uuid.UUID]:
    """Inserts ended offline sessions in one statement (credited_seconds: each one's length); the client
    session ids inserted (one a concurrent upload recorded first is skipped)."""
    rows = await db.all(
        "INSERT INTO playtime_sessions (id, user_id, product_id, device_id, client_session_id, source, "
        "status, started_at, last_heartbeat_at, ended_at, credited_seconds) "
        "SELECT s.id, %s, s.product_id, s.device_id, s.client_session_id, 'offline', 'ended', s.started_at, "
        "s.ended_at, s.ended_at, s.credited "
        "FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::uuid[], %s::timestamptz[], %s::timestamptz[], "
        "%s::bigint[]) AS s(id, product_id, device_id, client_session_id, started_at, ended_at, credited) "
        "ON CONFLICT DO NOTHING RETURNING client_session_id",
        (
            user_id,
            [s.id for s in sessions],
            [s.product_id for s in sessions],
            [s.device_id for s in sessions],
            [s.client_session_id for s in sessions],
            [s.interval.start for s in sessions],
            [s.interval.end for s in sessions],
            [int(s.interval.length.total_seconds()) for s in sessions],
        ),
    )
    return {row[0] for row in rows}


async def lock_products(db: Db, user_id: uuid.UUID, product_ids: Iterable[uuid.UUID]) -> None:
    """PlaytimeRepository.lock_product for several products in one statement, in key order (so two
    uploads of overlapping products never deadlock)."""
    keys = sorted(_product_lock_key(user_id, p) for p in product_ids)
    await db.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (SELECT k FROM unnest(%s::text[]) k "
        "ORDER BY k) keys",
        (keys,),
    )


async def insert_intervals(db: Db, user_id: uuid.UUID, sessions: list[NewOfflineSession]) -> None:
    """The credited interval of each new offline session, in one statement."""
    await db.execute(
        "INSERT INTO playtime_intervals (session_id, user_id, product_id, device_id, started_at, ended_at) "
        "SELECT s.id, %s, s.product_id, s.device_id, s.started_at, s.ended_at FROM unnest(%s::uuid[], "
        "%s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[]) "
        "AS s(id, product_id, device_id, started_at, ended_at)",
        (
            user_id,
            [s.id for s in sessions],
            [s.product_id for s in sessions],
            [s.device_id for s in sessions],
            [s.interval.start for s in sessions],
            [s.interval.end for s in sessions],
        ),
    )


async def update_library_items(
    db: Db, user_id: uuid.UUID, totals: dict[uuid.UUID, tuple[int, datetime | None]]
) -> None:
    """PlaytimeRepository.update_library_item for several products in one statement."""
    await db.execute(
        "UPDATE library_items li SET total_playtime_seconds = v.total, last_played_timestamp = v.last "
        "FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[]) AS v(product_id, total, last) "
        "WHERE li.user_id = %s AND li.product_id = v.product_id",
        (list(totals), [t for t, _ in totals.values()], [last for _, last in totals.values()], user_id),
    )


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

    async def lock_product(self, user_id: uuid.UUID, product_id: uuid.UUID) -> None:
        """Serialises crediting of one (user, product) so totals computed from the union are exact."""
        await self._session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": _product_lock_key(user_id, product_id)},
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

    async def revoked_at(self, user_id: uuid.UUID, product_id: uuid.UUID) -> datetime | None:
        """When the user's entitlement to the product was revoked (None: owned), from the library."""
        return await entitlements.revoked_at(self._db, user_id, product_id)

    async def update_library_item(
        self, user_id: uuid.UUID, product_id: uuid.UUID, total_seconds: int, last_played_at: datetime | None
    ) -> None:
        """Copies the product's totals to its library item (a table of the library capability)."""
        await self._session.execute(
            update(LibraryItem)
            .where(LibraryItem.user_id == user_id, LibraryItem.product_id == product_id)
            .values(total_playtime_seconds=total_seconds, last_played_timestamp=last_played_at)
        )
