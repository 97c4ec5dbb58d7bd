"""Background work on active sessions: the reaper and the checkpointer (SPEC §6).

Reaper: a session silent for more than 3x the heartbeat interval, or a reclaimed family-shared one whose
grace period is over, is closed, credited up to its last heartbeat (at most the grace deadline); a
session Redis no longer knows (Redis lost its data) is closed with what was checkpointed, once its last
checkpointed heartbeat is as old as that.
Checkpointer: every `playtime_checkpoint_seconds` the live segments of every active session are credited
to Postgres, so losing Redis costs at most one checkpoint interval.
Several server processes may run both: each session is handled under its row lock (SKIP LOCKED), and
crediting is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from server.core import metrics
from server.core.deps import Deps
from server.playtime import crediting, rules
from server.playtime.live import accrual_policy, live_sessions, server_now
from server.playtime.repository import PlaytimeRepository

log = logging.getLogger(__name__)


class SessionSweeper:
    def __init__(self, deps: Deps):
        self._uow = deps.uow
        self._clock = deps.clock
        self._settings = deps.settings
        self._policy = accrual_policy(deps)
        self._live = live_sessions(deps)

    async def run_reaper(self) -> None:
        await _every(self._settings.playtime_reaper_seconds, self.reap_silent)

    async def run_checkpointer(self) -> None:
        await _every(self._settings.playtime_checkpoint_seconds, self.checkpoint_active)

    async def reap_silent(self) -> None:
        now = server_now(self._clock)
        active = await self._active()
        metrics.ACTIVE_PLAY_SESSIONS.set(len(active))
        live = await self._live.get_many(active)
        for session_id, known_heartbeat in active.items():
            record = live.get(session_id)
            last = record.state.last_heartbeat if record is not None else known_heartbeat
            if rules.is_silent(last, now, self._policy) or (record is not None and record.reclaim_over(now)):
                await self._reap(session_id)

    async def _reap(self, session_id: uuid.UUID) -> None:
        async with self._uow() as uow:
            repo = PlaytimeRepository(uow)
            row = await repo.lock_active(session_id)
            if row is None:
                return
            live = await self._live.get(session_id)
            now = server_now(self._clock)
            last = live.state.last_heartbeat if live is not None else row.last_heartbeat_at
            over = live is not None and live.reclaim_over(now)  # family sharing: the grace period ended
            if not rules.is_silent(last, now, self._policy) and not over:
                return  # a heartbeat arrived meanwhile
            await crediting.close_session(uow, repo, row, live, now, self._policy, by_client=False)
            await uow.commit()
        await self._live.delete(session_id)

    async def checkpoint_active(self) -> None:
        active = await self._active()
        live = await self._live.get_many(active)
        for session_id, checkpointed_up_to in active.items():
            if session_id in live and live[session_id].state.last_heartbeat > checkpointed_up_to:
                await self._checkpoint(session_id)

    async def _active(self) -> dict[uuid.UUID, datetime]:
        """Every active session and the last heartbeat the database knows of."""
        async with self._uow() as uow:
            return {s.id: s.last_heartbeat_at for s in await PlaytimeRepository(uow).active_sessions()}

    async def _checkpoint(self, session_id: uuid.UUID) -> None:
        async with self._uow() as uow:
            repo = PlaytimeRepository(uow)
            row = await repo.lock_active(session_id)
            live = await self._live.get(session_id) if row is not None else None
            if row is None or live is None:
                return
            now = server_now(self._clock)
            credited = await crediting.credit(repo, row, live.state.segments(), now)
            row.credited_seconds = credited.session_seconds
            row.last_heartbeat_at = live.state.last_heartbeat
            row.checkpointed_at = now
            await uow.commit()


async def _every(seconds: float, job: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed pass (DB or Redis down) is retried on the next one
            log.exception("playtime sweep failed", extra={"job": job.__name__})
        await asyncio.sleep(seconds)
