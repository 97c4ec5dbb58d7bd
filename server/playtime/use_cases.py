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
from server.library.entitlements import acquired_at, owned_product_texts
from server.playtime import crediting, repository, rules, sharing
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


@dataclass(slots=True)  # one per product of a statistics call: slotted, not frozen (docs/ARCHITECTURE.md)
class ProductPlaytime:
    product_id: str  # canonical UUID text
    stats: rules.ProductStats


class Playtime:
    def __init__(self, deps: Deps):
        self._uow = deps.uow
        self._clock = deps.clock
        self._offline_max_age_days = deps.settings.playtime_offline_max_age_days
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
                await crediting.close_sessions(uow, [(current, live)], now, self.policy, by_client=False)
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

    async def heartbeat(
        self, user_id: uuid.UUID | str, session_id: uuid.UUID | str, product_id: uuid.UUID | str
    ) -> None:
        """Redis only: one script call, no database (but for the one heartbeat that finds the grace period
        of a reclaimed family-shared game over: it ends the session). The ids may be canonical UUID text
        (the servicer's: what Redis holds)."""
        outcome = await self.live.heartbeat(session_id, user_id, product_id, self._clock())  # ms on the clock
        if outcome is HeartbeatOutcome.RECORDED:
            return
        if outcome is HeartbeatOutcome.NOT_FOUND:
            raise session_not_found()
        if outcome is HeartbeatOutcome.PRODUCT_MISMATCH:
            raise product_mismatch()
        if outcome is HeartbeatOutcome.RECLAIMED:
            await self._end_reclaimed(uuid.UUID(str(session_id)))
            raise sharing.GameInUse("the owner reclaimed this family-shared game; the session has ended")

    async def _end_reclaimed(self, session_id: uuid.UUID) -> None:
        """Ends a session whose reclaim grace period is over, credited up to the deadline (as reaped)."""
        async with self._uow() as uow:
            repo = PlaytimeRepository(uow)
            rows = await repo.lock_active_many([session_id])  # none: it ended meanwhile
            live = await self.live.get(session_id)
            now = server_now(self._clock)
            await crediting.close_sessions(uow, [(r, live) for r in rows], now, self.policy, by_client=False)
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
                await crediting.close_sessions(uow, [(row, live)], now, self.policy, by_client=True)
                await uow.commit()
            ended = EndedSession.of(row)
        await self.live.delete(session_id)
        return ended

    async def record_offline(
        self, user_id: uuid.UUID, sessions: list[OfflineSession]
    ) -> tuple[list[OfflineResult], list[ProductPlaytime]]:
        """Records an upload in a fixed number of statements however many sessions it holds: two reads
        for the checks, one insert of the accepted sessions, then crediting them all at once
        (crediting.credit_many) and the statistics."""
        now = server_now(self._clock)
        product_ids = list(dict.fromkeys(s.product_id for s in sessions))
        bounds = rules.OfflineBounds(now, CLOCK_SKEW, now - timedelta(days=self._offline_max_age_days))
        async with self._uow() as uow:
            db = uow.db
            acquired = await acquired_at(db, user_id, product_ids)
            recorded = await repository.recorded_offline(db, user_id, {s.client_session_id for s in sessions})
            verdicts: list[tuple[str, rules.OfflineRejection | None]] = []
            accepted: list[repository.NewOfflineSession] = []
            for offline in sessions:
                if offline.client_session_id in recorded:
                    verdicts.append(("DUPLICATE", None))
                    continue
                rejection = rules.offline_rejection(
                    offline.interval, bounds, acquired.get(offline.product_id)
                )
                if rejection is not None:
                    verdicts.append(("REJECTED", rejection))
                    continue
                recorded.add(offline.client_session_id)
                interval = rules.creditable(offline.interval, now)
                accepted.append(
                    repository.NewOfflineSession(
                        uuid.uuid4(),
                        user_id,
                        offline.client_session_id,
                        offline.product_id,
                        offline.device_id,
                        interval.start,
                        interval.end,
                    )
                )
                verdicts.append(("ACCEPTED", None))
            inserted = await repository.insert_offline(db, accepted)
            new = [s for s in accepted if s.client_session_id in inserted]  # the rest: a concurrent upload's
            credits = await crediting.credit_many(db, [(s, [s.interval]) for s in new])
            latest: dict[uuid.UUID, crediting.Credit] = {}
            for s in new:
                crediting.session_ended(uow, s)
                latest[s.product_id] = credits[s.id]
            for product_id, credited in latest.items():
                crediting.playtime_updated(
                    uow, user_id, product_id, credited.total_seconds, credited.last_played_at
                )
            totals = await self._product_stats(db, user_id, product_ids, now, last_two_weeks=False)
            await uow.commit()
        added = {s.client_session_id: credits[s.id].added_seconds for s in new}
        results = []
        for offline, (outcome, rejection) in zip(sessions, verdicts, strict=True):
            if outcome == "ACCEPTED" and offline.client_session_id not in added:
                outcome = "DUPLICATE"
            results.append(
                OfflineResult(
                    offline.client_session_id,
                    offline.product_id,
                    outcome,
                    rejection=rejection,
                    credited_seconds=added.get(offline.client_session_id, 0) if outcome == "ACCEPTED" else 0,
                )
            )
        return results, totals

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
        """Stored totals, the last two weeks of credited intervals, and the live segments of active
        sessions (up to their last heartbeat): never a product's whole history.
        With `product_ids`: those, in order; else every owned or played product, most recent first.
        Products are keyed by their id's canonical text, as the statements select them and the answer
        carries them (no UUID made and printed again per product)."""
        requested = list(dict.fromkeys(product_ids))
        stored = await repository.totals(db, user_id, requested or None)
        active = await repository.active_sessions_of(db, user_id, requested or None)
        live_records = await self.live.get_many(s.id for s in active)
        live: dict[str, list[rules.DeviceInterval]] = defaultdict(list)
        for s in active:
            if s.id in live_records:
                live[str(s.product_id)].extend(
                    rules.DeviceInterval(s.device_id, i) for i in live_records[s.id].state.segments()
                )
        # The stored intervals a live segment may repeat are those of its session's time: at most as old
        # as the oldest live segment, if that is older than the window.
        since = min([now - rules.TWO_WEEKS, *(p.interval.start for ps in live.values() for p in ps)])
        recent: dict[str, list[rules.DeviceInterval]] = defaultdict(list)
        for p in await repository.recent(db, user_id, since, requested or None):
            recent[p.product_id].append(p.played)
        played = set(stored) | set(live)
        products = [str(p) for p in requested] or list(played | await owned_product_texts(db, user_id))
        stats = [
            ProductPlaytime(
                p,
                rules.stats_from_totals(
                    stored.get(p, rules.NOTHING_STORED),
                    recent.get(p, _NONE),
                    live.get(p, _NONE),
                    now,
                    last_two_weeks=last_two_weeks,
                ),
            )
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
                s.product_id,
            ),
        )


_NONE: list[rules.DeviceInterval] = []  # a product without recent or live intervals (never changed)


def _epoch(when: datetime | None) -> float:
    return when.timestamp() if when else 0.0
