"""A private world for outbox tests: a scratch database (with a `changes` table), a Kafka broker and a Redis
of the test's own (so they can be stopped), relays in this process or in processes of their own, and what
a use case writes (a change, its event, its notification)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.core.events.kafka import KafkaPublisher
from server.core.events.relay import OutboxRelay, RelayOptions
from server.core.redis import RedisClient, create_redis
from server.core.uow import UnitOfWorkFactory, notification_stream
from tests.support.processes import ROOT, PrivateBroker, PrivateRedis, create_scratch_database, drop_database

TOPIC = "com.platform.library.events.v1"
EVENT_TYPE = "com.platform.library.test.changed.v1"
# Short timings, so a fault is noticed and recovered from within a second or two.
FAST = RelayOptions(
    poll_seconds=0.2,
    batch_size=100,
    max_attempts=3,
    retry_backoff_seconds=0.05,
    rebalance_seconds=0.5,
    lease_seconds=2.5,  # above the send timeout (Settings refuses less)
    send_timeout_seconds=2.0,
)


@dataclass
class OutboxWorld:
    database_url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: PrivateBroker
    redis_server: PrivateRedis
    redis: RedisClient
    relays: list[OutboxRelay] = field(default_factory=list)

    def uow(self) -> UnitOfWorkFactory:
        """Units of work that wake this process's relays after each commit."""
        return UnitOfWorkFactory(self.sessions, "/library-service/test", self._wake)

    def _wake(self) -> None:
        for relay in self.relays:
            relay.wake()

    def new_relay(self, options: RelayOptions = FAST) -> OutboxRelay:
        delivery_timeout_ms = int(options.send_timeout_seconds * 1000)
        return OutboxRelay(
            self.database_url,
            self.redis,
            lambda: KafkaPublisher(self.broker.bootstrap, delivery_timeout_ms=delivery_timeout_ms),
            options,
        )

    @contextlib.asynccontextmanager
    async def relay(self, options: RelayOptions = FAST) -> AsyncIterator[OutboxRelay]:
        """A relay running in this process for the block."""
        relay = self.new_relay(options)
        self.relays.append(relay)
        task = asyncio.create_task(relay.run())
        try:
            yield relay
        finally:
            self.relays.remove(relay)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await relay.aclose()

    def relay_env(self, **overrides: str) -> dict[str, str]:
        """The environment of a relay process relaying this world (FAST timings)."""
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_server.url,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "OUTBOX_POLL_SECONDS": str(FAST.poll_seconds),
            "OUTBOX_BATCH_SIZE": str(FAST.batch_size),
            "OUTBOX_REBALANCE_SECONDS": str(FAST.rebalance_seconds),
            "OUTBOX_LEASE_SECONDS": str(FAST.lease_seconds),
            "OUTBOX_SEND_TIMEOUT_SECONDS": str(FAST.send_timeout_seconds),
            **overrides,
        }

    async def stream(self, user_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
        """The user's notification stream as (type, payload) pairs, oldest first."""
        entries = await self.redis.xrange(notification_stream(user_id))
        return [(fields[b"type"].decode(), json.loads(fields[b"payload"])) for _, fields in entries]


@contextlib.asynccontextmanager
async def outbox_world(settings: Settings) -> AsyncIterator[OutboxWorld]:
    database_url = create_scratch_database(settings.database_url)
    engine = create_engine(database_url, pool_size=8)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE changes (id uuid PRIMARY KEY, note text NOT NULL)"))
    broker, redis_server = PrivateBroker(), PrivateRedis()
    await asyncio.gather(broker.start(), redis_server.start())
    redis = create_redis(redis_server.url)
    try:
        yield OutboxWorld(database_url, engine, create_sessionmaker(engine), broker, redis_server, redis)
    finally:
        await redis.aclose()
        await asyncio.gather(broker.stop(), redis_server.stop())
        await engine.dispose()
        drop_database(database_url)


async def change(
    uow: UnitOfWorkFactory, user_id: uuid.UUID, note: str, *, event_type: str = EVENT_TYPE, **data: Any
) -> dict[str, Any]:
    """A use case's commit: a row of `changes`, its CloudEvent and its notification; returns the event."""
    async with uow() as unit:
        await unit.db.execute("INSERT INTO changes (id, note) VALUES (%s, %s)", (uuid.uuid4(), note))
        event = unit.add_event(event_type, user_id, {"userId": str(user_id), "note": note, **data})
        unit.notify(user_id, "testChanged", {"note": note, **data})
        await unit.commit()
    return event


class RelayProcesses:
    """Relay processes (tests/support/relay_worker.py) over one world; stopped on exit."""

    def __init__(self, env: dict[str, str]):
        self._env = env
        self.procs: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        log = open(ROOT / ".local" / "test-relay-worker.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.relay_worker"],
            cwd=ROOT,
            env=self._env,
            stdout=log,
            stderr=log,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def __enter__(self) -> RelayProcesses:
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def lease_owners(world: OutboxWorld, channel: str) -> dict[int, str]:
    """Partition -> owner of the channel's live leases in the world's database (events/leases.py)."""
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT partition, owner FROM outbox_leases"
                " WHERE channel = :channel AND owner IS NOT NULL AND expires_at > now()"
            ),
            {"channel": channel},
        )
        return {row[0]: row[1] for row in rows}


def owner_pid(owner: str) -> int:
    """The process id in a lease owner's name (host:pid:tag)."""
    return int(owner.split(":")[-2])


def dead_letters_script(world: OutboxWorld, *args: str) -> Any:
    """Runs `scripts/dead-letters ARGS --json`-style commands on the world; their JSON output."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dead-letters"), *args],
        env=world.relay_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
