"""Playtime SQL: sessions, credited intervals, stored totals, and the playtime columns of library items.

The crediting statements take whole batches (arrays through `unnest`), so a checkpoint of hundreds of
sessions is a handful of statements."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from server.core.db import Db
from server.core.uow import UnitOfWork
from server.playtime.rules import DeviceInterval, Interval, StoredTotals
from server.playtime.tables import PlaytimeSession


@dataclass(frozen=True, slots=True)
class PlayedInterval:
    session_id: uuid.UUID
    product_id: str  # canonical UUID text, as statistics key products
    played: DeviceInterval


@dataclass(frozen=True, slots=True)
class ActiveSession:
    id: uuid.UUID
    product_id: uuid.UUID
    device_id: str
    user_id: uuid.UUID | None = None


_RECENT = (
    "SELECT session_id, product_id::text, device_id, started_at, ended_at FROM playtime_intervals "
    "WHERE user_id = %s AND ended_at > %s"
)


async def recent(
    db: Db, user_id: uuid.UUID, since: datetime, product_ids: list[uuid.UUID] | None = None
) -> list[PlayedInterval]:
    """The user's credited intervals (of these products) that end after `since`."""
    if product_ids is None:
        rows = await db.all(_RECENT, (user_id, since))
    else:
        rows = await db.all(f"{_RECENT} AND product_id = ANY(%s)", (user_id, since, product_ids))
    return [PlayedInterval(s, p, DeviceInterval(d, Interval(start, end))) for s, p, d, start, end in rows]


# product ids as canonical text: what statistics key products by (and answer)
_TOTALS = "SELECT product_id::text, total_us, last_played_at FROM playtime_totals WHERE user_id = %s"
_DEVICE_TOTALS = "SELECT product_id::text, device_id, total_us FROM playtime_device_totals WHERE user_id = %s"


async def totals(
    db: Db, user_id: uuid.UUID, product_ids: list[uuid.UUID] | None = None
) -> dict[str, StoredTotals]:
    """The stored totals of every product the user played (of these products), by product id text."""
    where, params = (
        ("", (user_id,)) if product_ids is None else (" AND product_id = ANY(%s)", (user_id, product_ids))
    )
    devices: dict[str, dict[str, int]] = defaultdict(dict)
    for product_id, device_id, total_us in await db.all(_DEVICE_TOTALS + where, params):
        devices[product_id][device_id] = total_us
    return {
        product_id: StoredTotals(total_us, last_played_at, devices[product_id])
        for product_id, total_us, last_played_at in await db.all(_TOTALS + where, params)
    }


def lock_key(user_id: uuid.UUID, product_id: uuid.UUID) -> str:
    return f"playtime:{user_id}:{product_id}"


