"""Playtime workers at scale, in-process on the real stack with a controlled clock.

- 100,000 active sessions (seeded in bulk: one INSERT … SELECT, pipelined Redis writes) in a scratch
  database with a Redis of its own: two sweepers (as two server processes would) checkpoint all of them
  within one checkpoint period, and reap the silent ones once due while the others go back to the
  schedule at their true deadline.
  (`make test-scale`; SCALE_SESSIONS overrides the count.)
- A checkpoint and a statistics call read a bounded number of stored intervals, however long the
  product's history (the transaction's own table statistics count them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from server.core.db import create_engine, create_pool, create_sessionmaker
from server.core.deps import Deps
from server.core.redis import create_redis, redis_from_settings
from server.core.s3 import ObjectStore
from server.core.uow import UnitOfWorkFactory
from server.playtime import crediting, rules
from server.playtime.live import CHECKPOINT_SCHEDULE, REAP_SCHEDULE
from server.playtime.sweeper import SessionSweeper
from server.playtime.use_cases import Playtime
from tests.support.processes import PrivateRedis, create_scratch_database, drop_database

SESSIONS = int(os.environ.get("SCALE_SESSIONS", "100000"))
SILENT = SESSIONS // 10  # of them stop heartbeating
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime):
        self.now = at

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
async def scale_stack(settings):
    redis_server = PrivateRedis()
    await redis_server.start()
    database_url = await asyncio.to_thread(create_scratch_database, settings.database_url)
    engine = create_engine(database_url, pool_size=4)
    pool = create_pool(database_url, size=4)
    await pool.open()
    redis = create_redis(redis_server.url)
    try:
        yield database_url, engine, pool, redis
    finally:
        await redis.aclose()
        await pool.close()
        await engine.dispose()
        await asyncio.to_thread(drop_database, database_url)
        await redis_server.stop()


def deps_of(settings, engine, pool, redis, clock) -> Deps:
    uow = UnitOfWorkFactory(create_sessionmaker(engine), "/test", lambda: None, pool)
    return Deps(settings, uow, redis, ObjectStore(settings), clock)


async def _seed(deps: Deps) -> None:
    """SESSIONS sessions started at T0, each in Redis with a heartbeat at T0 + 59 s, due for their first
    checkpoint at T0 + 300 s and for the reaper at T0 + 180 s (what LiveSessions.open writes)."""
    async with deps.uow() as uow:
        await uow.db.execute(
            "INSERT INTO playtime_sessions (id, user_id, product_id, device_id, source, status, started_at, "
            "last_heartbeat_at) SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'pc', "
            "'online', 'active', %s, %s FROM generate_series(1, %s)",
            (T0, T0, SESSIONS),
        )
        rows = await uow.db.all("SELECT id, user_id, product_id FROM playtime_sessions")
        await uow.commit()
    start_ms = int(T0.timestamp() * 1000)
    for first in range(0, len(rows), 10_000):
        async with deps.redis.pipeline(transaction=False) as pipe:
            for session_id, user_id, product_id in rows[first : first + 10_000]:
                pipe.hset(
                    f"playtime:session:{{{session_id}}}",
                    mapping={
                        "user": str(user_id),
                        "product": str(product_id),
                        "device": "pc",
                        "seg_start": start_ms,
                        "last": start_ms + 59_000,
                    },
                )
            pipe.zadd(REAP_SCHEDULE, {str(r[0]): start_ms + 180_000 for r in rows[first : first + 10_000]})
            pipe.zadd(
                CHECKPOINT_SCHEDULE, {str(r[0]): start_ms + 300_000 for r in rows[first : first + 10_000]}
            )
            await pipe.execute()


async def _drain(sweepers: list[SessionSweeper], job: str) -> None:
    async def one(sweeper):
        while await getattr(sweeper, job)():
            pass

    await asyncio.gather(*(one(s) for s in sweepers))


@pytest.mark.scale  # minutes on a busy 2-core machine: `make test-scale`, run by .ci/run after `make test`
async def test_100k_active_sessions_are_checkpointed_within_the_period_and_the_silent_reaped_on_time(
    settings, scale_stack
):
    _, engine, pool, redis = scale_stack
    clock = Clock(T0 + timedelta(seconds=300))
    settings = dataclasses.replace(
        settings,
        playtime_heartbeat_interval_seconds=60,
        playtime_checkpoint_seconds=300.0,
        playtime_reaper_seconds=15.0,
    )
    deps = deps_of(settings, engine, pool, redis, clock)
    await redis.set("playtime:schedules-reconciled", "1")  # the schedules are complete
    await _seed(deps)
    sweepers = [SessionSweeper(deps), SessionSweeper(deps)]

    started = time.monotonic()
    await _drain(sweepers, "checkpoint_due")
    took = time.monotonic() - started
    print(f"checkpointed {SESSIONS} sessions in {took:.1f} s")
    assert took < settings.playtime_checkpoint_seconds  # so every session's next one is also on time
    async with deps.uow.read() as db:
        assert await db.one(
            "SELECT count(*), min(credited_seconds), max(credited_seconds), count(checkpointed_at) "
            "FROM playtime_sessions"
        ) == (SESSIONS, 59, 59, SESSIONS)
        assert await db.value("SELECT sum(total_us) FROM playtime_totals") == SESSIONS * 59_000_000
    next_due = await redis.zrange(CHECKPOINT_SCHEDULE, 0, 0, withscores=True)
    assert next_due[0][1] > (T0 + timedelta(seconds=300)).timestamp() * 1000  # due again, later

    # All but SILENT heartbeat at T0 + 200 s; at T0 + 241 s the others have been silent for > 180 s.
    heard = await redis.zrange(REAP_SCHEDULE, SILENT, -1)
    async with redis.pipeline(transaction=False) as pipe:
        for member in heard:
            pipe.hset(f"playtime:session:{{{member.decode()}}}", "last", int(T0.timestamp() * 1000) + 200_000)
        await pipe.execute()
    clock.now = T0 + timedelta(seconds=241)
    started = time.monotonic()
    await _drain(sweepers, "reap_due")
    print(f"reaped {SILENT} and rescheduled {SESSIONS - SILENT} in {time.monotonic() - started:.1f} s")
    async with deps.uow.read() as db:
        assert await db.value("SELECT count(*) FROM playtime_sessions WHERE status = 'reaped'") == SILENT
        assert await db.value("SELECT count(*) FROM playtime_sessions WHERE ended_at IS NULL") == (
            SESSIONS - SILENT
        )
    assert await redis.zcard(REAP_SCHEDULE) == SESSIONS - SILENT
    # the rest are due at their true deadline (T0 + 200 s + 180 s), not before
    [(_, earliest)] = await redis.zrange(REAP_SCHEDULE, 0, 0, withscores=True)
    assert earliest == (T0 + timedelta(seconds=380)).timestamp() * 1000


async def _intervals_read(db) -> int:
    """Rows of playtime_intervals this transaction has read so far."""
    return await db.value(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
        "WHERE relname = 'playtime_intervals'"
    )


async def test_a_checkpoint_and_stats_read_a_bounded_number_of_intervals_whatever_the_history(
    settings, sessions, owner
):
    user_id, product_id = owner
    engine = create_engine(settings.database_url, pool_size=2)
    redis = redis_from_settings(settings, timeout=5.0)
    now = datetime.now(UTC).replace(microsecond=0)
    deps = deps_of(settings, engine, None, redis, lambda: now)
    playtime = Playtime(deps)
    try:
        # A year of history: 3,000 credited sessions of an hour each, every three hours.
        async with deps.uow() as uow:
            await uow.db.execute(
                "INSERT INTO playtime_sessions (id, user_id, product_id, device_id, source, status, "
                "started_at, last_heartbeat_at, ended_at) SELECT gen_random_uuid(), %s, %s, 'pc', 'offline', "
                "'ended', "
                "%s - make_interval(hours => 3 * n), %s - make_interval(hours => 3 * n - 1), "
                "%s - make_interval(hours => 3 * n - 1) FROM generate_series(1, 3000) AS n",
                (user_id, product_id, now, now, now),
            )
            await uow.db.execute(
                "INSERT INTO playtime_intervals (session_id, user_id, product_id, device_id, started_at, "
                "ended_at) SELECT id, user_id, product_id, device_id, started_at, ended_at "
                "FROM playtime_sessions WHERE user_id = %s",
                (user_id,),
            )
            history_us = 3000 * 3600 * 1_000_000  # the totals credited those hours as they came
            await uow.db.execute(
                "INSERT INTO playtime_totals VALUES (%s, %s, %s, %s)",
                (user_id, product_id, history_us, now - timedelta(hours=2)),
            )
            await uow.db.execute(
                "INSERT INTO playtime_device_totals VALUES (%s, %s, 'pc', %s)",
                (user_id, product_id, history_us),
            )
            await uow.commit()
        started = await playtime.start(user_id, product_id, "pc", None)
        async with deps.uow() as uow:
            before = await _intervals_read(uow.db)
            row = SessionRef(started.session_id, user_id, product_id, "pc")
            credited = await crediting.credit(uow.db, row, [rules.Interval(now - timedelta(minutes=5), now)])
            assert await _intervals_read(uow.db) - before < 20
            assert credited.total_seconds == 3000 * 3600 + 300
            before = await _intervals_read(uow.db)
            [stats] = await playtime._product_stats(uow.db, user_id, [product_id], now, last_two_weeks=False)
            assert await _intervals_read(uow.db) - before < 200  # the last two weeks: 112 sessions
            assert stats.stats.total_seconds == 3000 * 3600 + 300
            assert stats.stats.last_two_weeks_seconds == 112 * 3600 + 300
    finally:
        await redis.aclose()
        await engine.dispose()


@dataclasses.dataclass
class SessionRef:
    """What crediting needs of a session row."""

    id: uuid.UUID
    user_id: uuid.UUID
    product_id: uuid.UUID
    device_id: str
