"""Crediting time and closing sessions, shared by the RPC use cases and the sweeper (reaper, checkpoints).

Crediting is idempotent: segments are upserted (their end only moves forward), and the stored totals grow
by what a segment's new part covers beyond the stored intervals it overlaps, so a checkpoint repeated, or
an offline session overlapping online play, never counts anything twice. Only the new parts and the
intervals touching them are read: never a product's whole history. Everything takes batches (the
checkpointer credits hundreds of sessions in one transaction); crediting of one (user, product) is
serialised by a transaction-scoped advisory lock. Crediting stops at a revocation: time after the
product's entitlement was revoked (a refund mid-session) is never credited.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from server.core.db import Db
from server.core.events.cloudevents import rfc3339
from server.core.uow import UnitOfWork
from server.library.entitlements import revoked_times
from server.playtime import repository, rules
from server.playtime.live import LiveRecord
from server.playtime.tables import STATUS_ENDED, STATUS_REAPED, PlaytimeSession

PLAYTIME_UPDATED = "com.platform.library.playtime.updated.v1"
SESSION_ENDED = "com.platform.library.playtime.session.ended.v1"


class Credited(Protocol):
    """What crediting needs of a session (a PlaytimeSession row, or a lighter one)."""

    id: uuid.UUID
    user_id: uuid.UUID
    product_id: uuid.UUID
    device_id: str


@dataclass(frozen=True, slots=True)
class Credit:
    total_seconds: int  # of the product after crediting, all time
    last_played_at: datetime | None
    total_before: int
    session_seconds: int  # everything credited to the session so far
    added_seconds: int  # what this call's segments of the session added to the product's total


def _new_parts(segments: list[rules.Interval], stored: list[rules.Interval]) -> list[rules.Interval]:
    """What `segments` add to the session's stored segments (each identified by its start)."""
    stored_end = {s.start: s.end for s in stored}
    parts = []
    for segment in segments:
        start = max(segment.start, stored_end.get(segment.start, segment.start))
        if segment.end > start:
            parts.append(rules.Interval(start, segment.end))
    return parts


async def credit_many(
    db: Db, sessions: Sequence[tuple[Credited, list[rules.Interval]]]
) -> dict[uuid.UUID, Credit]:
    """Saves each session's segments and grows its product's totals (library item included); segments
    are cut at the revocation of the user's entitlement, if any."""
    if not sessions:
        return {}
    keys = [(s.user_id, s.product_id) for s, _ in sessions]
    await repository.lock_products(db, keys)
    revoked = await revoked_times(db, keys)
    if revoked:
        sessions = [
            (s, rules.until(segments, revoked.get((s.user_id, s.product_id)))) for s, segments in sessions
        ]
    stored = await repository.session_intervals(db, [s.id for s, _ in sessions])
    parts = {s.id: _new_parts(segments, stored.get(s.id, [])) for s, segments in sessions}
    windows: dict[tuple[uuid.UUID, uuid.UUID], rules.Interval] = {}
    for session, _ in sessions:
        key = (session.user_id, session.product_id)
        for part in parts[session.id]:
            known = windows.get(key)
            windows[key] = (
                part
                if known is None
                else rules.Interval(min(known.start, part.start), max(known.end, part.end))
            )
    touching = await repository.overlapping(db, windows)
    added: dict[tuple[uuid.UUID, uuid.UUID], tuple[int, datetime | None]] = {k: (0, None) for k in keys}
    device_added: dict[tuple[uuid.UUID, uuid.UUID, str], int] = defaultdict(int)
    session_added: dict[uuid.UUID, int] = defaultdict(int)
    for session, _ in sessions:
        key = (session.user_id, session.product_id)
        existing = touching[key]
        for part in parts[session.id]:
            total, last = added[key]
            mine = [e.interval for e in existing if e.device_id == session.device_id]
            new_us = rules.microseconds(rules.added((e.interval for e in existing), part))
            session_added[session.id] += new_us
            added[key] = (total + new_us, part.end if last is None else max(last, part.end))
            device_added[(*key, session.device_id)] += rules.microseconds(rules.added(mine, part))
            existing.append(rules.DeviceInterval(session.device_id, part))
    await repository.save_segments(
        db,
        [
            (s.id, s.user_id, s.product_id, s.device_id, segment)
            for s, segments in sessions
            for segment in segments
        ],
    )
    after = await repository.add_totals(db, added, device_added)
    credits = {}
    for session, segments in sessions:
        key = (session.user_id, session.product_id)
        total_us, last_played = after[key]
        credits[session.id] = Credit(
            total_seconds=total_us // 1_000_000,
            last_played_at=last_played,
            total_before=(total_us - added[key][0]) // 1_000_000,
            session_seconds=rules.seconds([*stored.get(session.id, []), *segments]),
            added_seconds=session_added[session.id] // 1_000_000,
        )
    return credits


async def credit(db: Db, session: Credited, segments: list[rules.Interval]) -> Credit:
    return (await credit_many(db, [(session, segments)]))[session.id]


async def close_sessions(
    uow: UnitOfWork,
    closing: Sequence[tuple[PlaytimeSession, LiveRecord | None]],
    now: datetime,
    policy: rules.AccrualPolicy,
    *,
    by_client: bool,
) -> None:
    """Ends active sessions: credits their live segments (the client's End counts as a heartbeat; a
    reaped session is credited up to its last heartbeat) or, when Redis lost one, what was checkpointed."""
    plans = []
    for row, live in closing:
        if live is not None:
            # a reclaimed family-shared game is credited up to its grace deadline only
            state = rules.advance(live.state, live.at_most_until(now), policy) if by_client else live.state
            plans.append((row, live, state.segments(), state.last_heartbeat))
        else:
            plans.append((row, live, [], row.last_heartbeat_at))
    credits = await credit_many(uow.db, [(row, segments) for row, _, segments, _ in plans])
    window_start = now - rules.TWO_WEEKS
    recent = await repository.overlapping(
        uow.db, {(row.user_id, row.product_id): rules.Interval(window_start, now) for row, *_ in plans}
    )
    for row, live, _, last_heartbeat in plans:
        credited = credits[row.id]
        ended_by_client = by_client and live is not None
        row.status = STATUS_ENDED if ended_by_client else STATUS_REAPED
        row.last_heartbeat_at = last_heartbeat
        row.ended_at = now if ended_by_client else last_heartbeat
        row.credited_seconds = credited.session_seconds
        row.result_total_seconds = credited.total_seconds
        row.result_last_two_weeks_seconds = rules.seconds(
            rules.clip((p.interval for p in recent[(row.user_id, row.product_id)]), window_start, now)
        )
        row.result_last_played_at = credited.last_played_at
        session_ended(uow, row)
        playtime_updated(uow, row.user_id, row.product_id, credited.total_seconds, credited.last_played_at)


def session_ended(uow: UnitOfWork, row: PlaytimeSession | repository.NewOfflineSession) -> None:
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
    uow: UnitOfWork,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    total_seconds: int,
    last_played_at: datetime | None,
) -> None:
    uow.add_event(
        PLAYTIME_UPDATED,
        user_id,
        {
            "userId": str(user_id),
            "productId": str(product_id),
            "totalPlaytimeSeconds": total_seconds,
            "lastPlayedTimestamp": rfc3339(last_played_at) if last_played_at else None,
        },
    )