# Advisory locks in one order (sorted keys), so batches of several processes never deadlock.
_LOCK_PRODUCTS = (
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (SELECT k FROM unnest(%s::text[]) AS k "
    "ORDER BY k) AS keys"
)


async def lock_products(db: Db, keys: list[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Serialises crediting per (user, product) so incremental totals are exact (transaction-scoped)."""
    await db.execute(_LOCK_PRODUCTS, (sorted({lock_key(u, p) for u, p in keys}),))


async def session_intervals(db: Db, session_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Interval]]:
    found: dict[uuid.UUID, list[Interval]] = defaultdict(list)
    rows = await db.all(
        "SELECT session_id, started_at, ended_at FROM playtime_intervals WHERE session_id = ANY(%s)",
        (session_ids,),
    )
    for session_id, start, end in rows:
        found[session_id].append(Interval(start, end))
    return found


_OVERLAPPING = (
    "SELECT w.u, w.p, i.device_id, i.started_at, i.ended_at FROM unnest(%s::uuid[], %s::uuid[], "
    "%s::timestamptz[], %s::timestamptz[]) AS w(u, p, lo, hi) JOIN playtime_intervals i ON i.user_id = w.u "
    "AND i.product_id = w.p AND i.ended_at >= w.lo AND i.started_at <= w.hi"
)


async def overlapping(
    db: Db, windows: dict[tuple[uuid.UUID, uuid.UUID], Interval]
) -> dict[tuple[uuid.UUID, uuid.UUID], list[DeviceInterval]]:
    """Stored intervals of each (user, product) that touch its window."""
    found: dict[tuple[uuid.UUID, uuid.UUID], list[DeviceInterval]] = defaultdict(list)
    if not windows:
        return found
    keys = list(windows)
    rows = await db.all(
        _OVERLAPPING,
        (
            [u for u, _ in keys],
            [p for _, p in keys],
            [windows[k].start for k in keys],
            [windows[k].end for k in keys],
        ),
    )
    for u, p, device_id, start, end in rows:
        found[(u, p)].append(DeviceInterval(device_id, Interval(start, end)))
    return found


_SAVE_SEGMENTS = (
    "INSERT INTO playtime_intervals (session_id, user_id, product_id, device_id, started_at, ended_at) "
    "SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[], "
    "%s::timestamptz[]) ON CONFLICT (session_id, started_at) "
    "DO UPDATE SET ended_at = greatest(playtime_intervals.ended_at, excluded.ended_at)"
)


async def save_segments(
    db: Db, segments: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, str, Interval]]
) -> None:
    """Upserts credited segments (session, user, product, device, interval); a segment's end only moves
    forward."""
    if segments:
        columns = list(zip(*((s, u, p, d, i.start, i.end) for s, u, p, d, i in segments), strict=True))
        await db.execute(_SAVE_SEGMENTS, [list(c) for c in columns])


_ADD_TOTALS = (
    "INSERT INTO playtime_totals AS t (user_id, product_id, total_us, last_played_at) "
    "SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::timestamptz[]) "
    "ON CONFLICT (user_id, product_id) DO UPDATE SET total_us = t.total_us + excluded.total_us, "
    "last_played_at = greatest(t.last_played_at, excluded.last_played_at) "
    "RETURNING user_id, product_id, total_us, last_played_at"
)
_ADD_DEVICE_TOTALS = (
    "INSERT INTO playtime_device_totals AS t (user_id, product_id, device_id, total_us) "
    "SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::bigint[]) "
    "ON CONFLICT (user_id, product_id, device_id) DO UPDATE SET total_us = t.total_us + excluded.total_us"
)
# The product's totals copied to its library item (a table of the library capability; none for a
# borrowed game).
_COPY_TO_LIBRARY = (
    "UPDATE library_items li SET total_playtime_seconds = v.t / 1000000, last_played_timestamp = v.l "
    "FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::timestamptz[]) AS v(u, p, t, l) "
    "WHERE li.user_id = v.u AND li.product_id = v.p"
)


async def add_totals(
    db: Db,
    added: dict[tuple[uuid.UUID, uuid.UUID], tuple[int, datetime | None]],
    device_added: dict[tuple[uuid.UUID, uuid.UUID, str], int],
) -> dict[tuple[uuid.UUID, uuid.UUID], tuple[int, datetime | None]]:
    """Adds microseconds (and a last played time) to products' and devices' totals, copies the products'
    to their library items; the totals after."""
    keys = list(added)
    rows = await db.all(
        _ADD_TOTALS,
        (
            [u for u, _ in keys],
            [p for _, p in keys],
            [added[k][0] for k in keys],
            [added[k][1] for k in keys],
        ),
    )
    after = {(u, p): (total, last) for u, p, total, last in rows}
    devices = [k for k, us in device_added.items() if us]
    if devices:
        await db.execute(
            _ADD_DEVICE_TOTALS,
            (
                [u for u, _, _ in devices],
                [p for _, p, _ in devices],
                [d for _, _, d in devices],
                [device_added[k] for k in devices],
            ),
        )
    keys = list(after)
    await db.execute(
        _COPY_TO_LIBRARY,
        (
            [u for u, _ in keys],
            [p for _, p in keys],
            [after[k][0] for k in keys],
            [after[k][1] for k in keys],
        ),
    )
    return after


@dataclass(frozen=True, slots=True)
class CheckpointedSession:
    id: uuid.UUID
    user_id: uuid.UUID
    product_id: uuid.UUID
    device_id: str
    last_heartbeat_at: datetime


async def lock_active_for_checkpoint(db: Db, session_ids: list[uuid.UUID]) -> list[CheckpointedSession]:
    """Those of the sessions still active, locked; those ended or held by another worker are left out."""
    rows = await db.all(
        "SELECT id, user_id, product_id, device_id, last_heartbeat_at FROM playtime_sessions "
        "WHERE id = ANY(%s) AND ended_at IS NULL FOR UPDATE SKIP LOCKED",
        (session_ids,),
    )
    return [CheckpointedSession(*row) for row in rows]


async def checkpointed(db: Db, sessions: list[tuple[uuid.UUID, int, datetime]], now: datetime) -> None:
    """Records checkpoints: (session, seconds credited so far, last heartbeat credited)."""
    if sessions:
        ids, credited, heartbeats = (list(c) for c in zip(*sessions, strict=True))
        await db.execute(
            "UPDATE playtime_sessions s SET credited_seconds = v.c, last_heartbeat_at = v.h, "
            "checkpointed_at = %s FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[]) AS v(id, c, h) "
            "WHERE s.id = v.id",
            (now, ids, credited, heartbeats),
        )


async def active_heartbeats(db: Db, session_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """The last checkpointed heartbeat of those of the sessions still active."""
    rows = await db.all(
        "SELECT id, last_heartbeat_at FROM playtime_sessions WHERE id = ANY(%s) AND ended_at IS NULL",
        (session_ids,),
    )
    return dict(rows)


async def active_session_ids(db: Db, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
    """A page of every active session's id, in id order after `after` (keyset)."""
    rows = await db.all(
        "SELECT id FROM playtime_sessions WHERE ended_at IS NULL AND id > %s ORDER BY id LIMIT %s",
        (after or uuid.UUID(int=0), limit),
    )
    return [row[0] for row in rows]


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


@dataclass(frozen=True, slots=True)
class NewOfflineSession:
    """An accepted offline session about to be recorded (what crediting and its event need of it)."""

    id: uuid.UUID
    user_id: uuid.UUID
    client_session_id: uuid.UUID
    product_id: uuid.UUID
    device_id: str
    started_at: datetime
    ended_at: datetime

    @property
    def interval(self) -> Interval:
        return Interval(self.started_at, self.ended_at)

    @property
    def credited_seconds(self) -> int:
        return int((self.ended_at - self.started_at).total_seconds())


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


_INSERT_OFFLINE = (
    "INSERT INTO playtime_sessions (id, user_id, product_id, device_id, client_session_id, source, status, "
    "started_at, last_heartbeat_at, ended_at, credited_seconds) "
    "SELECT s.id, s.u, s.product_id, s.device_id, s.client_session_id, 'offline', 'ended', s.started_at, "
    "s.ended_at, s.ended_at, s.credited FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], "
    "%s::uuid[], %s::timestamptz[], %s::timestamptz[], %s::bigint[]) "
    "AS s(id, u, product_id, device_id, client_session_id, started_at, ended_at, credited) "
    "ON CONFLICT DO NOTHING RETURNING client_session_id"
)


async def insert_offline(db: Db, sessions: list[NewOfflineSession]) -> set[uuid.UUID]:
    """Inserts ended offline sessions in one statement; the client session ids inserted (one that a
    concurrent upload recorded first is skipped)."""
    if not sessions:
        return set()
    columns = [
        (
            s.id,
            s.user_id,
            s.product_id,
            s.device_id,
            s.client_session_id,
            s.started_at,
            s.ended_at,
            s.credited_seconds,
        )
        for s in sessions
    ]
    rows = await db.all(_INSERT_OFFLINE, [list(c) for c in zip(*columns, strict=True)])
    return {row[0] for row in rows}


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

    async def lock_active_many(self, session_ids: list[uuid.UUID]) -> list[PlaytimeSession]:
        """Those of the sessions still active, locked; those ended or held by another worker are left out."""
        return list(
            await self._session.scalars(
                select(PlaytimeSession)
                .where(PlaytimeSession.id.in_(session_ids), PlaytimeSession.ended_at.is_(None))
                .with_for_update(skip_locked=True)
            )
        )
