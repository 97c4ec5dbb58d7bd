"""Background work on active sessions: the reaper and the checkpointer (SPEC §6), at any scale.

Neither scans the active sessions: each takes the sessions due on its Redis schedule (server/playtime/
live.py), a batch at a time under a lease, so the work spreads over every server process and each pass
costs what is due, not what is active.
Reaper: a session silent for more than 3x the heartbeat interval, or a reclaimed family-shared one whose
grace period is over (server/playtime/sharing.py), is closed, credited up to its last heartbeat (never
past the grace deadline); one that is not silent yet goes back to the schedule at its true deadline. A
session Redis no longer knows (Redis lost its data) is judged by its last checkpointed heartbeat in the
database.
Checkpointer: a due session's live segments are credited to Postgres, a batch per transaction, and the
session is due again a checkpoint period later, so losing Redis costs at most one checkpoint interval.
Reconciliation: if Redis lost its data, the schedules went with it; a marker key tells, and the first
worker to notice puts every active session of the database back on both schedules (also every
RECONCILE_PERIODS checkpoint periods, in case a session was ever left off them).
Sessions are locked with SKIP LOCKED (an End in flight, another worker) and crediting is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from server.core import metrics
from server.core.deps import Deps
from server.playtime import crediting, repository, rules
from server.playtime.live import (
    CHECKPOINT_SCHEDULE,
    REAP_SCHEDULE,
    LiveRecord,
    accrual_policy,
    checkpoint_every,
    live_sessions,
    server_now,
    sweep_poll_seconds,
)
from server.playtime.repository import PlaytimeRepository

log = logging.getLogger(__name__)

BATCH = 500  # sessions per claim (and per checkpoint transaction)
LEASE = timedelta(seconds=60)  # a claimed batch comes back to the schedule after this, if not done
RECONCILE_PERIODS = 10
_RECONCILED = "playtime:schedules-reconciled"


class SessionSweeper:
    def __init__(self, deps: Deps, *, batch: int = BATCH):
        self._uow = deps.uow
        self._redis = deps.redis
        self._clock = deps.clock
        self._settings = deps.settings
        self._policy = accrual_policy(deps)
        self._live = live_sessions(deps)
        self._checkpoint_every = checkpoint_every(deps)
        self._poll = sweep_poll_seconds(deps)
        self._batch = batch

    async def run_reaper(self) -> None:
        await _drain_every(self._poll, self.reap_due)

    async def run_checkpointer(self) -> None:
        await _drain_every(self._poll, self.checkpoint_due)

    async def reap_due(self) -> int:
        """One batch of the reap schedule; how many sessions were due."""
        await self._reconcile_if_needed()
        metrics.ACTIVE_PLAY_SESSIONS.set(await self._live.scheduled())
        now = server_now(self._clock)
        due = await self._live.claim_due(REAP_SCHEDULE, now, self._batch, LEASE)
        if not due:
            return 0
        live = await self._live.get_many(due)
        last = {s: r.state.last_heartbeat for s, r in live.items()}
        unknown = [s for s in due if s not in live]
        if unknown:
            async with self._uow.read() as db:
                known = await repository.active_heartbeats(db, unknown)
            await self._live.unschedule([s for s in unknown if s not in known])  # ended meanwhile
            last.update(known)
        silent = [s for s, heartbeat in last.items() if self._over(live.get(s), heartbeat, now)]
        await self._live.reschedule(
            REAP_SCHEDULE, {s: self._deadline(live.get(s), h) for s, h in last.items() if s not in silent}
        )
        if silent:
            await self._reap(silent)
        metrics.PLAYTIME_SWEPT.labels("reaped").inc(len(silent))
        return len(due)

    async def _reap(self, session_ids: list[uuid.UUID]) -> None:
        async with self._uow() as uow:
            repo = PlaytimeRepository(uow)
            rows = await repo.lock_active_many(session_ids)  # an End in flight keeps its own
            live = await self._live.get_many(r.id for r in rows)
            now = server_now(self._clock)
            closing = []
            for row in rows:
                record = live.get(row.id)
                last = record.state.last_heartbeat if record is not None else row.last_heartbeat_at
                if self._over(record, last, now):  # else a heartbeat arrived meanwhile
                    closing.append((row, record))
            await crediting.close_sessions(uow, closing, now, self._policy, by_client=False)
            await uow.commit()
        await self._live.forget([row.id for row, _ in closing])

    def _over(self, record: LiveRecord | None, last_heartbeat: datetime, now: datetime) -> bool:
        """Whether the session ends now: silent, or reclaimed and past its grace period."""
        reclaimed = record is not None and record.reclaim_over(now)
        return reclaimed or rules.is_silent(last_heartbeat, now, self._policy)

    def _deadline(self, record: LiveRecord | None, last_heartbeat: datetime) -> datetime:
        """When the session is due again: when it would be silent, or its grace period ends if sooner."""
        silent_at = last_heartbeat + self._policy.silence_limit
        if record is not None and record.credit_until is not None:
            return min(silent_at, record.credit_until)
        return silent_at

    async def checkpoint_due(self) -> int:
        """One batch of the checkpoint schedule; how many sessions were due."""
        now = server_now(self._clock)
        due = await self._live.claim_due(CHECKPOINT_SCHEDULE, now, self._batch, LEASE)
        if not due:
            return 0
        live = await self._live.get_many(due)
        if live:
            async with self._uow() as uow:
                rows = await repository.lock_active_for_checkpoint(uow.db, list(live))
                changed = [r for r in rows if live[r.id].state.last_heartbeat > r.last_heartbeat_at]
                credits = await crediting.credit_many(
                    uow.db, [(r, live[r.id].state.segments()) for r in changed]
                )
                await repository.checkpointed(
                    uow.db,
                    [(r.id, credits[r.id].session_seconds, live[r.id].state.last_heartbeat) for r in changed],
                    server_now(self._clock),
                )
                await uow.commit()
            metrics.PLAYTIME_SWEPT.labels("checkpointed").inc(len(changed))
        # Due again a period later; sessions without live state are the reaper's (ZADD XX: not re-added
        # once ended).
        await self._live.reschedule(CHECKPOINT_SCHEDULE, dict.fromkeys(due, now + self._checkpoint_every))
        return len(due)

    async def _reconcile_if_needed(self) -> None:
        period_ms = int(self._settings.playtime_checkpoint_seconds * RECONCILE_PERIODS * 1000)
        if not await self._redis.set(_RECONCILED, "1", nx=True, px=period_ms):
            return  # done recently, by this process or another
        now = server_now(self._clock)
        after: uuid.UUID | None = None
        count = 0
        while True:
            async with self._uow.read() as db:
                ids = await repository.active_session_ids(db, after, 5000)
            if not ids:
                break
            await self._live.schedule_missing(ids, now)
            count += len(ids)
            after = ids[-1]
        log.info("playtime schedules reconciled", extra={"active_sessions": count})


async def _drain_every(seconds: float, job: Callable[[], Awaitable[int]]) -> None:
    """Runs `job` again at once while it finds work, else `seconds` later."""
    while True:
        try:
            busy = await job() > 0
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed pass (DB or Redis down) is retried on the next one
            log.exception("playtime sweep failed", extra={"job": getattr(job, "__name__", "sweep")})
            busy = False
        if not busy:
            await asyncio.sleep(seconds)
