"""Playtime use cases behind the RPCs: start, heartbeat, end, offline sessions, statistics."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from server.core.db import Db
from server.core.deps import Deps
from server.core.errors import FieldViolation, InvalidArgument, NotFound
from server.core.validation import CLOCK_SKEW
from server.library.entitlements import acquired_at, owned_product_ids, require_owned
from server.playtime import crediting, repository, rules
from server.playtime.live import HeartbeatOutcome, LiveRecord, accrual_policy, live_sessions, server_now
from server.playtime.repository import PlaytimeRepository
from server.playtime.tables import (
    SOURCE_ONLINE,
    STATUS_ACTIVE,
    PlaytimeSession,
)


def session_not_found() -> NotFound:
    return NotFound("no such play session", reason="SESSION_NOT_FOUND")


def product_mismatch() -> InvalidArgument:
    return InvalidArgument([FieldViolation("product_id", "does not match the session")])


@dataclass(frozen=True, slots=True)
class StartedSession:
    session_id: uuid.UUID
    started_at: datetime
    client_session_id: uuid.UUID | None
    resumed: bool

    @classmethod
    def of(cls, row: PlaytimeSession, *, resumed: bool) -> StartedSession:
        return cls(row.id, row.started_at, row.client_session_id, resumed)


@dataclass(frozen=True, slots=True)
class EndedSession:
    """What EndPlaytimeSession answers, every time it is asked about the same session."""

    session_id: uuid.UUID
    credited_seconds: int
    total_seconds: int
    last_two_weeks_seconds: int
    started_at: datetime
    ended_at: datetime
    last_played_at: datetime | None

    @classmethod
    def of(cls, row: PlaytimeSession) -> EndedSession:
        assert row.ended_at is not None
        return cls(
            session_id=row.id,
            credited_seconds=row.credited_seconds,
            total_seconds=row.result_total_seconds or 0,
            last_two_weeks_seconds=row.result_last_two_weeks_seconds or 0,
            started_at=row.started_at,
            ended_at=row.ended_at,
            last_played_at=row.result_last_played_at,
        )


@dataclass(frozen=True, slots=True)
class OfflineSession:
    client_session_id: uuid.UUID
    product_id: uuid.UUID
    device_id: str
    interval: rules.Interval


@dataclass(frozen=True, slots=True)
class OfflineResult:
    client_session_id: uuid.UUID
    product_id: uuid.UUID
    outcome: str  # ACCEPTED | DUPLICATE | REJECTED
    rejection: rules.OfflineRejection | None = None
    credited_seconds: int = 0


@dataclass(frozen=True, slots=True)
class ProductPlaytime:
    product_id: uuid.UUID
    stats: rules.ProductStats


class Playtime:
    def __init__(self, deps: Deps):
        self._uow = deps.uow
        self._clock = deps.clock
        self._offline_max_age_days = deps.settings.playtime_offline_max_age_days
        self.policy = accrual_policy(deps)
        self.live = live_sessions(deps)

    async def start(
        self, user_id: uuid.UUID, product_id: uuid.UUID, device_id: str, client_session_id: uuid.UUID | None
    ) -> StartedSession:
        try:
            return await self._start(user_id, product_id, device_id, client_session_id)
        except IntegrityError:
            # A concurrent start of the same (user, product, device) won the race: resume its session.
            return await self._start(user_id, product_id, device_id, client_session_id)

    async def _start(
        self, user_id: uuid.UUID, product_id: uuid.UUID, device_id: str, client_session_id: uuid.UUID | None
    ) -> StartedSession:
        now = server_now(self._clock)
        replaced: uuid.UUID | None = None
        async with self._uow() as uow:
            repo = PlaytimeRepository(uow)
            await require_owned(uow.db, user_id, product_id)
            current = await repo.active_on_device(user_id, product_id, device_id)
            if current is not None:
                live = await self.live.get(current.id)
                if live is not None and not rules.is_silent(live.state.last_heartbeat, now, self.policy):
                    # a start is a heartbeat
                    await self.live.heartbeat(current.id, user_id, product_id, now, limited=False)
                    return StartedSession.of(current, resumed=True)
                # Silent or lost in Redis: close it as the reaper would, and start afresh.
                await crediting.close_session(uow, repo, current, live, now, self.policy, by_client=False)
                await repo.flush()
                replaced = current.id
            row = PlaytimeSession(
                id=uuid.uuid4(),
                user_id=user_id,
                product_id=product_id,
                device_id=device_id,
                client_session_id=client_session_id,
                source=SOURCE_ONLINE,
                status=STATUS_ACTIVE,
                started_at=now,
                last_heartbeat_at=now,
            )
            repo.add(row)
            await repo.flush()
            await self.live.open(
                row.id, LiveRecord(user_id, product_id, device_id, rules.LiveSession.started(now))
            )
            started = StartedSession.of(row, resumed=False)
            await uow.commit()
        if replaced is not None:
            await self.live.delete(replaced)
        return started

    async def heartbeat(self, user_id: uuid.UUID, session_id: uuid.UUID, product_id: uuid.UUID) -> None:
        """Redis only: one script call, no database."""
        outcome = await self.live.heartbeat(session_id, user_id, product_id, server_now(self._clock))
        if outcome is HeartbeatOutcome.NOT_FOUND:
            raise session_not_found()
        if outcome is HeartbeatOutcome.PRODUCT_MISMATCH:
            raise product_mismatch()

    async def end(self, user_id: uuid.UUID, session_id: uuid.UUID, product_id: uuid.UUID) -> EndedSession:
        """Idempotent: an ended or reaped session returns the result it ended with."""
        now = server_now(self._clock)
        async with self._uow() as uow:
            repo = PlaytimeRepository(uow)
            row = await repo.get(session_id, for_update=True)
            if row is None or row.user_id != user_id or row.source != SOURCE_ONLINE:
                raise session_not_found()
            if row.product_id != product_id:
                raise product_mismatch()
            if row.ended_at is None:
                live = await self.live.get(row.id)
                await crediting.close_session(uow, repo, row, live, now, self.policy, by_client=True)
                await uow.commit()
            ended = EndedSession.of(row)
        await self.live.delete(session_id)
        return ended

    async def record_offline(
        self, user_id: uuid.UUID, sessions: list[OfflineSession]
    ) -> tuple[list[OfflineResult], list[ProductPlaytime]]:
        """Records an upload in a fixed number of statements, however many sessions it holds: the checks
        from two reads, then one insert of the sessions, one lock of their products, one read of what the
        products had, one insert of the intervals and one update of the library items."""
        now = server_now(self._clock)
        product_ids = list(dict.fromkeys(s.product_id for s in sessions))
        bounds = rules.OfflineBounds(now, CLOCK_SKEW, now - timedelta(days=self._offline_max_age_days))
        async with self._uow() as uow:
            db = uow.db
            acquired = await acquired_at(db, user_id, product_ids)
            recorded = await repository.recorded_offline(db, user_id, {s.client_session_id for s in sessions})
            outcomes: list[tuple[str, rules.OfflineRejection | None]] = []
            new: list[repository.NewOfflineSession] = []
            for offline in sessions:
                if offline.client_session_id in recorded:
                    outcomes.append(("DUPLICATE", None))
                    continue
                rejection = rules.offline_rejection(
                    offline.interval, bounds, acquired.get(offline.product_id)
                )
                if rejection is not None:
                    outcomes.append(("REJECTED", rejection))
                    continue
                recorded.add(offline.client_session_id)
                interval = rules.creditable(offline.interval, now)
                new.append(
                    repository.NewOfflineSession(
                        uuid.uuid4(),
                        offline.client_session_id,
                        offline.product_id,
                        offline.device_id,
                        interval,
                    )
                )
                outcomes.append(("ACCEPTED", None))
            inserted = await repository.insert_offline(db, user_id, new) if new else set()
            credits = await self._credit_offline(
                uow, user_id, [s for s in new if s.client_session_id in inserted], now
            )
            totals = await self._product_stats(db, user_id, product_ids, now, last_two_weeks=False)
            await uow.commit()
        results = []
        for offline, (outcome, rejection) in zip(sessions, outcomes, strict=True):
            if outcome == "ACCEPTED" and offline.client_session_id not in credits:
                outcome = "DUPLICATE"  # a concurrent upload recorded it first
            results.append(
                OfflineResult(
                    offline.client_session_id,
                    offline.product_id,
                    outcome,
                    rejection=rejection,
                    credited_seconds=credits.get(offline.client_session_id, 0)
                    if outcome == "ACCEPTED"
                    else 0,
                )
            )
        return results, totals

    async def _credit_offline(
        self, uow, user_id: uuid.UUID, new: list[repository.NewOfflineSession], now: datetime
    ) -> dict[uuid.UUID, int]:
        """Credits the inserted offline sessions: per product, what each adds to the union of what was
        credited before it (so overlaps count once); the library items' totals and the events follow."""
        if not new:
            return {}
        db = uow.db
        product_ids = list(dict.fromkeys(s.product_id for s in new))
        await repository.lock_products(db, user_id, product_ids)
        played: dict[uuid.UUID, list[rules.DeviceInterval]] = defaultdict(list)
        for p in await repository.played(db, user_id, product_ids):
            played[p.product_id].append(p.played)
        await repository.insert_intervals(db, user_id, new)
        credits: dict[uuid.UUID, int] = {}
        totals: dict[uuid.UUID, tuple[int, datetime | None]] = {}
        for product_id in product_ids:
            sessions = [s for s in new if s.product_id == product_id]
            before = [p.interval for p in played[product_id]]
            added = rules.offline_credits(before, [s.interval for s in sessions])
            credits.update((s.client_session_id, a) for s, a in zip(sessions, added, strict=True))
            after = played[product_id] + [rules.DeviceInterval(s.device_id, s.interval) for s in sessions]
            stats = rules.product_stats(after, now, last_two_weeks=False)
            totals[product_id] = (stats.total_seconds, stats.last_played_at)
            for s in sessions:
                crediting.offline_session_ended(uow, user_id, s)
            crediting.playtime_updated(uow, user_id, product_id, stats)
        await repository.update_library_items(db, user_id, totals)
        return credits

    async def stats(
        self, user_id: uuid.UUID, product_ids: list[uuid.UUID], *, last_two_weeks: bool
    ) -> tuple[list[ProductPlaytime], datetime]:
        now = server_now(self._clock)
        async with self._uow.read() as db:
            stats = await self._product_stats(db, user_id, product_ids, now, last_two_weeks=last_two_weeks)
        return stats, now

    async def _product_stats(
        self,
        db: Db,
        user_id: uuid.UUID,
        product_ids: list[uuid.UUID],
        now: datetime,
        *,
        last_two_weeks: bool,
    ) -> list[ProductPlaytime]:
        """Credited intervals plus the live segments of active sessions (up to their last heartbeat).
        With `product_ids`: those, in order; else every owned or played product, most recent first."""
        requested = list(dict.fromkeys(product_ids))
        played: dict[uuid.UUID, list[rules.DeviceInterval]] = defaultdict(list)
        for p in await repository.played(db, user_id, requested or None):
            played[p.product_id].append(p.played)
        active = await repository.active_sessions_of(db, user_id, requested or None)
        live = await self.live.get_many(s.id for s in active)
        for s in active:
            if s.id in live:
                played[s.product_id].extend(
                    rules.DeviceInterval(s.device_id, i) for i in live[s.id].state.segments()
                )
        products = requested or list(set(played) | await owned_product_ids(db, user_id))
        stats = [
            ProductPlaytime(p, rules.product_stats(played.get(p, []), now, last_two_weeks=last_two_weeks))
            for p in products
        ]
        if requested:
            return stats
        if last_two_weeks:
            stats = [s for s in stats if s.stats.last_two_weeks_seconds > 0]
        return sorted(
            stats,
            key=lambda s: (
                s.stats.last_played_at is None,
                -_epoch(s.stats.last_played_at),
                str(s.product_id),
            ),
        )


def _epoch(when: datetime | None) -> float:
    return when.timestamp() if when else 0.0
