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
from server.library.entitlements import owned_product_ids
from server.playtime import crediting, repository, rules, sharing
from server.playtime.live import HeartbeatOutcome, LiveRecord, accrual_policy, live_sessions, server_now
from server.playtime.repository import PlaytimeRepository
from server.playtime.tables import (
    SOURCE_OFFLINE,
    SOURCE_ONLINE,
    STATUS_ACTIVE,
    STATUS_ENDED,
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
        self.policy = accrual_policy(deps)
        self.live = live_sessions(deps)
        self._grace = timedelta(seconds=deps.settings.family_reclaim_grace_seconds)

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
            await sharing.claim_library(uow, self.live, user_id, product_id, now, self.policy, self._grace)
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
        """Redis only: one script call, no database (but for the one heartbeat that finds the grace period
        of a reclaimed family-shared game over: it ends the session)."""
        outcome = await self.live.heartbeat(session_id, user_id, product_id, server_now(self._clock))
        if outcome is HeartbeatOutcome.NOT_FOUND:
            raise session_not_found()
        if outcome is HeartbeatOutcome.PRODUCT_MISMATCH:
            raise product_mismatch()
        if outcome is HeartbeatOutcome.RECLAIMED:
            await self._end_reclaimed(session_id)
            raise sharing.GameInUse("the owner reclaimed this family-shared game; the session has ended")

    async def _end_reclaimed(self, session_id: uuid.UUID) -> None:
        """Ends a session whose reclaim grace period is over, credited up to the deadline (as reaped)."""
        async with self._uow() as uow:
            repo = PlaytimeRepository(uow)
            row = await repo.lock_active(session_id)
            if row is not None:
                live = await self.live.get(session_id)
                await crediting.close_session(
                    uow, repo, row, live, server_now(self._clock), self.policy, by_client=False
                )
                await uow.commit()
        await self.live.delete(session_id)

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
        now = server_now(self._clock)
        product_ids = list(dict.fromkeys(s.product_id for s in sessions))
        async with self._uow() as uow:
            repo = PlaytimeRepository(uow)
            owned = await owned_product_ids(uow.db, user_id, product_ids)
            recorded = await repo.offline_client_sessions(user_id, {s.client_session_id for s in sessions})
            results: list[OfflineResult] = []
            updated: dict[uuid.UUID, rules.ProductStats] = {}
            for offline in sessions:
                result = await self._record_one(uow, repo, user_id, offline, owned, recorded, now, updated)
                results.append(result)
            for product_id, stats in updated.items():
                crediting.playtime_updated(uow, user_id, product_id, stats)
            await uow.session.flush()  # the statistics below read through uow.db, which does not autoflush
            totals = await self._product_stats(uow.db, user_id, product_ids, now, last_two_weeks=False)
            await uow.commit()
        return results, totals

    async def _record_one(
        self,
        uow,
        repo: PlaytimeRepository,
        user_id: uuid.UUID,
        offline: OfflineSession,
        owned: set[uuid.UUID],
        recorded: set[uuid.UUID],
        now: datetime,
        updated: dict[uuid.UUID, rules.ProductStats],
    ) -> OfflineResult:
        def result(outcome: str, **kw) -> OfflineResult:
            return OfflineResult(offline.client_session_id, offline.product_id, outcome, **kw)

        if offline.client_session_id in recorded:
            return result("DUPLICATE")
        rejection = rules.offline_rejection(offline.interval, now, CLOCK_SKEW)
        if rejection is None and offline.product_id not in owned:
            rejection = rules.OfflineRejection.PRODUCT_NOT_OWNED
        if rejection is not None:
            return result("REJECTED", rejection=rejection)
        interval = rules.creditable(offline.interval, now)
        row = PlaytimeSession(
            id=uuid.uuid4(),
            user_id=user_id,
            product_id=offline.product_id,
            device_id=offline.device_id,
            client_session_id=offline.client_session_id,
            source=SOURCE_OFFLINE,
            status=STATUS_ENDED,
            started_at=interval.start,
            last_heartbeat_at=interval.end,
            ended_at=interval.end,
        )
        try:
            async with uow.session.begin_nested():
                repo.add(row)
                await repo.flush()
        except IntegrityError:  # a concurrent upload recorded it first
            return result("DUPLICATE")
        recorded.add(offline.client_session_id)
        credited = await crediting.credit(repo, row, [interval], now)
        row.credited_seconds = credited.session_seconds
        crediting.session_ended(uow, row)
        updated[offline.product_id] = credited.stats
        return result("ACCEPTED", credited_seconds=credited.stats.total_seconds - credited.total_before)

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
