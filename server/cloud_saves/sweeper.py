"""The cloud-save sweeper: releases expired reservations and deletes queued S3 objects (SPEC §6).

Deleting goes through the `savegame_object_deletions` queue, written in the same transaction that stopped
referencing the object (a pruned version, a discarded upload, a released reservation). One pass deletes a
due object from S3 first and its queue row after: a crash before the S3 delete leaves the row (the next
pass deletes), a crash after it repeats an idempotent delete. A committed object is never queued, so it is
never deleted, and a queued one is never forgotten. Several processes may sweep: rows are claimed with
SKIP LOCKED.

`sweep(now)` is one pass, for tests with a controlled clock; `run()` repeats it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from server.cloud_saves.repository import SaveRepository
from server.core.deps import Deps
from server.core.s3 import ObjectStore

log = logging.getLogger(__name__)
BATCH = 200


@dataclass(frozen=True, slots=True)
class SweepReport:
    released: int  # expired reservations released
    deleted: int  # objects deleted from S3


class SaveSweeper:
    def __init__(self, deps: Deps, *, store: ObjectStore | None = None):
        self._deps = deps
        self._store = store or deps.store

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # S3 or the database down: the next pass retries
                log.exception("cloud-save sweep failed")
            await asyncio.sleep(self._deps.settings.saves_sweep_seconds)

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        now = now or self._deps.clock()
        released = await self.release_expired(now)
        deleted = await self.delete_due(now)
        return SweepReport(released, deleted)

    async def release_expired(self, now: datetime) -> int:
        """Pending uploads past `reserved_until`: their quota is freed and their object (if one was ever
        uploaded) queued for deletion."""
        released = 0
        while True:
            async with self._deps.uow() as uow:
                repo = SaveRepository(uow)
                rows = await repo.expired_reservations(now, BATCH)
                for row in rows:
                    await repo.forget(row, delete_after=now)
                await uow.commit()
            released += len(rows)
            if len(rows) < BATCH:
                return released

    async def delete_due(self, now: datetime) -> int:
        deleted = 0
        while True:
            async with self._deps.uow() as uow:
                repo = SaveRepository(uow)
                due = await repo.due_deletions(now, BATCH)
                keys = [d.s3_object_key for d in due]
                for key in keys:  # the queue rows stay locked meanwhile: no other sweeper takes them
                    await self._store.delete(key)
                await repo.drop_deletions(keys)
                await uow.commit()
            deleted += len(keys)
            if len(keys) < BATCH:
                return deleted
