"""Crediting time and closing sessions, shared by the RPC use cases and the sweeper (reaper, checkpoints).

Crediting is idempotent: segments are upserted (their end only moves forward) and product totals are
recomputed from the union of every credited interval, so a checkpoint repeated, or an offline session
overlapping online play, never counts anything twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from server.core.events.cloudevents import rfc3339
from server.core.uow import UnitOfWork
from server.playtime import rules
from server.playtime.live import LiveRecord
from server.playtime.repository import PlaytimeRepository
from server.playtime.tables import STATUS_ENDED, STATUS_REAPED, PlaytimeSession

PLAYTIME_UPDATED = "com.platform.library.playtime.updated.v1"
SESSION_ENDED = "com.platform.library.playtime.session.ended.v1"


@dataclass(frozen=True, slots=True)
class Credit:
    stats: rules.ProductStats  # all-time stats of the product after crediting
    total_before: int
    session_seconds: int


async def credit(
    repo: PlaytimeRepository, row: PlaytimeSession, segments: list[rules.Interval], now: datetime
) -> Credit:
    """Saves a session's segments and refreshes the product totals (library item included)."""
    await repo.lock_product(row.user_id, row.product_id)
    before = await repo.played(row.user_id, [row.product_id])
    await repo.save_segments(row, segments)
    # Upserting a segment only moves its end forward, so adding it to what was there has the same union.
    after = [p.played for p in before] + [rules.DeviceInterval(row.device_id, s) for s in segments]
    stats = rules.product_stats(after, now, last_two_weeks=False)
    await repo.update_library_item(row.user_id, row.product_id, stats.total_seconds, stats.last_played_at)
    session_segments = [p.played.interval for p in before if p.session_id == row.id] + segments
    return Credit(
        stats=stats,
        total_before=rules.seconds(p.played.interval for p in before),
        session_seconds=rules.seconds(session_segments),
    )


async def close_session(
    uow: UnitOfWork,
    repo: PlaytimeRepository,
    row: PlaytimeSession,
    live: LiveRecord | None,
    now: datetime,
    policy: rules.AccrualPolicy,
    *,
    by_client: bool,
) -> None:
    """Ends an active session: credits its live segments (the client's End counts as a heartbeat; a
    reaped session is credited up to its last heartbeat) or, when Redis lost it, what was checkpointed."""
    if live is not None:
        # a reclaimed family-shared game is credited up to its grace deadline only
        state = rules.advance(live.state, live.at_most_until(now), policy) if by_client else live.state
        segments, last_heartbeat = state.segments(), state.last_heartbeat
    else:
        segments, last_heartbeat = [], row.last_heartbeat_at
    credited = await credit(repo, row, segments, now)
    row.status = STATUS_ENDED if by_client and live is not None else STATUS_REAPED
    row.last_heartbeat_at = last_heartbeat
    row.ended_at = now if by_client and live is not None else last_heartbeat
    row.credited_seconds = credited.session_seconds
    row.result_total_seconds = credited.stats.total_seconds
    row.result_last_two_weeks_seconds = credited.stats.last_two_weeks_seconds
    row.result_last_played_at = credited.stats.last_played_at
    session_ended(uow, row)
    playtime_updated(uow, row.user_id, row.product_id, credited.stats)


def session_ended(uow: UnitOfWork, row: PlaytimeSession) -> None:
    assert row.ended_at is not None
    uow.add_event(
        SESSION_ENDED,
        row.user_id,
        {
            "userId": str(row.user_id),
            "productId": str(row.product_id),
            "sessionId": str(row.id),
            "deviceId": row.device_id,
            "durationSeconds": row.credited_seconds,
            "startTimestamp": rfc3339(row.started_at),
            "endTimestamp": rfc3339(row.ended_at),
        },
    )


def playtime_updated(
    uow: UnitOfWork, user_id: uuid.UUID, product_id: uuid.UUID, stats: rules.ProductStats
) -> None:
    uow.add_event(
        PLAYTIME_UPDATED,
        user_id,
        {
            "userId": str(user_id),
            "productId": str(product_id),
            "totalPlaytimeSeconds": stats.total_seconds,
            "lastPlayedTimestamp": rfc3339(stats.last_played_at) if stats.last_played_at else None,
        },
    )
