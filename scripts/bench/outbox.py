"""Bench case: the outbox relay (SPEC §7, §9), against a baseline measured in the same run.

drain   BENCH_OUTBOX_ROWS pending rows (4000: half CloudEvents, half notifications, over 200 users) relayed
        by one OutboxRelay (both channels, as a server process runs it), vs a bare send of the same
        messages with the same clients and batch size (KafkaPublisher.publish + one Redis pipeline of XADDs
        per batch, no database). Ratio relay rows/s / bare rows/s per round (reported, no goal): what the
        outbox's reads, marks and partition bookkeeping cost on top of the sends themselves.
lag     commit → published for single rows written one at a time through the unit of work (which wakes
        the relay): median and p95 of published_at - created_at (BENCH_OUTBOX_SINGLES, 50).

On a scratch database migrated to head (dropped afterwards), the stack's Kafka (topic bench.outbox.v1) and
Redis (streams of throwaway users, deleted afterwards). BENCH_OUTBOX_ROUNDS rounds (3), the two measured
back to back in alternating order.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid

import psycopg
from psycopg.types.json import Jsonb

from server.core.config import Settings, libpq_url
from server.core.db import create_engine, create_sessionmaker
from server.core.events.cloudevents import make_cloud_event
from server.core.events.kafka import KafkaMessage, KafkaPublisher
from server.core.events.relay import OutboxRelay, RelayOptions
from server.core.redis import create_redis
from server.core.uow import UnitOfWorkFactory, notification_stream
from tests.support.processes import create_scratch_database, drop_database  # the tests' scratch databases

TOPIC = "bench.outbox.v1"
NOTIFICATION = {"type": "benchNotified", "payload": {}}
USERS = [uuid.uuid5(uuid.NAMESPACE_URL, f"https://library.platform/bench/outbox/{i}") for i in range(200)]


def _rows(count: int) -> list[tuple]:
    rows = []
    for i in range(count // 2):
        user = USERS[i % len(USERS)]
        event = make_cloud_event(
            event_type="com.platform.library.bench.v1", source="/bench", subject=str(user), data={"i": i}
        )
        rows.append((uuid.uuid4(), "kafka", TOPIC, str(user), Jsonb(event)))
        rows.append((uuid.uuid4(), "notification", notification_stream(user), str(user), Jsonb(NOTIFICATION)))
    return rows


class _Case:
    def __init__(self, database_url: str, settings: Settings, rows: int, batch: int):
        self.database_url, self.settings, self.rows, self.batch = database_url, settings, rows, batch
        self.redis = create_redis(settings.redis_url)
        self.publisher = KafkaPublisher(settings.kafka_bootstrap_servers)

    async def drain(self) -> float:
        """Rows per second of one relay emptying a backlog of `rows`."""
        with psycopg.connect(libpq_url(self.database_url)) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO outbox (id, channel, topic, key, payload) VALUES (%s,%s,%s,%s,%s)",
                _rows(self.rows),
            )
        relay = OutboxRelay.from_settings(self._settings(), self.redis)
        started = time.perf_counter()
        task = asyncio.create_task(relay.run())
        pending = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        with psycopg.connect(libpq_url(self.database_url), autocommit=True) as conn:
            while conn.execute(pending).fetchone()[0]:  # noqa: ASYNC110 (polls the database, not an event)
                await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return self.rows / elapsed

    async def bare(self) -> float:
        """Rows per second of the same sends without the outbox."""
        rows = _rows(self.rows)
        started = time.perf_counter()
        for start in range(0, len(rows), self.batch):
            batch = rows[start : start + self.batch]
            kafka = [
                KafkaMessage(r[2], r[3].encode(), json.dumps(r[4].obj).encode())
                for r in batch
                if r[1] == "kafka"
            ]
            await self.publisher.publish(kafka)
            async with self.redis.pipeline(transaction=False) as pipe:
                for r in batch:
                    if r[1] != "kafka":
                        pipe.xadd(r[2], {"type": "b", "payload": "{}"}, maxlen=1000, approximate=True)
                await pipe.execute()
        return self.rows / (time.perf_counter() - started)

    async def lag(self, singles: int) -> list[float]:
        """published_at - created_at of rows committed one at a time through the unit of work."""
        engine = create_engine(self.database_url, pool_size=2)
        relay = OutboxRelay.from_settings(self._settings(), self.redis)
        uow = UnitOfWorkFactory(create_sessionmaker(engine), "/bench", relay.wake)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.5)  # the relay owns its partitions
        ids = []
        for i in range(singles):
            async with uow() as unit:
                ids.append(
                    unit.add_event("com.platform.library.bench.v1", USERS[i % 200], {"i": i}, topic=TOPIC)[
                        "id"
                    ]
                )
                await unit.commit()
            await asyncio.sleep(0.02)
        with psycopg.connect(libpq_url(self.database_url), autocommit=True) as conn:
            sql = (
                "SELECT extract(epoch FROM published_at - created_at) FROM outbox WHERE id = ANY(%s::uuid[])"
            )
            while True:
                lags = [row[0] for row in conn.execute(sql, (ids,)).fetchall()]
                if all(lag is not None for lag in lags):
                    break
                await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()
        return sorted(float(lag) for lag in lags)

    def _settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            redis_url=self.settings.redis_url,
            kafka_bootstrap_servers=self.settings.kafka_bootstrap_servers,
            outbox_batch_size=self.batch,
        )

    async def close(self) -> None:
        self.publisher.close()
        await self.redis.delete(*(notification_stream(user) for user in USERS))
        await self.redis.aclose()


async def _measure(database_url: str, settings: Settings, rounds: int, rows: int, singles: int) -> dict:
    case = _Case(database_url, settings, rows, RelayOptions().batch_size)
    try:
        relay, bare, ratios = [], [], []
        for round_no in range(rounds):
            order = ("relay", "bare") if round_no % 2 == 0 else ("bare", "relay")
            got = {name: await (case.drain() if name == "relay" else case.bare()) for name in order}
            relay.append(got["relay"])
            bare.append(got["bare"])
            ratios.append(got["relay"] / got["bare"])
        lags = await case.lag(singles)
    finally:
        await case.close()
    return {
        "rows": rows,
        "relay_rows_per_s": max(relay),
        "bare_rows_per_s": max(bare),
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
        "lag_median_ms": 1000 * statistics.median(lags),
        "lag_p95_ms": 1000 * lags[int(0.95 * (len(lags) - 1))],
    }


def run(bench) -> dict:
    """Runs the case; prints its lines; returns the results for latest.json."""
    rounds = int(os.environ.get("BENCH_OUTBOX_ROUNDS", "3"))
    rows = int(os.environ.get("BENCH_OUTBOX_ROWS", "4000"))
    singles = int(os.environ.get("BENCH_OUTBOX_SINGLES", "50"))
    settings = Settings.from_env()
    scratch = create_scratch_database(bench.cfg.database_url or settings.database_url)
    try:
        result = asyncio.run(_measure(scratch, settings, rounds, rows, singles))
    finally:
        drop_database(scratch)
    print(
        f"bench: outbox drain {result['relay_rows_per_s']:.0f} rows/s vs bare sends"
        f" {result['bare_rows_per_s']:.0f} rows/s: ratio {result['ratio_median']:.2f} (median of {rounds});"
        f" commit→published lag median {result['lag_median_ms']:.1f} ms, p95 {result['lag_p95_ms']:.1f} ms",
        flush=True,
    )
    return result
