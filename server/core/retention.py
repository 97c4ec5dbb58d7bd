"""Retention (SPEC §7): rows that only matter for a while are deleted once older than their period.

Each rule names a table, its time column and how long rows are kept; a pass deletes the expired rows of
every rule in small batches, each its own short transaction (`FOR UPDATE SKIP LOCKED`, so several server
processes prune side by side without waiting on each other or on the writers). `prune(now)` is one pass at a
given time (tests pass a controlled clock).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from server.core import metrics
from server.core.clock import Clock
from server.core.config import Settings
from server.core.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)


class PruningRule(Protocol):
    """What the job prunes: rows of `table` expired `keep_seconds` before now. `delete_sql()` takes the
    cutoff and a batch size (in that order) and deletes at most that many expired rows, skipping locked
    ones."""

    @property
    def table(self) -> str: ...

    @property
    def keep_seconds(self) -> float: ...

    def delete_sql(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RetentionRule:
    table: str
    column: str  # a timestamptz column with an index; rows where it is NULL are kept
    keep_seconds: float

    def delete_sql(self) -> str:
        return (
            f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {self.table} WHERE {self.column} < %s LIMIT %s FOR UPDATE SKIP LOCKED))"
        )


def event_retention_rules(settings: Settings) -> list[RetentionRule]:
    """The core's rules: sent outbox rows, processed event ids, stored first responses of request ids."""
    return [
        RetentionRule("outbox", "published_at", settings.outbox_retention_seconds),
        RetentionRule("processed_events", "processed_at", settings.processed_events_retention_seconds),
        RetentionRule("request_replays", "created_at", settings.request_replays_retention_seconds),
    ]


class RetentionJob:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        rules: Sequence[PruningRule],
        clock: Clock,
        *,
        batch_size: int = 1000,
        interval_seconds: float = 60.0,
    ):
        self._uow = uow
        self._rules = rules
        self._clock = clock
        self._batch_size = batch_size
        self._interval_seconds = interval_seconds

    async def run(self) -> None:
        while True:
            try:
                await self.prune(self._clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("retention pass failed; will retry", exc_info=True)
            await asyncio.sleep(self._interval_seconds)

    async def prune(self, now: datetime) -> dict[str, int]:
        """Deletes every rule's rows older than its period at `now`; rows deleted per table."""
        deleted: dict[str, int] = {}
        for rule in self._rules:
            cutoff = now - timedelta(seconds=rule.keep_seconds)
            sql = rule.delete_sql()
            total = 0
            while True:
                async with self._uow() as uow:
                    count = await uow.db.execute(sql, (cutoff, self._batch_size))
                    await uow.commit()
                total += count
                if count < self._batch_size:
                    break
            metrics.RETENTION_PRUNED.labels(rule.table).inc(total)
            deleted[rule.table] = total
        return deleted
